"""The web console's blocked-dial view over the decision log: filters, keyset pages
newest first, CSV export, counts and chart groupings, and one decision's detail."""

from __future__ import annotations

import asyncio
import heapq
import time
from dataclasses import replace
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta, timezone
from datetime import time as time_of_day
from typing import Any

from sqlalchemy import func, literal, or_, select, true, union_all

from adapters.db import tables as t
from adapters.db.console_base import ConsoleState
from dialer.chain import decision_from_record
from dialer.console.ports import (
    BlockedDialFilter,
    BlockedSummary,
    CheckView,
    DecisionDetail,
    DecisionRow,
    FilterOptions,
    NotFound,
    Page,
    Principal,
)
from dialer.model import REVIEWED_KINDS, DecisionRecord


EXPORT_BATCH = 2000
OPTIONS_TTL_S = 60.0
SUMMARY_CACHE_SIZE = 64
PER_DAY_MAX = 62  # ranges up to this many days are counted day by day (SQLite)
SUMMARY_DELTA_MAX = 50_000  # more new rows than this: recount from the indexes


def _summary(days: dict[tuple[date, str], int], agents: dict[tuple[str, str], int]) -> BlockedSummary:
    return BlockedSummary(
        by_day_rule=tuple((day, rule, n) for (day, rule), n in sorted(days.items())),
        by_agent_rule=tuple((a, r, n) for (a, r), n in sorted(agents.items())),
    )


def _row_matcher(who: Principal, flt: BlockedDialFilter) -> Any:
    """The blocked-dial filter as a Python predicate over decision rows: the same
    conditions as `_blocked_where` (tests/e2e/console holds the two to the same answers)."""
    start, end = flt.bounds()

    def match(row: Any) -> bool:
        return (
            not row.allowed
            and row.kind in REVIEWED_KINDS
            and who.sees(row.creditor)
            and (flt.creditor is None or row.creditor == flt.creditor)
            and (start is None or row.at >= start)
            and (end is None or row.at < end)
            and (not flt.agent or row.agent_id == flt.agent)
            and (not flt.rule_id or row.rule_id == flt.rule_id)
            and (not flt.case_id or row.case_id == flt.case_id)
        )

    return match


def _scope(who: Principal) -> frozenset[str] | None:
    return None if who.role == "admin" else who.creditors


def _row(r: DecisionRecord) -> DecisionRow:
    return DecisionRow(
        decision_id=r.decision_id, at=r.at, creditor=r.creditor, case_id=r.case_id, agent_id=r.agent_id,
        number_masked=r.number_masked, channel=r.channel, allowed=r.allowed, rule_id=r.rule_id,
        reason=r.reason, reason_zh=r.reason_zh, next_allowed_at=r.next_allowed_at, policy_version=r.policy_version,
        kind=r.kind,
    )


def encode_cursor(at: datetime, row_id: int) -> str:
    return f"{at.astimezone(timezone.utc).strftime('%Y%m%dT%H%M%S.%f')}~{row_id}"


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        ts, _, rid = cursor.partition("~")
        at = datetime.strptime(ts, "%Y%m%dT%H%M%S.%f").replace(tzinfo=timezone.utc)
        if not rid.isdigit() or len(rid) > 18 or not 2000 <= at.year < 2100:  # none the console made
            raise ValueError(cursor)
        return at, int(rid)
    except ValueError as exc:
        raise NotFound("not a page cursor the console made", "不是控制台生成的分页位置") from exc


