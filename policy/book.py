"""The policy's values: windows, blackout periods, appointment rules, caps, one
creditor's `Policy` and the `PolicyBook` of all of them, with their canonical form."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Mapping
from zoneinfo import ZoneInfo

from . import holidays
from .model import RELATIONS


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Window:
    """The daily calling window ``[start, end)`` in callee-local time, as seconds of day."""

    start_s: int
    end_s: int  # exclusive; 86400 means midnight at the end of the day

    @property
    def start(self) -> str:
        return fmt_seconds(self.start_s)

    @property
    def end(self) -> str:
        return fmt_seconds(self.end_s)

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
            return f"{fmt_seconds(self.start_s or 0)}–{fmt_seconds(self.end_s or 0)} daily"
        return f"{self.start_at.isoformat(timespec='minutes')}–{self.end_at.isoformat(timespec='minutes')}"

    def to_dict(self) -> dict[str, str]:
        if self.start_at is None or self.end_at is None:
            return {"start": fmt_seconds(self.start_s or 0), "end": fmt_seconds(self.end_s or 0)}
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
    # Whether an agreed callback time (与客户约定) exempts a call from this cap. The
    # rules excuse the per-number limits "without an agreement"; a per-case cap guards
    # against harassment of the person, which no agreement on one number lifts.
    appointment_waives: bool = True

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
            "appointment_waives": self.appointment_waives,
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
        d = canonical(self)
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


def canonical(p: Policy) -> dict[str, Any]:
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


# --------------------------------------------------------------------------- formatting


def fmt_seconds(s: int) -> str:
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
