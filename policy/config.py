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
from datetime import timedelta
from typing import Any, Mapping
from zoneinfo import ZoneInfo

from . import holidays
from .book import AppointmentRules, BlackoutPeriod, Cap, Policy, PolicyBook, Window, canonical
from .config_parse import PolicyConfigError, expect_table, join, parse_duration, parse_time
from .layering import CALENDAR_DAY, apply_layer, base_spec, calendar_days
from .model import CREDITOR_ID


__all__ = [
    "PolicyConfigError",
    "BlackoutPeriod",
    "Window",
    "Cap",
    "AppointmentRules",
    "Policy",
    "PolicyBook",
    "load_policy",
    "parse_duration",
    "CALENDAR_DAY",
]

# --------------------------------------------------------------------------- building


def _build(spec: dict[str, Any], creditor: str | None, calendar: holidays.HolidayCalendar) -> Policy:
    window = Window(
        parse_time(spec["window"]["start"], "policy.window.start", allow_24=False),
        parse_time(spec["window"]["end"], "policy.window.end", allow_24=True),
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
            window_delta=None if calendar_days(c["window"]) else parse_duration(c["window"], "cap.window"),
            days=calendar_days(c["window"]) or 0,
            appointment_waives=bool(c.get("appointment_waives", c["scope"] == "number")),
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
    version = _sha256(canonical(draft))
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
    table = expect_table(table, "policy")
    spec = base_spec()
    apply_layer(spec, table, "policy", top=True)
    default = _build(spec, None, calendar)
    creditors: dict[str, Policy] = {}
    if "creditors" in table:
        cpath = "policy.creditors"
        for cid, ctable in expect_table(table["creditors"], cpath).items():
            path = join(cpath, str(cid))
            if not isinstance(cid, str) or not CREDITOR_ID.match(cid):
                raise PolicyConfigError(
                    path,
                    f"creditor id {cid!r} is not one cases can carry: lower-case letters, digits, '.', '_' or '-', "
                    "like bank-b (its cases would get the defaults)",
                )
            cspec = copy.deepcopy(spec)
            cspec["dropped_caps"] = []
            apply_layer(cspec, expect_table(ctable, path), path, top=False)
            creditors[cid] = _build(cspec, cid, calendar)
    book_version = _sha256(
        {"default": default.version, "creditors": {k: v.version for k, v in sorted(creditors.items())}}
    )
    return PolicyBook(default=default, creditors=creditors, version=book_version, calendar=calendar)
