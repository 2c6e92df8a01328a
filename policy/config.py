"""The `[policy]` configuration: validation, presets, per-creditor overrides, versions.

`load_policy(table)` takes the parsed `[policy]` TOML mapping (``{}`` means all
defaults) and returns a `PolicyBook`; `book.for_creditor(id)` is the effective
`Policy` of one creditor. Every problem is refused with a `PolicyConfigError` that
carries the key path (``policy.creditors.bank-b.caps[0].limit``) and the reason.

Layering, first to last:
  built-in defaults → top-level ``preset`` → top-level keys → creditor ``preset`` →
  the creditor's own keys.
A preset adds to the agency's rules, never removes: its caps are appended and its
window can only narrow the current one (see `policy.presets`). Top-level
``[[policy.caps]]`` replaces the default cap list; a creditor's ``caps`` patches it by
id (a new id adds a cap); an agency cap leaves a creditor's policy only when named in
``drop_caps`` (or patched with ``enabled = false``), which `policy lint` reports.
Blackout dates add up (top-level dates apply to every creditor); everything else
replaces.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Mapping
from zoneinfo import ZoneInfo

import phonenumbers

from . import holidays
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

__all__ = [
    "PolicyConfigError",
    "Window",
    "Cap",
    "AppointmentRules",
    "Policy",
    "PolicyBook",
    "load_policy",
    "parse_duration",
    "CALENDAR_DAY",
]

CALENDAR_DAY = "calendar_day"
_CALENDAR_DAYS = re.compile(r"^(\d+)\s*calendar_days?$")
SCOPES = ("number", "case")
COUNTS = ("attempts", "connected", "unanswered")
MAX_CAP_WINDOW = timedelta(days=400)

_TOP_KEYS = (
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
    "holiday_file",
    "creditors",
)
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
_WINDOW_KEYS = ("start", "end")
_APPOINTMENT_KEYS = ("tolerance", "max_attempts")
_CAP_KEYS = ("id", "scope", "relations", "count", "limit", "window", "enabled")
_CAP_REQUIRED = ("id", "scope", "limit", "window")
_CAP_ID = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_TIME = re.compile(r"^(\d{2}):(\d{2})(?::(\d{2}))?$")


class PolicyConfigError(ValueError):
    """A `[policy]` setting that cannot be used; `path` names the key, `reason` why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Window:
    """The daily calling window ``[start, end)`` in callee-local time, as seconds of day."""

    start_s: int
    end_s: int  # exclusive; 86400 means midnight at the end of the day

    @property
    def start(self) -> str:
        return _fmt_seconds(self.start_s)

    @property
    def end(self) -> str:
        return _fmt_seconds(self.end_s)

    def contains(self, seconds_of_day: float) -> bool:
        return self.start_s <= seconds_of_day < self.end_s


@dataclass(frozen=True, slots=True)
class BlackoutPeriod:
    """A callee-local stretch with no calls, ``[start, end)``.

    Either a one-off range of local date-times (``start_at``/``end_at``) or a daily
    range of times of day (``start_s``/``end_s``, seconds of day).
    """

    start_at: datetime | None = None
    end_at: datetime | None = None
    start_s: int | None = None
    end_s: int | None = None

    @property
    def daily(self) -> bool:
        return self.start_at is None

    def label(self) -> str:
        if self.start_at is None or self.end_at is None:
            return f"{_fmt_seconds(self.start_s or 0)}–{_fmt_seconds(self.end_s or 0)} daily"
        return f"{self.start_at.isoformat(timespec='minutes')}–{self.end_at.isoformat(timespec='minutes')}"

    def to_dict(self) -> dict[str, str]:
        if self.start_at is None or self.end_at is None:
            return {"start": _fmt_seconds(self.start_s or 0), "end": _fmt_seconds(self.end_s or 0)}
        return {"start": self.start_at.isoformat(), "end": self.end_at.isoformat()}


