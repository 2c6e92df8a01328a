"""Frequency-cap arithmetic: how many events a cap counts at an instant, and the
earliest instant at which it alone passes again."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from .callee_time import ONE_DAY, UTC, at_local, day_bounds
from .config import Cap

__all__ = ["Caps"]


class _Counter:
    """Event times of one (scope, relations, kind) selection, sorted, for bisecting."""

    __slots__ = ("times",)

    def __init__(self, times: list[datetime]) -> None:
        for t in times:
            if t.tzinfo is None:
                raise ValueError(f"history event at {t!r} is not timezone-aware")
        times.sort()
        self.times = times

    def rolling(self, t: datetime, window: timedelta) -> int:
        """Events with time > t - window (later events too: clock skew is counted)."""
        times = self.times
        return len(times) - bisect_right(times, t - window)

    def since(self, lo: datetime) -> int:
        """Events with time >= lo (later days too: a clock stepped back is counted)."""
        times = self.times
        return len(times) - bisect_left(times, lo)

    def closed(self, lo: datetime, hi: datetime) -> int:
        """Events with lo <= time <= hi."""
        times = self.times
        return bisect_right(times, hi) - bisect_left(times, lo)


class Caps:
    """Per-evaluation cap arithmetic over the relevant history."""

    __slots__ = ("number_groups", "case_groups", "cache", "zone")

    def __init__(
        self,
        number_groups: dict[tuple[str, str], list[datetime]],
        case_groups: dict[tuple[str, str], list[datetime]],
        zone: ZoneInfo,
    ) -> None:
        self.number_groups = number_groups  # (relation, kind) -> times, same number
        self.case_groups = case_groups  # (relation, kind) -> times, same case
        self.cache: dict[tuple[str, frozenset[str], str], _Counter] = {}
        self.zone = zone

    def counter(self, scope: str, relations: frozenset[str], kind: str) -> _Counter:
        key = (scope, relations, kind)
        counter = self.cache.get(key)
        if counter is None:
            times: list[datetime] = []
            groups = self.number_groups if scope == "number" else self.case_groups
            # The groups present (a number's history is mostly one or two), not every
            # relation the cap names; the counter sorts the times.
            for (rel, k), got in groups.items():
                if k == kind and rel in relations:
                    times.extend(got)
            counter = self.cache[key] = _Counter(times)
        return counter

    def count(self, cap: Cap, t: datetime, day: tuple[datetime, datetime, date] | None) -> int:
        """The cap's count as seen at instant `t` (history unchanged)."""
        if cap.count == "unanswered":
            a = self._count_kind(cap, "attempt", t, day)
            c = self._count_kind(cap, "connected", t, day)
            return a - c if a > c else 0
        return self._count_kind(cap, "attempt" if cap.count == "attempts" else "connected", t, day)

    def _count_kind(self, cap: Cap, kind: str, t: datetime, day: tuple[datetime, datetime, date] | None) -> int:
        counter = self.counter(cap.scope, cap.relations, kind)
        if not counter.times:
            return 0
        if cap.window_delta is None:
            if day is None:
                day = day_bounds(t, self.zone)
            # Events stamped after today's midnight count as today's: they were placed
            # already, by a gate whose clock ran ahead or before the clock stepped back.
            if cap.days > 1:
                # N callee-local dates ending today: from the midnight that began the first.
                first = datetime.combine(day[2] - timedelta(days=cap.days - 1), time(0), tzinfo=self.zone)
                return counter.since(first.astimezone(UTC))
            return counter.since(day[0])
        return counter.rolling(t, cap.window_delta)

    def free_at(self, cap: Cap, t: datetime) -> datetime | None:
        """The earliest instant >= t at which this cap alone passes; None if never."""
        if cap.limit <= 0:
            return None
        if self.count(cap, t, None) < cap.limit:
            return t
        if cap.window_delta is None:
            # A calendar-day cap frees at a callee-local midnight (the loop re-checks
            # that day, which matters only for clock-skewed future events). Over N days
            # the period holding the limit-th newest event must end: its date + N.
            nxt = t.astimezone(self.zone).date() + ONE_DAY
            if cap.days > 1 and cap.count != "unanswered":
                kind = "attempt" if cap.count == "attempts" else "connected"
                oldest = self.counter(cap.scope, cap.relations, kind).times[-cap.limit]
                nxt = max(nxt, oldest.astimezone(self.zone).date() + timedelta(days=cap.days))
            return at_local(nxt, 0, self.zone, t)
        w = cap.window_delta
        if cap.count != "unanswered":
            counter = self.counter(cap.scope, cap.relations, "attempt" if cap.count == "attempts" else "connected")
            # count(t') < limit  <=>  the limit-th newest event <= t' - w. When exactly
            # `limit` events are counted that is the oldest counted event + window.
            return counter.times[-cap.limit].astimezone(UTC) + w
        # Unanswered = attempts - connected is not monotone in t: try each instant at
        # which an event leaves the window, in order.
        candidates = sorted(
            {
                e.astimezone(UTC) + w
                for kind in ("attempt", "connected")
                for e in self.counter(cap.scope, cap.relations, kind).times
                if e.astimezone(UTC) + w > t
            }
        )
        for cand in candidates:
            if self.count(cap, cand, None) < cap.limit:
                return cand
        return None
