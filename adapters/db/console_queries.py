"""`SqlAlchemyConsoleQueries`: the web console's port (`dialer.console.ports.ConsoleQueries`)
over the gate service's case store, and over the recordings vault when one is wired.

Reads run in the store's read units of work (`store.read()`), with SQLAlchemy Core on
the service's tables; nothing here writes to the store. The blocked-dial view is built
for a large decision log: keyset paging newest first on (at, id), counts and chart
groupings as aggregate queries the indexes of migration `0002_console` cover, so no
decision record is decoded except the page shown.

Scope: every query is restricted to the principal's creditors (admin: all) in SQL, and
an id outside the scope raises `NotFound` exactly like an unknown id.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import time
from collections import OrderedDict
from dataclasses import replace
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import date, datetime, timedelta, timezone
from datetime import time as time_of_day
from typing import Any

from sqlalchemy import func, insert, literal, or_, select, true, union_all

from adapters.db import tables as t
from dialer.chain import decision_from_record
from dialer.console.ports import (
    AccessLogEntry,
    AudioSlice,
    BlockedDialFilter,
    BlockedSummary,
    CaseEvent,
    CaseView,
    CheckView,
    ContactView,
    DecisionDetail,
    DecisionRow,
    DestructionEntry,
    FilterOptions,
    Forbidden,
    HealthItem,
    HistoryView,
    WorklistItem,
    LegalHoldView,
    NotFound,
    OutcomeView,
    Page,
    Principal,
    PurgeView,
    RecordingFilter,
    RecordingView,
    Refused,
    TimelineEntry,
)
from dialer.errors import Unauthenticated
from dialer.masking import mask_number, mask_optional, mask_text
from dialer.model import REVIEWED_KINDS, DecisionRecord

EXPORT_BATCH = 2000
OPTIONS_TTL_S = 60.0
AUDIT_EVERY_S = 600.0
SUMMARY_CACHE_SIZE = 64
PER_DAY_MAX = 62  # ranges up to this many days are counted day by day (SQLite)
SUMMARY_DELTA_MAX = 50_000  # more new rows than this: recount from the indexes
AUDIT_TIMEOUT_S = 600.0
# Case-state changes worth showing on the case page, from the data-change log.
CASE_EVENT_LIMIT = 200
CASE_HISTORY_LIMIT = 200  # the newest entries of the case history on its page


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


def _principal(p: Any) -> Principal:
    # The console keys sessions by user name: unique, and what the decision log records.
    return Principal(user_id=p.name, name=p.name, role=p.role, creditors=frozenset(p.creditors))


def _scope(who: Principal) -> frozenset[str] | None:
    return None if who.role == "admin" else who.creditors


def _row(r: DecisionRecord) -> DecisionRow:
    return DecisionRow(
        decision_id=r.decision_id, at=r.at, creditor=r.creditor, case_id=r.case_id, agent_id=r.agent_id,
        number_masked=r.number_masked, channel=r.channel, allowed=r.allowed, rule_id=r.rule_id,
        reason=r.reason, reason_zh=r.reason_zh, next_allowed_at=r.next_allowed_at, policy_version=r.policy_version,
        kind=r.kind,
    )


def _encode_cursor(at: datetime, row_id: int) -> str:
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


class SqlAlchemyConsoleQueries:
    """`ConsoleQueries` over `services.store` (and `vault`, a `recordings.vault.Vault`)."""

    def __init__(
        self, services: Any, vault: Any = None, *, health: Callable[[], Awaitable[Sequence[HealthItem]]] | None = None
    ) -> None:
        self.services = services
        self.store = services.store
        self.vault = vault
        self._health = health
        self._audit_task: asyncio.Task[Any] | None = None
        self._audit_at = 0.0
        self._audit_last: HealthItem | None = None
        self._summaries: OrderedDict[Any, tuple[int, dict[Any, int], dict[Any, int]]] = OrderedDict()
        self._options: dict[tuple[str, ...] | None, tuple[float, FilterOptions]] = {}

    # -- users -------------------------------------------------------------------------
    async def authenticate(self, token: str) -> Principal | None:
        try:
            p = await self.services.auth.authenticate(f"Bearer {token}")
        except Unauthenticated:
            return None
        return _principal(p)

    async def principal(self, user_id: str) -> Principal | None:
        async with self.store.read() as uow:
            p = await uow.users.by_name(user_id)
        return _principal(p) if p is not None else None

    async def sign_out(self, sid: str, until: float) -> None:
        now = self.services.clock.now()
        async with self.store.write() as uow:
            await uow.conn.execute(t.console_signouts.delete().where(t.console_signouts.c.expires_at < now))
            exists = await uow.conn.execute(select(t.console_signouts.c.sid).where(t.console_signouts.c.sid == sid))
            if exists.first() is None:
                await uow.conn.execute(insert(t.console_signouts).values(
                    sid=sid, expires_at=datetime.fromtimestamp(until, timezone.utc)))

    async def signed_out(self, sid: str, user_id: str | None = None, issued_at: int = 0) -> bool:
        async with self.store.read() as uow:
            row = await uow.conn.execute(select(t.console_signouts.c.sid).where(t.console_signouts.c.sid == sid))
            if row.first() is not None:
                return True
            if user_id is None:
                return False
            c = t.console_session_cutoffs
            cut = (await uow.conn.execute(select(c.c.not_before).where(c.c.user_name == user_id))).scalar()
        # Sessions are stamped in whole seconds: one opened in the cutoff's own second (the
        # new token's first sign-in) stays.
        return cut is not None and issued_at < int(cut.timestamp())

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
        nxt = _encode_cursor(rows[limit - 1][1], int(rows[limit - 1][0])) if len(rows) > limit else None
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

    # -- cases -------------------------------------------------------------------------------
    async def case(self, who: Principal, creditor: str, case_id: str) -> CaseView:
        if not who.sees(creditor):
            raise NotFound(f"no case {case_id}", f"没有案件 {case_id}")
        d = t.decisions.c
        a = t.audit_log.c
        async with self.store.read() as uow:
            c = await uow.cases.get(creditor, case_id)
            if c is None:
                raise NotFound(f"no case {case_id}", f"没有案件 {case_id}")
            outcomes = {o.attempt_id: o for o in await uow.attempts.outcomes_for_case(c.pk)}
            drows = (
                await uow.conn.execute(
                    select(d.record, d.hash)
                    .where(d.creditor == creditor, d.case_id == case_id, d.kind == "dial")
                    .order_by(d.at.desc(), d.id.desc())
                    .limit(500)
                )
            ).all()
            erows = (
                await uow.conn.execute(
                    select(a.at, a.actor, a.action, a.details)
                    .where(a.creditor == creditor, a.case_id == case_id)
                    .order_by(a.at.desc(), a.id.desc())
                    .limit(CASE_EVENT_LIMIT)
                )
            ).all()
            history = await uow.cases.history(c.pk, after=max(0, c.history_seq - CASE_HISTORY_LIMIT),
                                              limit=CASE_HISTORY_LIMIT)
        recs_by_attempt: dict[str, list[str]] = {}
        hold = None
        if self.vault is not None:
            from recordings.model import RecordingFilter as VaultFilter

            try:
                if who.may("recordings"):
                    for rec in await self.vault.list(_actor(who), VaultFilter(creditors=frozenset({creditor}), case_id=case_id)):
                        if rec.source_kind == "attempt":
                            recs_by_attempt.setdefault(rec.source_id, []).append(rec.recording_id)
                h = await self.vault.repo.case_hold(creditor, case_id)
                if h is not None:
                    hold = LegalHoldView(mask_text(h.reason), h.by, h.at)
            except Exception:  # noqa: BLE001 - the case page stays up when the vault is down
                recs_by_attempt = {}
        timeline = []
        for rec_text, _hash in drows:
            r = decision_from_record(rec_text)
            o = outcomes.get(r.attempt_id or "")
            timeline.append(
                TimelineEntry(
                    at=r.at, decision_id=r.decision_id, attempt_id=r.attempt_id, agent_id=r.agent_id,
                    number_masked=r.number_masked, allowed=r.allowed, rule_id=r.rule_id, reason=r.reason,
                    reason_zh=r.reason_zh,
                    outcome=_outcome(o) if o else None,
                    recording_ids=tuple(recs_by_attempt.get(r.attempt_id or "", ())),
                )
            )
        events = tuple(
            CaseEvent(at=row[0], actor=row[1], what=_event_text(row[3]), action=row[2]) for row in erows
        )
        return CaseView(
            # The console shows numbers masked to every role, in free text as in fields.
            creditor=c.creditor, case_id=c.case_id, debtor_name=mask_text(c.debtor_name), status=c.status,
            follow_up=c.follow_up_status, next_action_date=c.next_action_date, flags=tuple(sorted(c.flags)),
            legal_hold=hold, commission_start=c.commission_start, commission_end=c.commission_end,
            assigned_agent=c.assigned_agent, amount_due=c.amount_due, overdue_days=c.overdue_days,
            contacts=tuple(
                ContactView(mask_number(x.number), x.relation, mask_optional(x.name), x.status, x.do_not_call, x.source)
                for x in c.contacts
            ),
            timeline=tuple(timeline), events=events,
            history=tuple(
                HistoryView(seq=h.seq, at=h.at, actor=h.actor, role=h.role, source=h.source, source_ref=h.source_ref,
                            source_row=h.source_row, field=h.field, old=_history_value(h.old),
                            new=_history_value(h.new), reason=h.reason)
                for h in reversed(history)
            ),
        )

    async def worklist(self, who: Principal) -> list[WorklistItem]:
        from dialer.worklist import MAX_ITEMS, Worklist, worklist_items

        wl = Worklist(self.services.gate)
        scope = None if who.role == "admin" else frozenset(who.creditors)
        async with self.store.read() as uow:
            rows = await uow.cases.worklist(scope, None, wl.latest_due(), MAX_ITEMS)
        return [
            WorklistItem(
                case_id=i["case_id"], creditor=i["creditor"], assigned_agent=i["assigned_agent"], status=i["status"],
                next_action_date=i["next_action_date"], days_overdue=i["days_overdue"],
                first_call_deadline=i["first_call"]["deadline"] if i["first_call"] else None,
                first_call_missed=bool(i["first_call"] and i["first_call"]["missed"]),
            )
            for i in worklist_items(rows, wl.today)
        ]

    # -- recordings (the vault) ------------------------------------------------------------------
    def _need_vault(self) -> Any:
        if self.vault is None:
            raise Refused("the recordings vault is not enabled on this service", "本服务未启用录音库")
        return self.vault

    async def case_recordings(self, who: Principal, creditor: str, case_id: str, flt: RecordingFilter) -> Sequence[RecordingView]:
        from recordings.model import RecordingFilter as VaultFilter

        vault = self._need_vault()
        if not who.sees(creditor):
            raise NotFound(f"no case {case_id}", f"没有案件 {case_id}")
        start = datetime.combine(flt.date_from, datetime.min.time(), flt.tz) if flt.date_from else None
        end = datetime.combine(flt.date_to + timedelta(days=1), datetime.min.time(), flt.tz) if flt.date_to else None
        exact = _as_e164(flt.number)
        vflt = VaultFilter(
            creditors=frozenset({creditor}), case_id=case_id, agent=flt.agent or None,
            started_from=start, started_to=end,
        )
        recs = await _vault_call(vault.list(_actor(who), vflt, number=exact))
        out = []
        for r in recs:
            v = _recording(r)
            if flt.number and not exact and flt.number not in (v.number_masked or ""):
                continue
            if end is not None and v.started_at >= end:
                continue
            out.append(v)
        return sorted(out, key=lambda v: v.started_at, reverse=True)

    async def recording(self, who: Principal, recording_id: str) -> RecordingView:
        if not who.may("recordings"):
            raise Forbidden("recordings are for qa, compliance and supervisors", "录音仅供质检、合规和主管调阅")
        rec = await _vault_call(self._need_vault().get(recording_id, _actor(who)))
        if rec.state == "destroyed" or not (rec.creditor and who.sees(rec.creditor)):
            raise NotFound(f"no recording {recording_id}", f"没有录音 {recording_id}")
        return _recording(rec, held=await self.vault.is_held(rec))

    async def access_log(self, who: Principal, recording_id: str) -> Sequence[AccessLogEntry]:
        await self.recording(who, recording_id)
        entries = await _vault_call(self._need_vault().access_log(recording_id, _actor(who)))
        out = [
            AccessLogEntry(at=e.at, user=e.user, reason=mask_text(e.reason), byte_range=f"{e.range_start}-{e.range_end}",
                           client=e.client)
            for e in entries
        ]
        return sorted(out, key=lambda e: e.at, reverse=True)

    async def read_audio(
        self, who: Principal, recording_id: str, *, reason: str, start: int | None, end: int | None, client: str | None
    ) -> AudioSlice:
        rec = await self.recording(who, recording_id)
        rng = None
        if start is not None or end is not None:
            rng = (start or 0, rec.size - 1 if end is None else min(end, rec.size - 1))
        stream = await _vault_call(
            self._need_vault().open_audio(recording_id, _actor(who), reason=reason, byte_range=rng, client=client)
        )
        return _slice(stream)

    async def destruction_register(self, who: Principal, cursor: str | None, limit: int) -> Page:
        entries = await _vault_call(self._need_vault().destruction_register(_actor(who)))
        rows = sorted((_destruction(e) for e in entries), key=lambda e: e.seq, reverse=True)
        if cursor:
            try:
                if not cursor.isdigit() or len(cursor) > 18:
                    raise ValueError(cursor)
                below = int(cursor)
            except ValueError as exc:
                raise NotFound("not a page cursor the console made", "不是控制台生成的分页位置") from exc
            rows = [e for e in rows if e.seq < below]
        items = rows[:limit]
        return Page(items=tuple(items), next_cursor=str(items[-1].seq) if len(rows) > limit else None)

    async def pending_purges(self, who: Principal) -> Sequence[PurgeView]:
        vault = self._need_vault()
        if hasattr(vault, "pending_purges"):
            purges = await _vault_call(vault.pending_purges(_actor(who)))
        else:  # an older vault core: its repository lists them
            purges = await vault.repo.pending_purges()
        out = []
        for p in purges:
            view = await self._purge_view(who, p)
            if view is not None:
                out.append(view)
        return out

    async def _purge_view(self, who: Principal, p: Any) -> PurgeView | None:
        creditors: set[str] = set()
        for rid in p.recording_ids:
            rec = await self.vault.repo.get(rid)
            if rec is not None and rec.creditor:
                creditors.add(rec.creditor)
        if not all(who.sees(c) for c in creditors):
            return None
        return PurgeView(
            purge_id=p.purge_id, requested_by=p.requested_by, requested_at=p.requested_at, state=p.state,
            recording_ids=tuple(p.recording_ids), creditors=tuple(sorted(creditors)), approved_by=p.approved_by,
        )

    async def approve_purge(self, who: Principal, purge_id: str) -> PurgeView:
        vault = self._need_vault()
        p = await _vault_call(vault.get_purge(purge_id, _actor(who)))
        if await self._purge_view(who, p) is None:
            raise NotFound(f"no purge request {purge_id}", f"没有销毁申请 {purge_id}")
        done = await _vault_call(vault.approve_purge(purge_id, _actor(who)))
        return PurgeView(
            purge_id=done.purge_id, requested_by=done.requested_by, requested_at=done.requested_at, state=done.state,
            recording_ids=tuple(done.recording_ids), approved_by=done.approved_by,
        )

    # -- health ------------------------------------------------------------------------------
    async def health(self) -> Sequence[HealthItem]:
        """Store (a ping), vault (its blob directory), SIP listener and MQTT (whatever the
        composition root put on `services.sip` / `services.mqtt`: a `health()` returning
        (status, detail) or a bool; absent means not enabled), and the decision log's
        hash-chain verification, run in the background at most every AUDIT_EVERY_S and
        shown from its last result so no page waits for a full walk of the log."""
        if self._health is not None:
            return await self._health()
        items = [await self._store_health(), await self._vault_health()]
        for name in ("sip", "mqtt"):
            items.append(await _component_health(name, getattr(self.services, name, None)))
        items.append(await self._leader_health())
        items.append(self._audit_health())
        items.append(self._holidays_health())
        return items

    def _holidays_health(self) -> HealthItem:
        # The statutory days block without the year's arrangement: degraded, not down.
        from dialer.holidays_cli import arrangement_health

        report = arrangement_health(self.services.policies, self.services.clock.now())
        if report is None:
            return HealthItem("holidays", "off", "no creditor uses cn_holidays")
        if report["status"] == "ok":
            return HealthItem("holidays", "ok", f"arrangements known up to {report['arranged_until']}")
        return HealthItem("holidays", "degraded", f"{report['detail']} / {report['detail_zh']}")

    async def _leader_health(self) -> HealthItem:
        """Which instance runs the relay, sweeps, inbox and PBX user agent, and whether
        the store answering is the primary (a standby cannot take a decision)."""
        leadership = getattr(self.services, "leadership", None)
        if leadership is None:
            return HealthItem("leader", "off", "not enabled")
        try:
            view = await asyncio.wait_for(leadership.describe(), timeout=2.0)
        except Exception as exc:  # noqa: BLE001 - the strip reports, never raises
            return HealthItem("leader", "down", type(exc).__name__)
        store = {True: "store primary", False: "store is a standby", None: "store role unknown"}[view.get("store_primary")]
        if view.get("is_leader"):
            return HealthItem("leader", "ok" if view.get("store_primary") else "down", f"this instance leads; {store}")
        if view.get("leader"):
            return HealthItem("leader", "ok" if view.get("store_primary") else "down", f"led by {view['leader']}; {store}")
        return HealthItem("leader", "degraded", f"no leader elected yet; {store}")

    async def _store_health(self) -> HealthItem:
        try:
            await asyncio.wait_for(self.store.ping(), timeout=2.0)
            return HealthItem("store", "ok", "reachable")
        except Exception as exc:  # noqa: BLE001 - the strip reports, never raises
            return HealthItem("store", "down", type(exc).__name__)

    async def _vault_health(self) -> HealthItem:
        if self.vault is None:
            return HealthItem("vault", "off", "not enabled")
        check = getattr(self.services.gate, "recordings", None)
        if check is None or not hasattr(check, "available"):
            return HealthItem("vault", "ok", "enabled")
        try:
            ok = await asyncio.wait_for(check.available(), timeout=2.0)
        except Exception as exc:  # noqa: BLE001
            return HealthItem("vault", "down", type(exc).__name__)
        # The same check the gate makes before every dial: no recording, no call.
        if not ok:
            return HealthItem("vault", "down", "calls are refused")
        watch = getattr(self.services, "recording_watch", None)
        if watch is not None:
            try:
                missing = await asyncio.wait_for(watch.open_count(), timeout=2.0)
            except Exception as exc:  # noqa: BLE001
                return HealthItem("vault", "degraded", f"completeness unknown: {type(exc).__name__}")
            if missing:
                return HealthItem("vault", "degraded", f"{missing} connected calls without a recording")
        return HealthItem("vault", "ok", "recording possible")

    async def audit_verified(self) -> Any:
        """The running (or last) chain verification's report, awaited; None if none started."""
        return await self._audit_task if self._audit_task is not None else None

    async def _verify_chain(self) -> Any:
        return await _verify_off_loop(self.store)

    def _audit_health(self) -> HealthItem:
        now = time.monotonic()
        if self._audit_task is None or (self._audit_task.done() and now - self._audit_at > AUDIT_EVERY_S):
            self._audit_at = now
            self._audit_task = asyncio.create_task(self._verify_chain(), name="console-audit-verify")
        task = self._audit_task
        if not task.done():
            return self._audit_last or HealthItem("audit_chain", "checking", "verifying the decision log's hash chains")
        if task.cancelled() or task.exception() is not None:
            exc = None if task.cancelled() else task.exception()
            self._audit_last = HealthItem("audit_chain", "down", f"verification failed: {type(exc).__name__}")
        else:
            report = task.result()
            if report.ok:
                n = sum(report.chains.values())
                self._audit_last = HealthItem("audit_chain", "ok", f"{n} records verified")
            else:
                first = report.problems[0]
                self._audit_last = HealthItem(
                    "audit_chain", "down", f"{first.kind} at {first.chain} seq {first.seq}: {first.detail}"
                )
        return self._audit_last