class BlockedDialQueries(ConsoleState):
    """The decision-log reads of `SqlAlchemyConsoleQueries`."""

    # -- the decision log ------------------------------------------------------------------
    def _blocked_where(
        self, who: Principal, flt: BlockedDialFilter, *, narrow: bool = True, by_case: bool = False,
        kind: str | None = None,
    ) -> list[Any]:
        """The filter's conditions in SQL; `kind`: one reviewed kind only (see `_newest`)."""
        d = t.decisions.c
        scope = _scope(who)
        if flt.creditor is not None:
            if scope is not None and flt.creditor not in scope:
                raise NotFound(f"no creditor {flt.creditor}", f"没有委托方 {flt.creditor}")
            scope = frozenset({flt.creditor})
        start, end = flt.bounds()
        # For one case, steer SQLite to (creditor, case_id, at), or without a creditor to
        # the blocked-by-case index (migration 0007, whose WHERE is this very expression,
        # the 1 a literal so that it matches): written as an expression, `allowed` cannot
        # pick an index led by it (the review index), which would scan every blocked dial
        # in the range.
        allowed = (func.coalesce(d.allowed, true()).is_(False)) if by_case and flt.case_id else d.allowed.is_(False)
        # Dials and PBX rechecks (a dial blocked at ring time), as the JSON API's review
        # lists them; not what-if checks. Named: an IN list keeps SQLite on the review
        # index (allowed, kind, at, …), where "kind != 'check'" would not seek.
        conds: list[Any] = [allowed, d.kind.in_(REVIEWED_KINDS) if kind is None else d.kind == kind]
        if scope is not None:
            conds.append(d.creditor.in_(sorted(scope)) if scope else literal(False))
        if start is not None:
            conds.append(d.at >= start)
        if end is not None:
            conds.append(d.at < end)
        if narrow:
            if flt.agent:
                conds.append(d.agent_id == flt.agent)
            if flt.rule_id:
                conds.append(d.rule_id == flt.rule_id)
        if flt.case_id:
            conds.append(d.case_id == flt.case_id)
        return conds

    async def filter_options(self, who: Principal) -> FilterOptions:
        # Creditors, agents and rule ids change rarely; the rule list scans the log, so
        # the options are kept for a minute per scope.
        key = tuple(sorted(who.creditors)) if who.role != "admin" else None
        hit = self._options.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        opts = await self._filter_options(who)
        self._options[key] = (now + OPTIONS_TTL_S, opts)
        return opts

    async def _filter_options(self, who: Principal) -> FilterOptions:
        scope = _scope(who)
        d = t.decisions.c
        async with self.store.read() as uow:
            q = select(t.creditors.c.id).order_by(t.creditors.c.id)
            if scope is not None:
                q = q.where(t.creditors.c.id.in_(sorted(scope)))
            creditors = tuple(r[0] for r in await uow.conn.execute(q))
            uq = select(t.users.c.name).where(t.users.c.role.in_(("collector", "supervisor")), t.users.c.disabled.is_(False))
            if scope is not None:
                uq = uq.where(
                    t.users.c.id.in_(select(t.user_creditors.c.user_id).where(t.user_creditors.c.creditor.in_(sorted(scope))))
                )
            agents = tuple(sorted(r[0] for r in await uow.conn.execute(uq)))
            # The rules the review can list (what-if checks are not listed: no option without rows).
            rq = select(d.rule_id).where(d.allowed.is_(False), d.kind.in_(REVIEWED_KINDS)).group_by(d.rule_id)
            if scope is not None:
                rq = rq.where(d.creditor.in_(sorted(scope)) if scope else literal(False))
            rules = tuple(sorted(r[0] for r in await uow.conn.execute(rq)))
        return FilterOptions(creditors=creditors, agents=agents, rule_ids=rules)

    async def blocked_dials(self, who: Principal, flt: BlockedDialFilter, cursor: str | None, limit: int) -> Page:
        after = _decode_cursor(cursor) if cursor else None
        async with self.store.read() as uow:
            rows = await self._newest(uow, who, flt, after, limit + 1)
        # No count here: the page's chart aggregates count the same rows; the router sums them.
        items = tuple(_row(decision_from_record(r[2])) for r in rows[:limit])
        nxt = encode_cursor(rows[limit - 1][1], int(rows[limit - 1][0])) if len(rows) > limit else None
        return Page(items=items, next_cursor=nxt, total=None)

    async def export_blocked_dials(self, who: Principal, flt: BlockedDialFilter) -> AsyncIterator[DecisionRow]:
        after: tuple[datetime, int] | None = None
        while True:
            # One short read transaction per batch: a long export never pins the store.
            async with self.store.read() as uow:
                rows = await self._newest(uow, who, flt, after, EXPORT_BATCH)
            for r in rows:
                yield _row(decision_from_record(r[2]))
            if len(rows) < EXPORT_BATCH:
                return
            after = (rows[-1][1], int(rows[-1][0]))

    async def _newest(
        self, uow: Any, who: Principal, flt: BlockedDialFilter, after: tuple[datetime, int] | None, n: int
    ) -> list[Any]:
        """Up to `n` filtered blocked decisions (id, at, record, hash), newest first on
        (at, id), strictly below the keyset position `after`.

        One query per reviewed kind, merged here: with `kind = ?` the review index
        (allowed, kind, at, …) hands SQLite each kind's rows already in `at` order, so it
        stops after `n`; with `kind IN (…)` it would have to read and sort every row in
        the range (each record decoded) to show one page.
        """
        d = t.decisions.c
        parts = []
        for kind in REVIEWED_KINDS:
            conds = self._blocked_where(who, flt, by_case=True, kind=kind)
            if after is not None:
                # `at <= …` first: a plain range the (…, at) indexes can seek to.
                conds += [d.at <= after[0], or_(d.at < after[0], d.id < after[1])]
            q = select(d.id, d.at, d.record, d.hash).where(*conds).order_by(d.at.desc(), d.id.desc()).limit(n)
            parts.append((await uow.conn.execute(q)).all())
        return list(heapq.merge(*parts, key=lambda r: (r[1], r[0]), reverse=True))[:n]

    async def blocked_summary(self, who: Principal, flt: BlockedDialFilter) -> BlockedSummary:
        """Counts per (local day, rule) and per (agent, rule) of the filtered blocked dials.

        On SQLite the result is cached per filter together with the highest decision row
        id it counted, and brought up to date by counting only the rows appended since:
        the decision log is append-only and SQLite's single writer hands out row ids in
        commit order, so "rows above the last id seen" is exactly what is new. (Not on
        PostgreSQL, where concurrent writers may commit ids out of order.)
        """
        conds = self._blocked_where(who, flt)
        if not self.store.is_sqlite:
            undated = self._blocked_where(who, replace(flt, date_from=None, date_to=None))
            days, agents = await self._aggregate(conds, flt.tz, flt, undated)
            return _summary(days, agents)
        key = (None if who.role == "admin" else tuple(sorted(who.creditors)), flt.date_from, flt.date_to,
               flt.creditor, flt.agent, flt.rule_id, flt.case_id, str(flt.tz))
        d = t.decisions.c
        async with self.store.read() as uow:
            top = (await uow.conn.execute(select(func.max(d.id)))).scalar() or 0
        hit = self._summaries.get(key)
        if hit is not None and hit[0] == top:
            self._summaries.move_to_end(key)
            return _summary(hit[1], hit[2])
        if hit is not None and hit[0] < top <= hit[0] + SUMMARY_DELTA_MAX:
            days, agents = dict(hit[1]), dict(hit[2])
            async with self.store.read() as uow:
                fresh = (
                    await uow.conn.execute(
                        select(d.at, d.allowed, d.kind, d.creditor, d.case_id, d.agent_id, d.rule_id)
                        .where(d.id > hit[0], d.id <= top)
                    )
                ).all()
            match = _row_matcher(who, flt)
            for row in fresh:
                if match(row):
                    day = (row.at.astimezone(flt.tz).date(), row.rule_id)
                    days[day] = days.get(day, 0) + 1
                    agent = (row.agent_id, row.rule_id)
                    agents[agent] = agents.get(agent, 0) + 1
        else:
            undated = self._blocked_where(who, replace(flt, date_from=None, date_to=None))
            days, agents = await self._aggregate([*conds, d.id <= top], flt.tz, flt, [*undated, d.id <= top])
        self._summaries[key] = (top, days, agents)
        self._summaries.move_to_end(key)
        while len(self._summaries) > SUMMARY_CACHE_SIZE:
            self._summaries.popitem(last=False)
        return _summary(days, agents)

    async def _aggregate(
        self, conds: list[Any], tz: Any, flt: BlockedDialFilter | None = None, undated: list[Any] | None = None
    ) -> tuple[dict[tuple[date, str], int], dict[tuple[str, str], int]]:
        """`undated`: `conds` without the date range, for the per-day queries (given
        both ranges, SQLite may seek on the wide one and filter the day row by row)."""
        d = t.decisions.c

        async def grouped(*cols: Any) -> list[Any]:
            async with self.store.read() as uow:
                return list((await uow.conn.execute(select(*cols, func.count()).where(*conds).group_by(*cols))).all())

        if self.store.is_sqlite and flt is not None and undated is not None and flt.date_from and flt.date_to and (
            0 <= (flt.date_to - flt.date_from).days < PER_DAY_MAX
        ):
            # One small GROUP BY per local day (UNION ALL, one statement): exact local
            # days, and SQLite sorts a day's rows at a time instead of the whole range.
            days_list = [flt.date_from + timedelta(days=i) for i in range((flt.date_to - flt.date_from).days + 1)]
            parts = [
                select(literal(i).label("i"), d.rule_id, func.count().label("n"))
                .where(*undated, d.at >= datetime.combine(day, time_of_day(0), tz),
                       d.at < datetime.combine(day + timedelta(days=1), time_of_day(0), tz))
                .group_by(d.rule_id)
                for i, day in enumerate(days_list)
            ]

            async def per_day() -> list[Any]:
                async with self.store.read() as uow:
                    return list((await uow.conn.execute(union_all(*parts))).all())

            rows, by_agent = await asyncio.gather(per_day(), grouped(d.agent_id, d.rule_id))
            per_day_rule = {(days_list[int(i)], rule): int(n) for i, rule, n in rows}
            return per_day_rule, {(a, r): int(n) for a, r, n in by_agent}

        # Otherwise bucket by UTC hour in SQL, then by local day here: exact for every
        # zone whose offset is a whole number of hours (China's is).
        if self.store.is_sqlite:
            hour = func.substr(d.at, 1, 13)
        else:
            hour = func.date_trunc("hour", d.at)

        # Two read transactions side by side: SQLite (WAL) and PostgreSQL both run
        # readers concurrently, so the page waits for the slower query, not the sum.
        by_hour, by_agent = await asyncio.gather(grouped(hour, d.rule_id), grouped(d.agent_id, d.rule_id))
        days: dict[tuple[date, str], int] = {}
        local_day: dict[str, date] = {}
        for h, rule, n in by_hour:
            key_h = h.isoformat() if isinstance(h, datetime) else str(h)[:13]
            day = local_day.get(key_h)
            if day is None:
                if isinstance(h, datetime):  # PostgreSQL: an aware hour
                    at = h if h.tzinfo else h.replace(tzinfo=timezone.utc)
                else:  # SQLite: "YYYY-MM-DD HH" of the stored UTC text
                    at = datetime(int(key_h[0:4]), int(key_h[5:7]), int(key_h[8:10]), int(key_h[11:13]), tzinfo=timezone.utc)
                day = local_day[key_h] = at.astimezone(tz).date()
            days[(day, rule)] = days.get((day, rule), 0) + int(n)
        return days, {(a, r): int(n) for a, r, n in by_agent}

    async def decision(self, who: Principal, decision_id: str) -> DecisionDetail:
        async with self.store.read() as uow:
            found = (await uow.decisions.get_many([decision_id])).get(decision_id)
        if found is None or not who.sees(found.creditor):
            raise NotFound(f"no decision {decision_id}", f"没有决定 {decision_id}")
        return DecisionDetail(
            row=_row(found),
            user=found.user,
            checks=tuple(
                CheckView(c.get("rule_id", "?"), bool(c.get("passed")), c.get("detail", ""), c.get("detail_zh", ""))
                for c in found.checks
            ),
            inputs_used=found.inputs_used,
            evaluated_at=found.evaluated_at,
            attempt_id=found.attempt_id,
            record_hash=found.hash,
        )
