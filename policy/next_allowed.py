"""The `next_allowed_at` search: the earliest instant >= now at which the blackouts,
the calling window and every cap pass together.

Starting at `now`, each failing temporal rule proposes the earliest instant it alone
could pass; the latest proposal becomes the new candidate, and the loop repeats until
every temporal rule passes at the candidate (a fixpoint). An appointment slot that
opens earlier wins.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Sequence
from zoneinfo import ZoneInfo

from .appointments import appointment_opening
from .blackouts import blackout_ends_at
from .callee_time import ONE_DAY, at_local, seconds_of_day
from .caps import Caps
from .config import Policy
from .model import Appointment

__all__ = ["search_next"]

_SEARCH_HORIZON = timedelta(days=400)
_MAX_ITERATIONS = 2000


def search_next(
    policy: Policy,
    capsx: Caps,
    relation: str | None,
    appointments: Sequence[Appointment],
    now_u: datetime,
    zone: ZoneInfo,
    wzones: tuple[ZoneInfo, ...] | None = None,
) -> tuple[datetime | None, str]:
    """Earliest instant >= now at which blackout, window and every cap pass; blackouts
    and the window on the clock of every zone of `wzones` (default: `zone`)."""
    wzones = wzones or (zone,)
    caps = [c for c in policy.caps if relation is not None and relation in c.relations]
    window = policy.window
    horizon = now_u + _SEARCH_HORIZON
    t = now_u
    found: datetime | None = None
    for _ in range(_MAX_ITERATIONS):
        if t > horizon:
            break
        nt = t
        for wzone in wzones:
            local = t.astimezone(wzone)
            blackout_end = blackout_ends_at(policy, local, wzone, t)
            if blackout_end is not None:
                nt = max(nt, blackout_end)
            else:
                sod = seconds_of_day(local)
                if sod < window.start_s:
                    nt = max(nt, at_local(local.date(), window.start_s, wzone, t))
                elif sod >= window.end_s:
                    nt = max(nt, at_local(local.date() + ONE_DAY, window.start_s, wzone, t))
        impossible = False
        for cap in caps:
            free = capsx.free_at(cap, t)
            if free is None:
                impossible = True
                break
            if free > nt:
                nt = free
        if impossible:
            break
        if nt == t:
            found = t
            break
        t = nt
    kept = [c for c in caps if not c.appointment_waives]
    appt = appointment_opening(policy, appointments, capsx, now_u, zone, kept, wzones)
    if appt is not None and (found is None or appt < found):
        return appt, "appointment slot"
    if found is None:
        return None, "no lawful time within 400 days (a cap with limit 0, or blackout everywhere)"
    return found, "window, blackout and caps"