def verify_main() -> None:
    """Child-process entry: read the store's config (JSON) on stdin, walk every chain,
    print the report as JSON. The URL may hold a password, so it never goes in argv."""
    import dataclasses
    import sys

    from adapters.db.store import SqlAlchemyCaseStore
    from dialer.audit import verify
    from dialer.config import StoreConfig
    from dialer.evidence import EvidenceKey

    doc = json.loads(sys.stdin.read())
    key = EvidenceKey(bytes.fromhex(doc.pop("evidence_key")), "parent process")
    cfg = StoreConfig(**doc)

    async def walk() -> Any:
        async with SqlAlchemyCaseStore(cfg, evidence=key) as own:
            return await verify(own)

    report = asyncio.run(walk())
    sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=False))
    del dataclasses


async def _verify_off_loop(store: Any) -> Any:
    """`dialer.audit.verify` in a child process: walking the whole log hashes every
    record in Python, which in this process (even on a thread, holding the GIL) would
    stall the pages for seconds on a large log."""
    import dataclasses
    import sys

    from dialer.audit import Problem, Report, verify

    if store.url in ("sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:"):
        return await verify(store)  # a private in-memory database: only this engine sees it
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from adapters.db.console_queries import verify_main; verify_main()",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(json.dumps({**dataclasses.asdict(store.config),
                                         "evidence_key": store.evidence.hand_over()}).encode()),
            timeout=AUDIT_TIMEOUT_S
        )
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"audit verification exited {proc.returncode}: {err.decode(errors='replace')[-300:]}")
    doc = json.loads(out)
    return Report(chains=doc["chains"], problems=[Problem(**p) for p in doc["problems"]])


