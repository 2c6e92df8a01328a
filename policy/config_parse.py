"""Reading `[policy]` values: durations, times of day, dates, blackout periods, tables
and their keys, each refused with a `PolicyConfigError` naming the key path."""

from __future__ import annotations

import json
import re
from datetime import date, datetime, time, timedelta
from typing import Any, Mapping

from .book import BlackoutPeriod, fmt_seconds


WINDOW_KEYS = ("start", "end")
MAX_DURATION = timedelta(days=400)
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_TIME = re.compile(r"^(\d{2}):(\d{2})(?::(\d{2}))?$")


class PolicyConfigError(ValueError):
    """A `[policy]` setting that cannot be used; `path` names the key, `reason` why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


# --------------------------------------------------------------------------- parsing


def parse_duration(value: Any, path: str, *, allow_zero: bool = False) -> timedelta:
    """``"15m"``, ``"1h"``, ``"7d"``, ``"1h30m"``, ``"90s"`` → timedelta."""
    if not isinstance(value, str):
        raise PolicyConfigError(path, f"expected a duration string like \"15m\", \"1h\" or \"7d\", got {value!r}")
    m = _DURATION.match(value.strip())
    if not value.strip() or m is None:
        raise PolicyConfigError(path, f"bad duration {value!r}: use a number with d, h, m or s, like \"15m\", \"1h\", \"7d\"")
    d, h, mi, s = (int(g) if g else 0 for g in m.groups())
    try:
        delta = timedelta(days=d, hours=h, minutes=mi, seconds=s)
    except OverflowError:
        delta = MAX_DURATION + timedelta(days=1)  # refused below, with the key
    if delta > MAX_DURATION:
        raise PolicyConfigError(path, f"duration {value!r} is longer than 400 days")
    if delta <= timedelta(0) and not allow_zero:
        raise PolicyConfigError(path, f"duration {value!r} must be longer than zero")
    return delta


def parse_time(value: Any, path: str, *, allow_24: bool) -> int:
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


def parse_date(value: Any, path: str) -> date:
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


def parse_period(value: Any, path: str) -> BlackoutPeriod:
    table = expect_table(value, path)
    check_keys(table, WINDOW_KEYS, path)
    for key in WINDOW_KEYS:
        if key not in table:
            raise PolicyConfigError(join(path, key), "missing; a blackout period needs start and end")
    start_at = _parse_local_datetime(table["start"], join(path, "start"))
    end_at = _parse_local_datetime(table["end"], join(path, "end"))
    if (start_at is None) != (end_at is None):
        raise PolicyConfigError(path, "start and end must both be date-times or both be times of day")
    if start_at is not None and end_at is not None:
        if start_at >= end_at:
            raise PolicyConfigError(path, f"start {start_at.isoformat()} must be before end {end_at.isoformat()}")
        return BlackoutPeriod(start_at=start_at, end_at=end_at)
    start_s = parse_time(table["start"], join(path, "start"), allow_24=False)
    end_s = parse_time(table["end"], join(path, "end"), allow_24=True)
    if start_s >= end_s:
        raise PolicyConfigError(path, f"start {fmt_seconds(start_s)} must be before end {fmt_seconds(end_s)}")
    return BlackoutPeriod(start_s=start_s, end_s=end_s)


def expect_table(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PolicyConfigError(path, f"expected a table, got {type(value).__name__}")
    return value


def check_keys(table: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
    for key in table:
        if key not in allowed:
            raise PolicyConfigError(join(path, key), f"unknown key; allowed keys: {', '.join(allowed)}")


def join(path: str, key: str) -> str:
    if re.match(r"^[A-Za-z0-9_-]+$", key):
        return f"{path}.{key}"
    return f"{path}.{json.dumps(key, ensure_ascii=False)}"


# Counts (cap limits, attempts in an appointment slot) size the history a dial reads.
MAX_COUNT = 100_000


def parse_int(value: Any, path: str, *, minimum: int = 0, maximum: int = MAX_COUNT) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyConfigError(path, f"expected a whole number, got {value!r}")
    if value < minimum:
        raise PolicyConfigError(path, f"must be {minimum} or more, got {value}")
    if value > maximum:
        raise PolicyConfigError(path, f"must be at most {maximum}, got {value}")
    return value


def parse_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyConfigError(path, f"expected true or false, got {value!r}")
    return value
