"""The callee's clock: which zone the callee is in, and local-time arithmetic in it.

Arithmetic is done in UTC so a DST change never shifts a rolling window; a wall time
inside a repeated DST hour resolves to the first instant ahead.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

from .numbers import load_zone, number_zone, number_zones

__all__ = [
    "ONE_DAY",
    "UTC",
    "at_local",
    "callee_zone",
    "day_bounds",
    "local_midnight_after",
    "seconds_of_day",
    "wall_instant",
    "window_zones",
]

UTC = timezone.utc
ONE_DAY = timedelta(days=1)


# Caches keyed by a number or a case hold only strings, booleans and tuples of them:
# the garbage collector does not track those. A cached Check, ZoneInfo tuple or
# frozenset key per number would be a tracked object kept alive past its decision;
# with many distinct numbers a second they pile up in the collector's middle
# generation, whose collections then stall the event loop.


def callee_zone(contact_tz: str | None, number: str, default_tz: str) -> tuple[ZoneInfo, str, str, str | None]:
    """(ZoneInfo, zone name, how it was chosen, note) for the callee."""
    name, source, note = callee_zone_name(contact_tz, number, default_tz)
    zone = load_zone(name)
    if zone is None:  # every name chosen above has loaded before; the caller fails closed
        raise ValueError(f"time zone {name!r} cannot be loaded")
    return zone, name, source, note


@lru_cache(maxsize=65536)
def callee_zone_name(contact_tz: str | None, number: str, default_tz: str) -> tuple[str, str, str | None]:
    note = None
    if contact_tz:
        if load_zone(contact_tz) is not None:
            return contact_tz, "contact", None
        note = f"contact zone {contact_tz!r} is not an IANA zone; ignored"
    name = number_zone(number)
    if name is not None:
        return name, "number", note
    return default_tz, "policy_default", note


def window_zones(zone: ZoneInfo, source: str, number: str) -> tuple[ZoneInfo, ...]:
    """The zones whose clocks the window and blackouts are checked on: the callee's
    zone, or every zone of a number that spans several when nothing narrows it (its
    callee is in one of them, which one is unknown)."""
    if source != "policy_default":
        return (zone,)
    zones = tuple(z for z in map(load_zone, number_zones(number)) if z is not None)
    return zones if len(zones) > 1 else (zone,)


def local_midnight_after(local: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant of the callee-local midnight that ends `local`'s day."""
    nxt = datetime.combine(local.date() + ONE_DAY, time(0), tzinfo=zone)
    return nxt.astimezone(UTC)


def day_bounds(t: datetime, zone: ZoneInfo) -> tuple[datetime, datetime, date]:
    local = t.astimezone(zone)
    start = datetime.combine(local.date(), time(0), tzinfo=zone).astimezone(UTC)
    return start, local_midnight_after(local, zone), local.date()


def seconds_of_day(local: datetime) -> float:
    return local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6


def at_local(day: date, seconds: int, zone: ZoneInfo, after: datetime) -> datetime:
    """The first instant after `after` showing local `day` + `seconds` on the clock."""
    if seconds >= 86400:
        day, seconds = day + ONE_DAY, 0
    wall = datetime.combine(day, time(seconds // 3600, seconds % 3600 // 60, seconds % 60))
    return wall_instant(wall, zone, after)


def wall_instant(wall: datetime, zone: ZoneInfo, after: datetime) -> datetime:
    # In a repeated DST hour a wall time names two instants: take the first one that
    # lies ahead; never step backwards (the search must progress).
    for fold in (0, 1):
        instant = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if instant > after:
            return instant
    return after + timedelta(seconds=1)