async def _component_health(name: str, obj: Any) -> HealthItem:
    if obj is None:
        return HealthItem(name, "off", "not enabled")
    probe = getattr(obj, "health", None)
    if probe is None:
        return HealthItem(name, "ok", "running")
    try:
        got = probe()
        if asyncio.iscoroutine(got):
            got = await asyncio.wait_for(got, timeout=2.0)
    except Exception as exc:  # noqa: BLE001
        return HealthItem(name, "down", type(exc).__name__)
    if isinstance(got, tuple):
        return HealthItem(name, str(got[0]), str(got[1]) if len(got) > 1 else "")
    if isinstance(got, dict):  # e.g. the MQTT bus: {"ok": bool, "state": …, "last_error": …}
        ok = bool(got.get("ok", got.get("connected", False)))
        detail = str(got.get("state") or "") if ok else str(got.get("last_error") or got.get("state") or "")
        return HealthItem(name, "ok" if ok else "down", detail)
    return HealthItem(name, "ok" if got else "down", "")


# -- vault glue --------------------------------------------------------------------------------
def _actor(who: Principal) -> Any:
    from recordings.model import Actor

    return Actor(user=who.name, role=who.role, creditors=None if who.role == "admin" else frozenset(who.creditors))


def _as_e164(text: str | None) -> str | None:
    """A full number typed in the filter, as E.164 (the vault matches numbers by digest)."""
    if not text or "*" in text or len([c for c in text if c.isdigit()]) < 11:
        return None
    from policy import NumberFormatError, normalize_number

    try:
        return normalize_number(text, "CN")
    except NumberFormatError:
        return None