@dataclass(frozen=True, slots=True)
class AppointmentRules:
    tolerance: timedelta
    max_attempts: int


@dataclass(frozen=True, slots=True)
class Cap:
    """One frequency cap: at most `limit` events of kind `count` within `window`."""

    id: str
    scope: str  # "number" | "case"
    relations: frozenset[str]
    count: str  # "attempts" | "connected" | "unanswered"
    limit: int
    window: str  # "1h", "7d", ... or "calendar_day" / "N calendar_days"
    window_delta: timedelta | None  # None for calendar-day windows
    days: int = 1  # calendar-day windows: how many callee-local dates, today included

    @property
    def calendar_day(self) -> bool:
        return self.window_delta is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "scope": self.scope,
            "relations": [r for r in RELATIONS if r in self.relations],
            "count": self.count,
            "limit": self.limit,
            "window": self.window,
        }


@dataclass(frozen=True)
class Policy:
    """The effective policy of one creditor (or the defaults). Immutable."""

    creditor: str | None
    timezone: str
    default_region: str
    window: Window
    appointment: AppointmentRules
    caps: tuple[Cap, ...]
    blackout_dates: frozenset[date]
    cn_holidays: bool
    preset: str | None
    version: str  # SHA-256 hex of the normalised effective policy
    lookback: timedelta  # how far back the caller must load history
    zone: ZoneInfo = field(compare=False, repr=False)
    calendar: holidays.HolidayCalendar = field(compare=False, repr=False)
    blackout_periods: tuple[BlackoutPeriod, ...] = ()
    allow_unregistered_lines: bool = False
    dropped_caps: tuple[str, ...] = ()  # agency caps this creditor removed (lint reports them)
    # Derived data the engine computes once per policy (texts, cap selections, cached
    # checks). Not part of the policy's identity.
    derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The effective policy as plain data (what `lint` prints)."""
        d = _canonical(self)
        d["creditor"] = self.creditor
        d["preset"] = self.preset
        d["version"] = self.version
        d["lookback"] = _fmt_duration(self.lookback)
        d["window"] = {"start": self.window.start, "end": self.window.end}
        d["appointment"] = {
            "tolerance": _fmt_duration(self.appointment.tolerance),
            "max_attempts": self.appointment.max_attempts,
        }
        return d


@dataclass(frozen=True)
class PolicyBook:
    """Every creditor's effective policy, built once from the configuration."""

    default: Policy
    creditors: Mapping[str, Policy]
    version: str  # SHA-256 hex of the whole normalised book
    calendar: holidays.HolidayCalendar = field(compare=False, repr=False)

    def for_creditor(self, creditor: str) -> Policy:
        """The creditor's effective policy; an unknown creditor gets the defaults."""
        return self.creditors.get(creditor, self.default)

    def versions(self) -> dict[str, str]:
        """The version each creditor's decisions carry (`default`: creditors without overrides);
        `version` is the hash of them all, so it equals none of them."""
        return {"default": self.default.version, **{c: p.version for c, p in sorted(self.creditors.items())}}

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "default": self.default.to_dict(),
            "creditors": {k: v.to_dict() for k, v in sorted(self.creditors.items())},
        }


# --------------------------------------------------------------------------- parsing


def parse_duration(value: Any, path: str, *, allow_zero: bool = False) -> timedelta:
    """``"15m"``, ``"1h"``, ``"7d"``, ``"1h30m"``, ``"90s"`` → timedelta."""
    if not isinstance(value, str):
        raise PolicyConfigError(path, f"expected a duration string like \"15m\", \"1h\" or \"7d\", got {value!r}")
    m = _DURATION.match(value.strip())
    if not value.strip() or m is None:
        raise PolicyConfigError(path, f"bad duration {value!r}: use a number with d, h, m or s, like \"15m\", \"1h\", \"7d\"")
    d, h, mi, s = (int(g) if g else 0 for g in m.groups())
    delta = timedelta(days=d, hours=h, minutes=mi, seconds=s)
    if delta <= timedelta(0) and not allow_zero:
        raise PolicyConfigError(path, f"duration {value!r} must be longer than zero")
    return delta


