"""Built-in rule sets: the agency defaults and the named regulatory presets.

Everything here is plain data in the same shape as the `[policy]` TOML table, so the
loader validates presets exactly like user configuration.

Agency defaults
---------------
Seed 001 (催收作业规程 第十三条) limits *the same number*: ``cap.number_hourly`` (2 an
hour) and ``cap.number_daily`` (4 a day) count every call to the number, whatever its
relation on each case that holds it. The third-party caps (3 a day, 2 an hour) apply
on top to relatives, colleagues and other third parties, and ``cap.case_daily`` keeps
one case from being called more than 10 times a day over all its numbers.

Presets
-------
A preset is what one regulation adds to the agency's rules. Selecting it (``preset =
"..."`` for a creditor, or at the top of ``[policy]``) APPENDS its caps to the current
list and narrows the calling window to the overlap of both; it never removes an agency
cap or widens the window. A creditor removes an agency cap only by naming it in
``drop_caps``, which `dialgate policy lint` reports. Time zone, blackout dates,
holidays and appointment rules are not touched by a preset.

``us-reg-f`` — US Regulation F (12 CFR 1006.14(b)), the call-frequency safe harbour:
  * ``cap.regf_case_7d``: at most 7 call attempts per case within 7 consecutive
    calendar days (callee-local dates, today included; all relations, so every call of
    the case counts — stricter than the per-person reading of the rule);
  * ``cap.regf_quiet_after_conversation``: no call within the 7 calendar days that
    begin with the day of a telephone conversation ("the date of the telephone
    conversation is the first day") — a connected-count cap, limit 1 per 7 calendar
    days on scope case. It applies to and counts the debtor and the guarantor (the
    consumers of Reg F); a conversation with a relative or colleague does not quiet
    the case.
  * window 08:00–21:00 callee-local (FDCPA §805(a)(1): before 8 a.m. and after 9 p.m.
    are presumed inconvenient).

``cn-cba-2026`` — the 2026 China Banking Association collection guideline:
  * window 08:00–22:00 callee-local ("no calls 22:00–08:00");
  * ``cap.cba_unanswered_daily``: at most 6 unanswered attempts per contact method
    (per number, whatever its relation) per callee-local calendar day. "Unanswered"
    is counted as attempts minus connected calls on that number that day (clamped at
    zero): the gate records every attempt as an ``attempt`` event and, when the call
    is answered, also a ``connected`` event stamped with the attempt's start time.
"""

from __future__ import annotations

from typing import Any

from .model import RELATIONS

ALL_RELATIONS = list(RELATIONS)

DEFAULT_TIMEZONE = "Asia/Shanghai"
DEFAULT_REGION = "CN"
DEFAULT_WINDOW = {"start": "08:00", "end": "21:00"}
DEFAULT_APPOINTMENT = {"tolerance": "15m", "max_attempts": 2}

DEFAULT_CAPS: list[dict[str, Any]] = [
    {
        "id": "cap.number_hourly",
        "scope": "number",
        "relations": list(ALL_RELATIONS),
        "count": "attempts",
        "limit": 2,
        "window": "1h",
    },
    {
        "id": "cap.number_daily",
        "scope": "number",
        "relations": list(ALL_RELATIONS),
        "count": "attempts",
        "limit": 4,
        "window": "calendar_day",
    },
    {
        "id": "cap.third_party_hourly",
        "scope": "number",
        "relations": ["family", "work", "third_party"],
        "count": "attempts",
        "limit": 2,
        "window": "1h",
    },
    {
        "id": "cap.third_party_daily",
        "scope": "number",
        "relations": ["family", "work", "third_party"],
        "count": "attempts",
        "limit": 3,
        "window": "calendar_day",
    },
    {
        "id": "cap.case_daily",
        "scope": "case",
        "relations": list(ALL_RELATIONS),
        "count": "attempts",
        "limit": 10,
        "window": "calendar_day",
    },
]

PRESETS: dict[str, dict[str, Any]] = {
    "us-reg-f": {
        "description": "US Regulation F: 7 attempts per case per 7 days; 7 days of quiet after a conversation",
        "description_zh": "美国 Regulation F：每案件 7 天内最多 7 次拨打；通话接通后 7 天内不再拨打",
        "window": {"start": "08:00", "end": "21:00"},
        "caps": [
            {
                "id": "cap.regf_case_7d",
                "scope": "case",
                "relations": list(ALL_RELATIONS),
                "count": "attempts",
                "limit": 7,
                "window": "7 calendar_days",
                # Regulation F leaves calls made with the consumer's prior consent out of both.
                "appointment_waives": True,
            },
            {
                "id": "cap.regf_quiet_after_conversation",
                "scope": "case",
                "relations": ["self", "guarantor"],
                "count": "connected",
                "limit": 1,
                "window": "7 calendar_days",
                "appointment_waives": True,
            },
        ],
    },
    "cn-cba-2026": {
        "description": "China Banking Association 2026: no calls 22:00-08:00; at most 6 unanswered attempts per number per day",
        "description_zh": "中国银行业协会 2026 指引：22:00 至次日 08:00 不得拨打；同一联系方式每日未接通拨打不超过 6 次",
        "window": {"start": "08:00", "end": "22:00"},
        "caps": [
            {
                "id": "cap.cba_unanswered_daily",
                "scope": "number",
                "relations": list(ALL_RELATIONS),
                "count": "unanswered",
                "limit": 6,
                "window": "calendar_day",
            },
        ],
    },
}


def known_cap(cap_id: str) -> dict[str, Any] | None:
    """A built-in cap definition by id (defaults first, then presets), or None."""
    for cap in DEFAULT_CAPS:
        if cap["id"] == cap_id:
            return dict(cap)
    for preset in PRESETS.values():
        for cap in preset["caps"]:
            if cap["id"] == cap_id:
                return dict(cap)
    return None