async def _vault_call(awaitable: Any) -> Any:
    from recordings import errors as ve

    try:
        return await awaitable
    except ve.NotFound as exc:
        raise NotFound(str(exc), str(exc)) from exc
    except ve.DualControlViolation as exc:
        raise Refused(
            "dual control: the person who requested a purge cannot approve it",
            "双人控制：申请人不能批准自己的销毁申请",
        ) from exc
    except ve.Forbidden as exc:
        raise Forbidden(str(exc), str(exc)) from exc
    except ve.VaultError as exc:
        raise Refused(str(exc), str(exc)) from exc


def _recording(r: Any, held: bool | None = None) -> RecordingView:
    return RecordingView(
        recording_id=r.recording_id, creditor=r.creditor or "", case_id=r.case_id,
        attempt_id=r.source_id if r.source_kind == "attempt" else None, agent_id=r.agent,
        number_masked=r.number_masked, started_at=r.started_at, duration_s=float(r.duration_s or 0),
        content_type=r.media_type, size=int(r.size), sha256=r.sha256, retain_until=r.retain_until,
        legal_hold=bool(r.hold) if held is None else held, state=r.state,
    )


def _slice(stream: Any) -> AudioSlice:
    import asyncio

    async def body() -> AsyncIterator[bytes]:
        # Decryption is CPU work on a file: one chunk at a time off the event loop.
        it = iter(stream.chunks)
        try:
            while True:
                chunk = await asyncio.to_thread(next, it, None)
                if chunk is None:
                    return
                yield chunk
        finally:
            stream.close()

    return AudioSlice(
        content_type=stream.recording.media_type, total_size=stream.total, start=stream.start, end=stream.end, body=body()
    )