def _parse_time(value: Any, path: str, *, allow_24: bool) -> int:
    if isinstance(value, time):
        if value.tzinfo is not None:
            raise PolicyConfigError(path, "a time of day must not carry a UTC offset (it is callee-local)")
        return value.hour * 3600 + value.minute * 60 + value.second
    if not isinstance(value, str):
        raise PolicyConfigError(path, f"expected a time of day like \"08:00\", got {value!r}")
    m = _TIME.match(value.strip())
    if m is None:
        raise PolicyConfigError(path, f"bad time {value!r}: use HH:MM or HH:MM:SS, like \"08:00\"")
    hh, mm, ss = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    if allow_24 and (hh, mm, ss) == (24, 0, 0):
        return 86400
    if hh > 23 or mm > 59 or ss > 59:
        raise PolicyConfigError(path, f"bad time {value!r}: hours 00-23, minutes and seconds 00-59")
    return hh * 3600 + mm * 60 + ss


def _parse_date(value: Any, path: str) -> date:
    if isinstance(value, date) and not hasattr(value, "hour"):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise PolicyConfigError(path, f"bad date {value!r}: use YYYY-MM-DD")


def _parse_local_datetime(value: Any, path: str) -> datetime | None:
    """A callee-local date-time (no offset), or None when `value` is a time of day."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            raise PolicyConfigError(path, "a blackout period is callee-local: leave out the UTC offset")
        return value
    if isinstance(value, str) and ("T" in value or " " in value.strip()):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise PolicyConfigError(path, f"bad date-time {value!r}: use YYYY-MM-DDTHH:MM") from None
        if parsed.tzinfo is not None:
            raise PolicyConfigError(path, "a blackout period is callee-local: leave out the UTC offset")
        return parsed
    return None


def _parse_period(value: Any, path: str) -> BlackoutPeriod:
    table = _expect_table(value, path)
    _check_keys(table, _WINDOW_KEYS, path)
    for key in _WINDOW_KEYS:
        if key not in table:
            raise PolicyConfigError(_join(path, key), "missing; a blackout period needs start and end")
    start_at = _parse_local_datetime(table["start"], _join(path, "start"))
    end_at = _parse_local_datetime(table["end"], _join(path, "end"))
    if (start_at is None) != (end_at is None):
        raise PolicyConfigError(path, "start and end must both be date-times or both be times of day")
    if start_at is not None and end_at is not None:
        if start_at >= end_at:
            raise PolicyConfigError(path, f"start {start_at.isoformat()} must be before end {end_at.isoformat()}")
        return BlackoutPeriod(start_at=start_at, end_at=end_at)
    start_s = _parse_time(table["start"], _join(path, "start"), allow_24=False)
    end_s = _parse_time(table["end"], _join(path, "end"), allow_24=True)
    if start_s >= end_s:
        raise PolicyConfigError(path, f"start {_fmt_seconds(start_s)} must be before end {_fmt_seconds(end_s)}")
    return BlackoutPeriod(start_s=start_s, end_s=end_s)


def _expect_table(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PolicyConfigError(path, f"expected a table, got {type(value).__name__}")
    return value


def _check_keys(table: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
    for key in table:
        if key not in allowed:
            raise PolicyConfigError(_join(path, key), f"unknown key; allowed keys: {', '.join(allowed)}")


def _join(path: str, key: str) -> str:
    if re.match(r"^[A-Za-z0-9_-]+$", key):
        return f"{path}.{key}"
    return f"{path}.{json.dumps(key, ensure_ascii=False)}"


def _int(value: Any, path: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyConfigError(path, f"expected a whole number, got {value!r}")
    if value < minimum:
        raise PolicyConfigError(path, f"must be {minimum} or more, got {value}")
    return value


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyConfigError(path, f"expected true or false, got {value!r}")
    return value


# --------------------------------------------------------------------------- layering
# A "spec" is the plain-data form of a policy while layers are applied:
# {timezone, default_region, window{start,end}, appointment{tolerance,max_attempts},
#  caps[list of complete cap dicts], blackout_dates[set of date], cn_holidays, preset}


def _base_spec() -> dict[str, Any]:
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
    }


def _apply_preset(spec: dict[str, Any], name: Any, path: str) -> None:
    if not isinstance(name, str) or name not in PRESETS:
        raise PolicyConfigError(path, f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    preset = PRESETS[name]
    # Narrow only: the agency's own window still holds under any regulation.
    cur_start = _parse_time(spec["window"]["start"], _join(path, "window.start"), allow_24=False)
    cur_end = _parse_time(spec["window"]["end"], _join(path, "window.end"), allow_24=True)
    pre_start = _parse_time(preset["window"]["start"], path, allow_24=False)
    pre_end = _parse_time(preset["window"]["end"], path, allow_24=True)
    start, end = max(cur_start, pre_start), min(cur_end, pre_end)
    if start >= end:
        raise PolicyConfigError(
            path, f"preset {name!r} window {preset['window']['start']}–{preset['window']['end']} does not overlap "
            f"the window {_fmt_seconds(cur_start)}–{_fmt_seconds(cur_end)}"
        )
    spec["window"] = {"start": _fmt_seconds(start), "end": _fmt_seconds(end)}
    # A cap the list already has (the agency's own version of it) stays as it is.
    have = {c["id"] for c in spec["caps"]}
    spec["caps"] = spec["caps"] + [copy.deepcopy(c) for c in preset["caps"] if c["id"] not in have]
    spec["preset"] = name


def _apply_layer(spec: dict[str, Any], table: Mapping[str, Any], path: str, *, top: bool) -> None:
    _check_keys(table, _TOP_KEYS if top else _CREDITOR_KEYS, path)
    if top and isinstance(table.get("caps"), list):
        # The agency's own list first, so a preset chosen beside it adds to it.
        spec["caps"] = _replace_caps(table["caps"], _join(path, "caps"))
    if "preset" in table:
        _apply_preset(spec, table["preset"], _join(path, "preset"))
    if "timezone" in table:
        tz = table["timezone"]
        if not isinstance(tz, str) or load_zone(tz) is None:
            raise PolicyConfigError(_join(path, "timezone"), f"unknown IANA time zone {tz!r} (e.g. \"Asia/Shanghai\")")
        spec["timezone"] = tz
    if "default_region" in table:
        region = table["default_region"]
        if not isinstance(region, str) or region.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise PolicyConfigError(
                _join(path, "default_region"), f"unknown region {region!r}: use an ISO 3166 code like \"CN\""
            )
        spec["default_region"] = region.upper()
    if "window" in table:
        wpath = _join(path, "window")
        window = _expect_table(table["window"], wpath)
        _check_keys(window, _WINDOW_KEYS, wpath)
        for key in _WINDOW_KEYS:
            if key in window:
                _parse_time(window[key], _join(wpath, key), allow_24=key == "end")
                spec["window"][key] = window[key]
        start = _parse_time(spec["window"]["start"], _join(wpath, "start"), allow_24=False)
        end = _parse_time(spec["window"]["end"], _join(wpath, "end"), allow_24=True)
        if start >= end:
            raise PolicyConfigError(
                wpath,
                f"start {_fmt_seconds(start)} must be before end {_fmt_seconds(end)} "
                "(the window is one stretch of a callee-local day)",
            )
    if "appointment" in table:
        apath = _join(path, "appointment")
        appt = _expect_table(table["appointment"], apath)
        _check_keys(appt, _APPOINTMENT_KEYS, apath)
        if "tolerance" in appt:
            parse_duration(appt["tolerance"], _join(apath, "tolerance"), allow_zero=True)
            spec["appointment"]["tolerance"] = appt["tolerance"]
        if "max_attempts" in appt:
            spec["appointment"]["max_attempts"] = _int(appt["max_attempts"], _join(apath, "max_attempts"))
    if "blackout_dates" in table:
        bpath = _join(path, "blackout_dates")
        dates = table["blackout_dates"]
        if not isinstance(dates, list):
            raise PolicyConfigError(bpath, "expected a list of dates like [\"2026-11-26\"]")
        spec["blackout_dates"] |= {_parse_date(d, f"{bpath}[{i}]") for i, d in enumerate(dates)}
    if "blackout_periods" in table:
        ppath = _join(path, "blackout_periods")
        periods = table["blackout_periods"]
        if not isinstance(periods, list):
            raise PolicyConfigError(ppath, "expected a list of {start, end} tables")
        for i, period in enumerate(periods):
            parsed = _parse_period(period, f"{ppath}[{i}]")
            if parsed not in spec["blackout_periods"]:
                spec["blackout_periods"].append(parsed)
    if "cn_holidays" in table:
        spec["cn_holidays"] = _bool(table["cn_holidays"], _join(path, "cn_holidays"))
    if "allow_unregistered_lines" in table:
        spec["allow_unregistered_lines"] = _bool(
            table["allow_unregistered_lines"], _join(path, "allow_unregistered_lines")
        )
    if "holiday_file" in table and not isinstance(table["holiday_file"], str):
        # Read by the application (the core does no I/O); only its type is checked here.
        raise PolicyConfigError(_join(path, "holiday_file"), "expected a file path string")
    if "caps" in table:
        cpath = _join(path, "caps")
        caps = table["caps"]
        if not isinstance(caps, list):
            raise PolicyConfigError(cpath, "expected a list of cap tables ([[policy.caps]] or caps = [{...}])")
        if not top:  # (the top-level list replaced the defaults above, before the preset)
            before = {c["id"] for c in spec["caps"]}
            spec["caps"] = _patch_caps(spec["caps"], caps, cpath)
            after = {c["id"] for c in spec["caps"]}
            spec["dropped_caps"] += sorted(before - after)
    if "drop_caps" in table:
        dpath = _join(path, "drop_caps")
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


def _replace_caps(entries: list[Any], path: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        epath = f"{path}[{i}]"
        entry = _expect_table(entry, epath)
        _check_keys(entry, _CAP_KEYS, epath)
        cap_id = _cap_id(entry, epath)
        if cap_id in seen:
            raise PolicyConfigError(_join(epath, "id"), f"duplicate cap id {cap_id!r}")
        seen.add(cap_id)
        full = _complete_cap(entry, known_cap(cap_id), epath)
        if full is not None:
            result.append(full)
    return result


def _patch_caps(current: list[dict[str, Any]], entries: list[Any], path: str) -> list[dict[str, Any]]:
    result = [dict(c) for c in current]
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        epath = f"{path}[{i}]"
        entry = _expect_table(entry, epath)
        _check_keys(entry, _CAP_KEYS, epath)
        cap_id = _cap_id(entry, epath)
        if cap_id in seen:
            raise PolicyConfigError(_join(epath, "id"), f"duplicate cap id {cap_id!r}")
        seen.add(cap_id)
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
            _join(path, "id"), f"expected a cap id of lower-case letters, digits, '.', '_' or '-', got {cap_id!r}"
        )
    return cap_id


def _complete_cap(entry: Mapping[str, Any], base: dict[str, Any] | None, path: str) -> dict[str, Any] | None:
    """Merge `entry` over `base`, validate every field; None when ``enabled = false``."""
    if "enabled" in entry and not _bool(entry["enabled"], _join(path, "enabled")):
        return None
    merged: dict[str, Any] = dict(base or {})
    merged.update({k: v for k, v in entry.items() if k != "enabled"})
    merged.setdefault("relations", list(RELATIONS))
    merged.setdefault("count", "attempts")
    for key in _CAP_REQUIRED:
        if key not in merged:
            raise PolicyConfigError(_join(path, key), f"missing; a new cap needs {', '.join(_CAP_REQUIRED)}")
    if merged["scope"] not in SCOPES:
        raise PolicyConfigError(_join(path, "scope"), f"expected one of {', '.join(SCOPES)}, got {merged['scope']!r}")
    if merged["count"] not in COUNTS:
        raise PolicyConfigError(_join(path, "count"), f"expected one of {', '.join(COUNTS)}, got {merged['count']!r}")
    relations = merged["relations"]
    rpath = _join(path, "relations")
    if not isinstance(relations, list) or not relations:
        raise PolicyConfigError(rpath, f"expected a non-empty list of relations from {', '.join(RELATIONS)}")
    for j, rel in enumerate(relations):
        if rel not in RELATIONS:
            raise PolicyConfigError(f"{rpath}[{j}]", f"unknown relation {rel!r}; known: {', '.join(RELATIONS)}")
    merged["relations"] = [r for r in RELATIONS if r in relations]
    merged["limit"] = _int(merged["limit"], _join(path, "limit"))
    merged["window"] = _cap_window(merged["window"], _join(path, "window"))
    return merged


def _calendar_days(window: str) -> int | None:
    """N for a calendar-day window ("calendar_day" is 1), None for a rolling one."""
    if window == CALENDAR_DAY:
        return 1
    m = _CALENDAR_DAYS.match(window)
    return int(m.group(1)) if m else None


def _cap_window(window: Any, path: str) -> str:
    """The normalised window: "calendar_day", "N calendar_days" or a duration string."""
    if not isinstance(window, str):
        raise PolicyConfigError(path, f"expected a duration string like \"15m\", \"1h\" or \"7d\", got {window!r}")
    days = _calendar_days(window.strip())
    if days is not None:
        if not 1 <= days <= 400:
            raise PolicyConfigError(path, f"window {window!r}: 1 to 400 calendar days")
        return CALENDAR_DAY if days == 1 else f"{days} calendar_days"
    delta = parse_duration(window, path)
    if delta > MAX_CAP_WINDOW:
        raise PolicyConfigError(path, f"window {window!r} is longer than 400 days")
    return window.strip()


# --------------------------------------------------------------------------- building


def _build(spec: dict[str, Any], creditor: str | None, calendar: holidays.HolidayCalendar) -> Policy:
    window = Window(
        _parse_time(spec["window"]["start"], "policy.window.start", allow_24=False),
        _parse_time(spec["window"]["end"], "policy.window.end", allow_24=True),
    )
    appointment = AppointmentRules(
        parse_duration(spec["appointment"]["tolerance"], "policy.appointment.tolerance", allow_zero=True),
        int(spec["appointment"]["max_attempts"]),
    )
    caps = tuple(
        Cap(
            id=c["id"],
            scope=c["scope"],
            relations=frozenset(c["relations"]),
            count=c["count"],
            limit=c["limit"],
            window=c["window"],
            window_delta=None if _calendar_days(c["window"]) else parse_duration(c["window"], "cap.window"),
            days=_calendar_days(c["window"]) or 0,
        )
        for c in spec["caps"]
    )
    # A callee-local calendar day can begin up to ~26 h before `now` in absolute time
    # (UTC+14 vs. the caller's view plus a DST shift): two days covers it in any zone.
    lookback = max(
        [timedelta(days=2), 2 * appointment.tolerance]
        + [c.window_delta for c in caps if c.window_delta is not None]
        + [timedelta(days=c.days + 1) for c in caps if c.window_delta is None]
    )
    draft = Policy(
        creditor=creditor,
        timezone=spec["timezone"],
        default_region=spec["default_region"],
        window=window,
        appointment=appointment,
        caps=caps,
        blackout_dates=frozenset(spec["blackout_dates"]),
        cn_holidays=bool(spec["cn_holidays"]),
        preset=spec["preset"],
        version="",
        lookback=lookback,
        # The same object load_zone validated: ZoneInfo keeps one instance per name.
        zone=ZoneInfo(spec["timezone"]),
        blackout_periods=tuple(spec["blackout_periods"]),
        calendar=calendar,
        allow_unregistered_lines=bool(spec["allow_unregistered_lines"]),
        dropped_caps=tuple(dict.fromkeys(spec["dropped_caps"])),
    )
    version = _sha256(_canonical(draft))
    return Policy(
        creditor=creditor,
        timezone=draft.timezone,
        default_region=draft.default_region,
        window=window,
        appointment=appointment,
        caps=caps,
        blackout_dates=draft.blackout_dates,
        cn_holidays=draft.cn_holidays,
        preset=draft.preset,
        version=version,
        lookback=lookback,
        zone=draft.zone,
        blackout_periods=draft.blackout_periods,
        calendar=calendar,
        allow_unregistered_lines=draft.allow_unregistered_lines,
        dropped_caps=draft.dropped_caps,
    )


def _canonical(p: Policy) -> dict[str, Any]:
    """The normalised form hashed into `version`: equal behaviour, equal hash."""
    d: dict[str, Any] = {
        "timezone": p.timezone,
        "default_region": p.default_region,
        "window": {"start_s": p.window.start_s, "end_s": p.window.end_s},
        "appointment": {
            "tolerance_s": int(p.appointment.tolerance.total_seconds()),
            "max_attempts": p.appointment.max_attempts,
        },
        "caps": [
            {
                **c.to_dict(),
                "window": c.window if c.window_delta is None else int(c.window_delta.total_seconds()),
            }
            for c in p.caps
        ],
        "blackout_dates": sorted(d.isoformat() for d in p.blackout_dates),
        "cn_holidays": p.cn_holidays,
    }
    if p.blackout_periods:
        d["blackout_periods"] = [b.to_dict() for b in p.blackout_periods]
    if p.allow_unregistered_lines:
        d["allow_unregistered_lines"] = True
    if p.cn_holidays:
        # Decisions depend on the holiday data, so it is part of the version.
        d["cn_holiday_data"] = p.calendar.fingerprint()
    return d


def _sha256(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_policy(
    table: Mapping[str, Any] | None = None, calendar: holidays.HolidayCalendar | None = None
) -> PolicyBook:
    """Validate the parsed ``[policy]`` table and build every creditor's policy.

    ``{}`` (or None) gives the built-in defaults. `calendar` is the PRC holiday
    calendar (default: statutory days plus the built-in arrangements; the application
    adds an operator's ``holiday_file``). Raises `PolicyConfigError` naming the key
    path and the reason for the first problem found.
    """
    if table is None:
        table = {}
    if calendar is None:
        calendar = holidays.default_calendar()
    table = _expect_table(table, "policy")
    spec = _base_spec()
    _apply_layer(spec, table, "policy", top=True)
    default = _build(spec, None, calendar)
    creditors: dict[str, Policy] = {}
    if "creditors" in table:
        cpath = "policy.creditors"
        for cid, ctable in _expect_table(table["creditors"], cpath).items():
            path = _join(cpath, str(cid))
            if not isinstance(cid, str) or not cid.strip():
                raise PolicyConfigError(path, "creditor id must be a non-empty string")
            cspec = copy.deepcopy(spec)
            cspec["dropped_caps"] = []
            _apply_layer(cspec, _expect_table(ctable, path), path, top=False)
            creditors[cid] = _build(cspec, cid, calendar)
    book_version = _sha256(
        {"default": default.version, "creditors": {k: v.version for k, v in sorted(creditors.items())}}
    )
    return PolicyBook(default=default, creditors=creditors, version=book_version, calendar=calendar)


# --------------------------------------------------------------------------- formatting


def _fmt_seconds(s: int) -> str:
    if s % 60:
        return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}"


def _fmt_duration(delta: timedelta) -> str:
    total = int(delta.total_seconds())
    if total == 0:
        return "0m"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return "".join(parts)
