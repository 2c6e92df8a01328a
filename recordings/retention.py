"""Retention: how long each creditor's recordings are kept.

``retain_until`` = the call's date + the creditor's retention (default 730 days), the
call's date being the attempt's when the call is a known attempt (the uploader's
`started_at` must then agree with it, see `check_started_at`). Never earlier than the
day of ingest + the same retention: a call time given by the uploader cannot make a
recording due before it has been kept that long. The rules require at least two years,
so anything shorter is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Mapping

from recordings.errors import ConfigError

DEFAULT_RETENTION_DAYS = 730
MIN_RETENTION_DAYS = 730
_DURATION = re.compile(r"^\s*(\d{1,6})\s*d\s*$")


def parse_retention(value: str | int, *, where: str = "retention") -> int:
    """``"1095d"`` → 1095. Only whole days: an ambiguous "2y" is refused."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: 应为天数如 \"730d\" / expected days like \"730d\", got {value!r}")
    if isinstance(value, int):
        days = value
    else:
        m = _DURATION.match(value)
        if not m:
            raise ConfigError(
                f"{where}: 应为天数如 \"730d\" / expected days like \"730d\", got {value!r}"
            )
        days = int(m.group(1))
    if days < MIN_RETENTION_DAYS:
        raise ConfigError(
            f"{where}: 录音至少保存两年 / recordings must be kept at least "
            f"{MIN_RETENTION_DAYS} days, got {days}"
        )
    return days


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    default_days: int = DEFAULT_RETENTION_DAYS
    per_creditor: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_config(cls, default: str | int = "730d", creditors: Mapping[str, str | int] | None = None) -> RetentionPolicy:
        return cls(
            default_days=parse_retention(default, where="recordings.retention"),
            per_creditor={
                c: parse_retention(v, where=f"recordings.creditors.{c}.retention")
                for c, v in (creditors or {}).items()
            },
        )

    def days_for(self, creditor: str | None) -> int:
        if creditor is None:
            return self.default_days
        return self.per_creditor.get(creditor, self.default_days)

    def retain_until(self, started_at: datetime, creditor: str | None, ingested_at: datetime | None = None) -> date:
        days = timedelta(days=self.days_for(creditor))
        until = started_at.date() + days
        return until if ingested_at is None else max(until, ingested_at.date() + days)


# How far a known attempt's recording may say it started from the attempt's own time:
# the PBX places the call within the authorisation's validity (minutes) and the two
# clocks may differ a little; anything further is a wrong or forged time.
CALL_START_TOLERANCE = timedelta(hours=1)


def started_at_problem(started_at: datetime, attempt_at: datetime | None) -> str | None:
    """Why `started_at` cannot be the start of the call the attempt placed, or None."""
    if attempt_at is None or abs(started_at - attempt_at) <= CALL_START_TOLERANCE:
        return None
    return (f"started_at: 与呼叫尝试时间 {attempt_at.isoformat()} 相差超过 {CALL_START_TOLERANCE} / "
            f"more than {CALL_START_TOLERANCE} from the attempt's time {attempt_at.isoformat()}")


def is_due(retain_until: date, today: date) -> bool:
    """Kept through `retain_until`; due from the day after."""
    return retain_until < today