def _destruction(e: Any) -> DestructionEntry:
    return DestructionEntry(
        seq=e.seq, recording_id=e.recording_id, creditor=e.creditor or "", case_id=e.case_id, sha256=e.sha256,
        retain_until=e.retain_until, operator=e.operator, approver=e.approver, destroyed_at=e.destroyed_at,
        method=e.method, entry_hash=e.entry_hash,
    )


def _outcome(o: Any) -> OutcomeView:
    return OutcomeView(
        disposition=o.disposition, result=o.result, note=mask_optional(o.note), recorded_at=o.logged_at,
        callback_at=o.callback_at, promise_amount=o.promise_amount, promise_date=o.promise_date,
    )


def _event_text(details: str) -> str:
    try:
        d = json.loads(details)
    except ValueError:
        return ""
    if not isinstance(d, dict):
        return ""
    # ids are noise on a case page; notes are shown on the timeline already
    bits = [f"{k}={v}" for k, v in sorted(d.items())
            if k not in ("note", "attempt_id", "decision_id") and not isinstance(v, (dict, list))]
    return mask_text(", ".join(bits))


__all__ = ["SqlAlchemyConsoleQueries"]


def _history_value(value: Any) -> str:
    """A history entry's old or new value as one line for the case page."""
    if value is None:
        return "—"
    if isinstance(value, list):
        return ", ".join(str(v) if not isinstance(v, dict) else _history_value(v) for v in value) or "[]"
    if isinstance(value, dict):
        return "; ".join(f"{k}={_history_value(v)}" for k, v in value.items())
    return str(value)
