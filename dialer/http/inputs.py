"""Client input the API parses itself, bounded before it reaches the gate or the store.

A value outside these bounds is the caller's mistake and is answered 400 (query
parameters, headers, raw bodies) or 422 (fields of a JSON body) naming the field — never
an overflow deep in the store (`OverflowError` from a date in year 1 shifted by its
offset, a 40-digit cursor bound as a 64-bit integer) that would surface as a 500, or as
a 503 "store unavailable" that pages on-call for a typo.
"""

from __future__ import annotations

from datetime import date, datetime, time, timezone
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime

from dialer.errors import BadRequest

# Dates the service can meet: its decisions, calls, recordings and what-if checks.
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2100, 1, 1, tzinfo=timezone.utc)
INT64_MAX = 2**63 - 1


def _range_text() -> str:
    return f"{EARLIEST.date().isoformat()} – {LATEST.date().isoformat()}"


def within(value: datetime, field: str) -> datetime:
    """`value` when it lies in [EARLIEST, LATEST); a 400 naming `field` otherwise."""
    if not EARLIEST <= value < LATEST:
        raise BadRequest(f"{field}: 日期超出范围 / out of range, expected {_range_text()}",
                         details={"field": field})
    return value


def parse_when(value: str | None, field: str) -> datetime | None:
    """A query parameter: an ISO date (midnight UTC) or a date-time with its offset."""
    if value is None or value == "":
        return None
    try:
        if len(value) == 10:
            return within(datetime.combine(date.fromisoformat(value), time(0), tzinfo=timezone.utc), field)
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadRequest(f"{field}: 应为 ISO 8601 日期或时间 / expected an ISO date or date-time",
                         details={"field": field}) from exc
    if dt.tzinfo is None:
        raise BadRequest(f"{field}: 须带时区 / give a time zone offset (e.g. +08:00)", details={"field": field})
    return within(dt, field)


def _aware_within(value: datetime) -> datetime:
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"out of range, expected {_range_text()}")
    return value


def _day_within(value: date) -> date:
    if not EARLIEST.date() <= value < LATEST.date():
        raise ValueError(f"out of range, expected {_range_text()}")
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("不得含 NUL 字符 / contains a NUL character (\\u0000)")
    return value


# Body fields: pydantic answers 422 with the field's path.
When = Annotated[AwareDatetime, AfterValidator(_aware_within)]
Day = Annotated[date, AfterValidator(_day_within)]
# A text the store keeps: PostgreSQL refuses NUL in any text (a 400 naming nothing) where
# SQLite would store it, so both engines refuse it here, by name.
Text = Annotated[str, AfterValidator(_no_nul)]


def parse_cursor(value: str | None, field: str = "cursor") -> int | None:
    """A paging cursor this API returned: a decimal row id within 64 bits."""
    if not value:
        return None
    # ASCII only: isdigit() also takes "²" (which int() refuses) and other scripts' digits.
    if not (value.isascii() and value.isdigit()) or len(value) > 19 or int(value) > INT64_MAX:
        raise BadRequest(f"{field}: not a cursor this API returned", details={"field": field})
    return int(value)


def check_range_header(value: str | None) -> None:
    """Refuse a `Range` header whose numbers could not be byte offsets (more than 18
    digits) before anything converts them to integers."""
    if value is None:
        return
    run = 0
    for ch in value:
        run = run + 1 if ch.isdigit() else 0
        if run > 18:
            raise BadRequest("Range: 字节位置过大 / byte positions of more than 18 digits",
                             details={"field": "Range"})
    if len(value) > 200:
        raise BadRequest("Range: too long; ask for one range", details={"field": "Range"})
