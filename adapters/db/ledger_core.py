"""`CoreDialLedger`: the `DialLedger` over the repositories' SQLAlchemy Core statements
(PostgreSQL, and SQLite outside the file writer: in-memory databases, tests).

`gather` reads the candidate cases, the pending authorisation, the agent, and for the
one case the query means (`dialer.dial_resolution.pick`) its history and appointments;
`apply` writes the attempt (new or consumed), the decision's link in its creditor's
chain and the outbox event. Both run inside the unit of work the store opened.

On PostgreSQL a dial that names no case learns its case only here: the case's and the
number's locks are then taken (in sorted order, as the store takes them) and the
candidates read again under them, until every case found is one whose lock is held,
so two dials of one case or number never decide on the same history at once, and a
change to the case (a pause, an import) commits before the read or after the decision.

A query with a request identity is answered from its `dial_requests` row when there is
one (read after the locks, so a retry waiting behind the first decision sees it); `apply`
inserts that row first, before the attempt and the chain link, with ON CONFLICT DO
NOTHING: of two units racing on one identity (two instances, the row not yet visible to
either's gather) the second's insert waits for the first's commit and then finds the
row, and the unit raises `RequestDecided` so the use case rolls back and replays.
"""

from __future__ import annotations

import weakref
from datetime import datetime
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from adapters.db import tables as t
from dialer.dial_resolution import consumable, pick
from dialer.errors import RequestDecided
from dialer.model import AttemptRecord, CaseRecord, DecisionRecord
from dialer.ports import DialInputs, DialOutcome, DialQuery, DialReplay, shared_key

if TYPE_CHECKING:
    from adapters.db.unit_of_work import SqlUnitOfWork

LockFn = Callable[[list[str]], Awaitable[None]]
_NOTHING: tuple[Any, ...] = ()


def agent_key(query: DialQuery) -> set[str]:
    """The lock of the agent whose user the query reads, taken shared (an agent's dials
    run side by side): a change to that user (disabled, a creditor revoked) takes it
    plainly, so it commits before the read or after the decision. Such a change takes no
    other key, so no order of keys can deadlock on it."""
    return {shared_key(f"agent:{query.agent_id}")} if query.agent and query.agent_id else set()


class CoreDialLedger:
    def __init__(self, uow: "SqlUnitOfWork", held: frozenset[str] = frozenset(), lock: LockFn | None = None) -> None:
        # Weak: the unit holds this ledger's `gather` and `apply`, and a strong reference
        # back would leave every unit a reference cycle for the cycle collector.
        self.uow: "SqlUnitOfWork" = weakref.proxy(uow)
        self._held = set(held)
        self._lock = lock  # PostgreSQL: takes advisory locks inside the transaction

    async def gather(self, query: DialQuery) -> DialInputs:
        uow = self.uow
        pending = await self._pending(query)
        if not query.number and pending is not None:  # a recheck: the attempt's number and agent
            query = query._replace(number=pending.number, agent_id=pending.agent_id)
        cases = await self._candidates(query, pending)
        while self._lock is not None and cases:
            missing = sorted(({f"case:{c.case_id}" for c in cases} | {f"number:{query.number}"}
                              | agent_key(query)) - self._held)
            if not missing:
                break
            await self._lock(missing)
            self._held.update(missing)
            # what was read before the lock may have changed meanwhile, down to which
            # cases are found: read again until every case found is one whose lock is held
            pending = await self._pending(query)
            cases = await self._candidates(query, pending)
        if query.request is not None:
            replay = await self._replay(query.request)
            if replay is not None:
                return DialInputs((), None, None, None, None, _NOTHING, _NOTHING, replay)
        case = pick(query.case_id, cases, pending)
        agent = await uow.users.by_name(query.agent_id) if query.agent else None
        if case is None:
            return DialInputs(tuple(cases), None, pending, None, agent, _NOTHING, _NOTHING)
        if consumable(query, case, pending):
            assert pending is not None
            record = (await uow.decisions.get_many([pending.decision_id])).get(pending.decision_id)
            if record is not None:
                return DialInputs(tuple(cases), case, pending, record, agent, _NOTHING, _NOTHING)
        history = await uow.attempts.history(
            query.number, case.pk, case.creditor, query.since, query.history_limit, query.at
        )
        appointments = await uow.cases.appointments(case.pk, query.since)
        return DialInputs(tuple(cases), case, pending, None, agent, tuple(history), tuple(appointments))

    async def _pending(self, query: DialQuery) -> AttemptRecord | None:
        if query.attempt_id:
            return await self.uow.attempts.get(query.attempt_id)
        if query.consume:
            return await self.uow.attempts.find_pending(query.agent_id, query.number, query.at)
        return None

    async def _candidates(self, query: DialQuery, pending: AttemptRecord | None) -> list[CaseRecord]:
        cases = self.uow.cases
        scope = query.creditors
        if query.case_id:
            if scope is not None and not scope:
                return []
            return await cases.find(query.case_id, scope)
        if pending is not None:
            found = await cases.find(pending.case_id, frozenset({pending.creditor}))
        else:
            found = await cases.active_for_agent(query.agent_id, query.number)
        if scope is not None:
            found = [c for c in found if c.creditor in scope]
        return found

    async def _replay(self, identity: str) -> DialReplay | None:
        found = await self._request_row(identity)
        if found is None:
            return None
        decision_id, attempt_id, digest, stored_at = found
        record = (await self.uow.decisions.get_many([decision_id])).get(decision_id)
        if record is None:  # cannot happen while the row and its decision are written together
            return None
        attempt = await self.uow.attempts.get(attempt_id) if attempt_id else None
        return DialReplay(record, attempt, digest, stored_at)

    async def _request_row(self, identity: str) -> tuple[str, str | None, str, datetime] | None:
        r = t.dial_requests.c
        row = (await self.uow.conn.execute(
            select(r.decision_id, r.attempt_id, r.request_digest, r.created_at).where(r.identity == identity)
        )).first()
        return (row[0], row[1], row[2], row[3]) if row is not None else None

    async def _add_request(self, outcome: DialOutcome, attempt_id: str | None) -> bool:
        """Insert the identity's row; False when another unit holds it."""
        conn = self.uow.conn
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(t.dial_requests).values(
            identity=outcome.request, decision_id=outcome.record.decision_id, attempt_id=attempt_id,
            request_digest=outcome.request_digest, created_at=outcome.at or outcome.record.at,
        ).on_conflict_do_nothing(index_elements=["identity"])
        return (await conn.execute(stmt)).rowcount == 1

    async def apply(self, outcome: DialOutcome) -> DecisionRecord:
        uow = self.uow
        record = outcome.record
        consumed = outcome.consumed
        if outcome.request is not None:
            attempt = consumed or outcome.attempt
            if not await self._add_request(outcome, attempt.attempt_id if attempt else None):
                raise RequestDecided(outcome.request)
        if consumed is not None:
            await uow.attempts.set_state(consumed.attempt_id, consumed.state, at=consumed.at)
        elif outcome.attempt is not None:
            await uow.attempts.add(outcome.attempt)
        if consumed is None:
            record = await uow.decisions.append(record)
        if outcome.event_type is not None:
            await uow.outbox.add(
                outcome.event_type, creditor=record.creditor, case_pk=outcome.case_pk, case_id=record.case_id,
                occurred_at=outcome.at or record.at, payload=outcome.event_payload or {},
            )
        return record
