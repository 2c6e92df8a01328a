"""Layering a `[policy]` table onto a spec: built-in defaults, presets, top-level keys,
creditor keys; cap lists replaced, patched by id or dropped."""

from __future__ import annotations

import copy
import re
from datetime import timedelta
from typing import Any, Iterator, Mapping

import phonenumbers

from .book import fmt_seconds
from .config_parse import (
    WINDOW_KEYS,
    PolicyConfigError,
    check_keys,
    expect_table,
    join,
    parse_bool,
    parse_date,
    parse_duration,
    parse_int,
    parse_period,
    parse_time,
)
from .model import RELATIONS
from .numbers import load_zone
from .presets import (
    DEFAULT_APPOINTMENT,
    DEFAULT_CAPS,
    DEFAULT_REGION,
    DEFAULT_TIMEZONE,
    DEFAULT_WINDOW,
    PRESETS,
    known_cap,
)


CALENDAR_DAY = "calendar_day"
_CALENDAR_DAYS = re.compile(r"^(\d+)\s*calendar_days?$")
SCOPES = ("number", "case")
COUNTS = ("attempts", "connected", "unanswered")
MAX_CAP_WINDOW = timedelta(days=400)
# An agreed callback time (与客户约定) lifts the calling window only around that time.
MAX_TOLERANCE = timedelta(hours=2)

_CREDITOR_KEYS = (
    "timezone",
    "default_region",
    "window",
    "appointment",
    "caps",
    "blackout_dates",
    "blackout_periods",
    "cn_holidays",
    "preset",
    "drop_caps",
    "allow_unregistered_lines",
)
# The top level is a creditor's keys plus what only the whole book has.
_TOP_KEYS = (*_CREDITOR_KEYS, "holiday_file", "creditors")
_APPOINTMENT_KEYS = ("tolerance", "max_attempts")
_CAP_KEYS = ("id", "scope", "relations", "count", "limit", "window", "appointment_waives", "enabled")
_CAP_REQUIRED = ("id", "scope", "limit", "window")
_CAP_ID = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")


# --------------------------------------------------------------------------- layering
# A "spec" is the plain-data form of a policy while layers are applied:
# {timezone, default_region, window{start,end}, appointment{tolerance,max_attempts},
#  caps[list of complete cap dicts], blackout_dates[set of date], cn_holidays, preset}


def base_spec() -> dict[str, Any]:
    return {
        "timezone": DEFAULT_TIMEZONE,
        "default_region": DEFAULT_REGION,
        "window": dict(DEFAULT_WINDOW),
        "appointment": dict(DEFAULT_APPOINTMENT),
        "caps": copy.deepcopy(DEFAULT_CAPS),
        "caps_origin": "default",
        "blackout_dates": set(),
        "blackout_periods": [],
        "cn_holidays": False,
        "preset": None,
        "allow_unregistered_lines": False,
        "dropped_caps": [],
        # (start_s, end_s, name) of every preset applied: a later window key stays inside them.
        "preset_windows": [],
    }


