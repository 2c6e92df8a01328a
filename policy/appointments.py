"""Agreed callback times (与客户约定): whether an appointment slot exempts this call
from the window and the caps, and the earliest instant a usable slot opens."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Sequence
from zoneinfo import ZoneInfo

from .blackouts import blackout_ends_in_every_zone
from .callee_time import UTC
from .caps import Caps
from .config import Cap, Policy
from .model import Appointment
from .wording import ALL_RELATIONS

__all__ = ["appointment", "appointment_opening"]

ONE_SECOND = timedelta(seconds=1)


def appointment(
    policy: Policy,
    appointments: Sequence[Appointment],
    capsx: Caps,
    now_u: datetime,
    zone: ZoneInfo,
    inputs: dict[str, Any],
) -> bool:
    """Record the nearest appointment in `inputs`; True when it exempts this call."""
    tol = policy.appointment.tolerance
    attempts = capsx.counter("number", frozenset(ALL_RELATIONS), "attempt")
    limit = policy.appointment.max_attempts
    # Prefer an appointment whose slot is open now and not used up; else report the
    # nearest one so the explanation says why it did not help.
    best, exempt = None, False
    for appt in sorted(appointments, key=lambda a: abs(_utc(a.at) - now_u)):
        at_u = _utc(appt.at)
        lo, hi = at_u - tol, at_u + tol
        if lo <= now_u <= hi and attempts.closed(lo, hi) < limit:
            best, exempt = appt, True
            break
    if best is None:
        best = min(appointments, key=lambda a: abs(_utc(a.at) - now_u))
    at = _utc(best.at)
    active = at - tol <= now_u <= at + tol
    used = attempts.closed(at - tol, at + tol)
    inputs["appointment"] = {
        "at": at.astimezone(zone).isoformat(),
        "tolerance": int(tol.total_seconds()),
        "active": active,
        "slot_attempts": used,
        "max_attempts": limit,
        "exempts": exempt,
        "used": False,
    }
    return exempt


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"appointment time {t!r} is not timezone-aware")
    return t.astimezone(UTC)


def appointment_opening(
    policy: Policy, appointments: Sequence[Appointment], capsx: Caps, now_u: datetime, zone: ZoneInfo,
    kept: Sequence[Cap] = (),
    wzones: tuple[ZoneInfo, ...] | None = None,
) -> datetime | None:
    """Earliest instant >= now inside a usable appointment slot on a non-blackout day at
    which the caps no appointment waives (`kept`) pass too."""
    if not appointments or policy.appointment.max_attempts <= 0:
        return None
    tol = policy.appointment.tolerance
    attempts = capsx.counter("number", frozenset(ALL_RELATIONS), "attempt")
    best: datetime | None = None
    for appt in appointments:
        at_u = _utc(appt.at)
        lo, hi = at_u - tol, at_u + tol
        if hi < now_u or attempts.closed(lo, hi) >= policy.appointment.max_attempts:
            continue
        t = max(lo, now_u)
        while t <= hi:
            end = blackout_ends_in_every_zone(policy, wzones or (zone,), t)
            if end is None:
                frees = [capsx.free_at(cap, t) for cap in kept]
                if any(f is None for f in frees):
                    t = hi + ONE_SECOND  # a kept cap never frees: this slot is of no use
                    continue
                end = max([t, *(f for f in frees if f is not None)])
                if end == t:
                    break
            t = end
        else:
            continue
        if best is None or t < best:
            best = t
    return best