def _apply_preset(spec: dict[str, Any], name: Any, path: str) -> None:
    if not isinstance(name, str) or name not in PRESETS:
        raise PolicyConfigError(path, f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    preset = PRESETS[name]
    # Narrow only: the agency's own window still holds under any regulation.
    cur_start = parse_time(spec["window"]["start"], join(path, "window.start"), allow_24=False)
    cur_end = parse_time(spec["window"]["end"], join(path, "window.end"), allow_24=True)
    pre_start = parse_time(preset["window"]["start"], path, allow_24=False)
    pre_end = parse_time(preset["window"]["end"], path, allow_24=True)
    start, end = max(cur_start, pre_start), min(cur_end, pre_end)
    if start >= end:
        raise PolicyConfigError(
            path, f"preset {name!r} window {preset['window']['start']}–{preset['window']['end']} does not overlap "
            f"the window {fmt_seconds(cur_start)}–{fmt_seconds(cur_end)}"
        )
    spec["window"] = {"start": fmt_seconds(start), "end": fmt_seconds(end)}
    spec["preset_windows"].append((pre_start, pre_end, name))
    # A cap the list already has (the agency's own version of it) stays as it is.
    have = {c["id"] for c in spec["caps"]}
    spec["caps"] = spec["caps"] + [copy.deepcopy(c) for c in preset["caps"] if c["id"] not in have]
    spec["preset"] = name


def apply_layer(spec: dict[str, Any], table: Mapping[str, Any], path: str, *, top: bool) -> None:
    check_keys(table, _TOP_KEYS if top else _CREDITOR_KEYS, path)
    if top and isinstance(table.get("caps"), list):
        # The agency's own list first, so a preset chosen beside it adds to it.
        built_in = [c["id"] for c in spec["caps"]]
        spec["caps"] = _replace_caps(table["caps"], join(path, "caps"))
        # A built-in cap the list leaves out is dropped as surely as by drop_caps: recorded, so lint says so.
        kept = {c["id"] for c in spec["caps"]}
        spec["dropped_caps"] += [cap_id for cap_id in built_in if cap_id not in kept]
    if "preset" in table:
        _apply_preset(spec, table["preset"], join(path, "preset"))
    if "timezone" in table:
        tz = table["timezone"]
        if not isinstance(tz, str) or load_zone(tz) is None:
            raise PolicyConfigError(join(path, "timezone"), f"unknown IANA time zone {tz!r} (e.g. \"Asia/Shanghai\")")
        spec["timezone"] = tz
    if "default_region" in table:
        region = table["default_region"]
        if not isinstance(region, str) or region.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise PolicyConfigError(
                join(path, "default_region"), f"unknown region {region!r}: use an ISO 3166 code like \"CN\""
            )
        spec["default_region"] = region.upper()
    if "window" in table:
        wpath = join(path, "window")
        window = expect_table(table["window"], wpath)
        check_keys(window, WINDOW_KEYS, wpath)
        for key in WINDOW_KEYS:
            if key in window:
                parse_time(window[key], join(wpath, key), allow_24=key == "end")
                spec["window"][key] = window[key]
        start = parse_time(spec["window"]["start"], join(wpath, "start"), allow_24=False)
        end = parse_time(spec["window"]["end"], join(wpath, "end"), allow_24=True)
        if start >= end:
            raise PolicyConfigError(
                wpath,
                f"start {fmt_seconds(start)} must be before end {fmt_seconds(end)} "
                "(the window is one stretch of a callee-local day)",
            )
        # A preset's window holds under every key applied after it, as under the keys before.
        for pre_start, pre_end, name in spec["preset_windows"]:
            if max(start, pre_start) >= min(end, pre_end):
                raise PolicyConfigError(
                    wpath,
                    f"window {fmt_seconds(start)}–{fmt_seconds(end)} does not overlap preset {name!r} window "
                    f"{fmt_seconds(pre_start)}–{fmt_seconds(pre_end)}",
                )
            start, end = max(start, pre_start), min(end, pre_end)
        spec["window"] = {"start": fmt_seconds(start), "end": fmt_seconds(end)}
    if "appointment" in table:
        apath = join(path, "appointment")
        appt = expect_table(table["appointment"], apath)
        check_keys(appt, _APPOINTMENT_KEYS, apath)
        if "tolerance" in appt:
            tolerance = parse_duration(appt["tolerance"], join(apath, "tolerance"), allow_zero=True)
            if tolerance > MAX_TOLERANCE:
                raise PolicyConfigError(
                    join(apath, "tolerance"),
                    f"{appt['tolerance']!r} is too long: at most 2h either side of the agreed time (a wider slot "
                    "would lift the calling window for calls nobody agreed to)",
                )
            spec["appointment"]["tolerance"] = appt["tolerance"]
        if "max_attempts" in appt:
            spec["appointment"]["max_attempts"] = parse_int(appt["max_attempts"], join(apath, "max_attempts"))
    if "blackout_dates" in table:
        bpath = join(path, "blackout_dates")
        dates = table["blackout_dates"]
        if not isinstance(dates, list):
            raise PolicyConfigError(bpath, "expected a list of dates like [\"2026-11-26\"]")
        spec["blackout_dates"] |= {parse_date(d, f"{bpath}[{i}]") for i, d in enumerate(dates)}
    if "blackout_periods" in table:
        ppath = join(path, "blackout_periods")
        periods = table["blackout_periods"]
        if not isinstance(periods, list):
            raise PolicyConfigError(ppath, "expected a list of {start, end} tables")
        for i, period in enumerate(periods):
            parsed = parse_period(period, f"{ppath}[{i}]")
            if parsed not in spec["blackout_periods"]:
                spec["blackout_periods"].append(parsed)
    if "cn_holidays" in table:
        spec["cn_holidays"] = parse_bool(table["cn_holidays"], join(path, "cn_holidays"))
    if "allow_unregistered_lines" in table:
        spec["allow_unregistered_lines"] = parse_bool(
            table["allow_unregistered_lines"], join(path, "allow_unregistered_lines")
        )
    if "holiday_file" in table and not isinstance(table["holiday_file"], str):
        # Read by the application (the core does no I/O); only its type is checked here.
        raise PolicyConfigError(join(path, "holiday_file"), "expected a file path string")
    if "caps" in table:
        cpath = join(path, "caps")
        caps = table["caps"]
        if not isinstance(caps, list):
            raise PolicyConfigError(cpath, "expected a list of cap tables ([[policy.caps]] or caps = [{...}])")
        if not top:  # (the top-level list replaced the defaults above, before the preset)
            before = {c["id"] for c in spec["caps"]}
            spec["caps"] = _patch_caps(spec["caps"], caps, cpath)
            after = {c["id"] for c in spec["caps"]}
            spec["dropped_caps"] += sorted(before - after)
    if "drop_caps" in table:
        dpath = join(path, "drop_caps")
        names = table["drop_caps"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise PolicyConfigError(dpath, "expected a list of cap ids, like [\"cap.number_hourly\"]")
        present = [c["id"] for c in spec["caps"]]
        for i, cap_id in enumerate(names):
            if cap_id not in present:
                raise PolicyConfigError(
                    f"{dpath}[{i}]", f"no cap {cap_id!r} to drop; caps here: {', '.join(present) or 'none'}"
                )
        spec["caps"] = [c for c in spec["caps"] if c["id"] not in names]
        spec["dropped_caps"] += list(names)


def _cap_entries(entries: list[Any], path: str) -> Iterator[tuple[str, Mapping[str, Any], str]]:
    """Each cap entry of a list as (its path, its table, its id), every id once."""
    seen: set[str] = set()
    for i, raw in enumerate(entries):
        epath = f"{path}[{i}]"
        entry = expect_table(raw, epath)
        check_keys(entry, _CAP_KEYS, epath)
        cap_id = _cap_id(entry, epath)
        if cap_id in seen:
            raise PolicyConfigError(join(epath, "id"), f"duplicate cap id {cap_id!r}")
        seen.add(cap_id)
        yield epath, entry, cap_id


def _replace_caps(entries: list[Any], path: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for epath, entry, cap_id in _cap_entries(entries, path):
        full = _complete_cap(entry, known_cap(cap_id), epath)
        if full is not None:
            result.append(full)
    return result


def _patch_caps(current: list[dict[str, Any]], entries: list[Any], path: str) -> list[dict[str, Any]]:
    result = [dict(c) for c in current]
    for epath, entry, cap_id in _cap_entries(entries, path):
        index = next((j for j, c in enumerate(result) if c["id"] == cap_id), None)
        base = result[index] if index is not None else known_cap(cap_id)
        full = _complete_cap(entry, base, epath)
        if index is None:
            if full is not None:
                result.append(full)
        elif full is None:
            del result[index]
        else:
            result[index] = full
    return result


def _cap_id(entry: Mapping[str, Any], path: str) -> str:
    cap_id = entry.get("id")
    if not isinstance(cap_id, str) or not _CAP_ID.match(cap_id):
        raise PolicyConfigError(
            join(path, "id"), f"expected a cap id of lower-case letters, digits, '.', '_' or '-', got {cap_id!r}"
        )
    return cap_id


def _complete_cap(entry: Mapping[str, Any], base: dict[str, Any] | None, path: str) -> dict[str, Any] | None:
    """Merge `entry` over `base`, validate every field; None when ``enabled = false``."""
    if "enabled" in entry and not parse_bool(entry["enabled"], join(path, "enabled")):
        return None
    merged: dict[str, Any] = dict(base or {})
    merged.update({k: v for k, v in entry.items() if k != "enabled"})
    merged.setdefault("relations", list(RELATIONS))
    merged.setdefault("count", "attempts")
    if "appointment_waives" in merged:
        merged["appointment_waives"] = parse_bool(merged["appointment_waives"], join(path, "appointment_waives"))
    for key in _CAP_REQUIRED:
        if key not in merged:
            raise PolicyConfigError(join(path, key), f"missing; a new cap needs {', '.join(_CAP_REQUIRED)}")
    if merged["scope"] not in SCOPES:
        raise PolicyConfigError(join(path, "scope"), f"expected one of {', '.join(SCOPES)}, got {merged['scope']!r}")
    if merged["count"] not in COUNTS:
        raise PolicyConfigError(join(path, "count"), f"expected one of {', '.join(COUNTS)}, got {merged['count']!r}")
    relations = merged["relations"]
    rpath = join(path, "relations")
    if not isinstance(relations, list) or not relations:
        raise PolicyConfigError(rpath, f"expected a non-empty list of relations from {', '.join(RELATIONS)}")
    for j, rel in enumerate(relations):
        if rel not in RELATIONS:
            raise PolicyConfigError(f"{rpath}[{j}]", f"unknown relation {rel!r}; known: {', '.join(RELATIONS)}")
    merged["relations"] = [r for r in RELATIONS if r in relations]
    merged["limit"] = parse_int(merged["limit"], join(path, "limit"))
    merged["window"] = _cap_window(merged["window"], join(path, "window"))
    return merged


def calendar_days(window: str) -> int | None:
    """N for a calendar-day window ("calendar_day" is 1), None for a rolling one."""
    if window == CALENDAR_DAY:
        return 1
    m = _CALENDAR_DAYS.match(window)
    return int(m.group(1)) if m else None


def _cap_window(window: Any, path: str) -> str:
    """The normalised window: "calendar_day", "N calendar_days" or a duration string."""
    if not isinstance(window, str):
        raise PolicyConfigError(path, f"expected a duration string like \"15m\", \"1h\" or \"7d\", got {window!r}")
    days = calendar_days(window.strip())
    if days is not None:
        if not 1 <= days <= 400:
            raise PolicyConfigError(path, f"window {window!r}: 1 to 400 calendar days")
        return CALENDAR_DAY if days == 1 else f"{days} calendar_days"
    delta = parse_duration(window, path)
    if delta > MAX_CAP_WINDOW:
        raise PolicyConfigError(path, f"window {window!r} is longer than 400 days")
    return window.strip()
