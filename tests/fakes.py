"""Fakes of the application's ports, for unit tests of the use cases.

`FakeDialLedger` keeps cases, users, attempts, appointments, the decision chains and
the outbox in memory with the semantics the real ledgers have (the contract test,
tests/integration/store/test_dial_ledger_contract.py, runs the same checks on it and
on them): a unit's writes are visible to others only once it exits cleanly, an
exception writes nothing, `unavailable` makes every unit raise `StoreUnavailable` and
`fail_commit` the next one's commit.
It is also the `store` a `Gate` needs for its dial use cases (`ledger`).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence

from dialer.chain import NO_KEY, link_decision
from dialer.clock import FixedClock
from dialer.dial_resolution import consumable, pick
from dialer.errors import RequestDecided, StoreUnavailable
from dialer.model import AttemptRecord, CaseRecord, DecisionRecord, Principal
from dialer.ports import DialInputs, DialOutcome, DialQuery, DialReplay
from policy.model import Appointment, HistoryEvent

__all__ = ["FakeClock", "FakeDialLedger", "FakeDialUnit"]


class FakeClock(FixedClock):
    """A clock that says what it is told (`set`, `advance`)."""


@dataclass
class _State:
    cases: list[CaseRecord] = field(default_factory=list)
    users: dict[str, Principal] = field(default_factory=dict)
    attempts: dict[str, AttemptRecord] = field(default_factory=dict)
    appointments: list[tuple[int, Appointment]] = field(default_factory=list)
    decisions: list[DecisionRecord] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    # identity → decision and attempt ids, digest, when stored
    requests: dict[str, tuple[str, str | None, str, datetime]] = field(default_factory=dict)

    def copy(self) -> "_State":
        return _State(list(self.cases), dict(self.users), dict(self.attempts), list(self.appointments),
                      list(self.decisions), list(self.outbox), dict(self.requests))


class FakeDialLedger:
    """In-memory `CaseStore.ledger` (what the dial use cases use of the store)."""

    def __init__(self) -> None:
        self.state = _State()
        self.unavailable = False
        self.fail_commit = False  # the next unit's commit fails (the store went away mid-unit)
        self.units = 0  # units opened: how often a use case crossed the store
        self.lock_keys: list[tuple[str, ...]] = []
        # run once between a unit's first gather and its apply (a racing instance's turn)
        self.after_gather: Callable[[], Awaitable[Any]] | None = None

    # -- what a test arranges ---------------------------------------------------------
    def add_case(self, case: CaseRecord) -> CaseRecord:
        self.state.cases.append(case)
        return case

    def add_user(self, user: Principal) -> Principal:
        self.state.users[user.name] = user
        return user

    def add_attempt(self, attempt: AttemptRecord) -> AttemptRecord:
        self.state.attempts[attempt.attempt_id] = attempt
        return attempt

    def add_appointment(self, case_pk: int, appointment: Appointment) -> None:
        self.state.appointments.append((case_pk, appointment))

    # -- what a test reads back -------------------------------------------------------
    @property
    def attempts(self) -> list[AttemptRecord]:
        return list(self.state.attempts.values())

    @property
    def decisions(self) -> list[DecisionRecord]:
        return list(self.state.decisions)

    @property
    def outbox(self) -> list[dict[str, Any]]:
        return list(self.state.outbox)

    # -- the port ---------------------------------------------------------------------
    @asynccontextmanager
    async def ledger(self, lock_keys: Sequence[str] = ()) -> AsyncIterator["FakeDialUnit"]:
        if self.unavailable:
            raise StoreUnavailable("the fake store is unavailable")
        self.units += 1
        self.lock_keys.append(tuple(lock_keys))
        unit = FakeDialUnit(self.state.copy(), self)
        yield unit
        if self.fail_commit:
            self.fail_commit = False
            raise StoreUnavailable("the fake store went away before the commit")
        self.state = unit.state


class FakeDialUnit:
    """One write unit of `FakeDialLedger`: works on its own copy, kept on a clean exit."""

    def __init__(self, state: _State, ledger: FakeDialLedger | None = None) -> None:
        self.state = state
        self._ledger = ledger  # what others committed meanwhile: the identity's uniqueness

    async def gather(self, query: DialQuery) -> DialInputs:
        got = self._gather(query)
        hook = self._ledger.after_gather if self._ledger is not None else None
        if hook is not None:
            assert self._ledger is not None
            self._ledger.after_gather = None
            await hook()
        return got

    def _gather(self, query: DialQuery) -> DialInputs:
        s = self.state
        if query.request is not None and query.request in s.requests:
            decision_id, attempt_id, digest, stored_at = s.requests[query.request]
            record = next(d for d in s.decisions if d.decision_id == decision_id)
            attempt = s.attempts.get(attempt_id) if attempt_id else None
            return DialInputs((), None, None, None, None, (), (), DialReplay(record, attempt, digest, stored_at))
        pending = None
        if query.attempt_id:
            pending = s.attempts.get(query.attempt_id)
        elif query.consume:
            live = [a for a in s.attempts.values() if a.agent_id == query.agent_id and a.state == "authorised"
                    and a.number == query.number and a.valid_until >= query.at]
            pending = min(live, key=lambda a: a.at) if live else None
        if not query.number and pending is not None:
            query = query._replace(number=pending.number, agent_id=pending.agent_id)
        scope = query.creditors
        if query.case_id:
            cases = [c for c in s.cases if c.case_id == query.case_id and (scope is None or c.creditor in scope)]
        else:
            if pending is not None:
                cases = [c for c in s.cases if c.case_id == pending.case_id and c.creditor == pending.creditor]
            else:
                cases = [c for c in s.cases if c.status == "active" and c.assigned_agent == query.agent_id
                         and any(k.number == query.number for k in c.contacts)]
            if scope is not None:
                cases = [c for c in cases if c.creditor in scope]
        user = s.users.get(query.agent_id) if query.agent else None
        case = pick(query.case_id, cases, pending)
        if case is None:
            return DialInputs(tuple(cases), None, pending, None, user, (), ())
        if consumable(query, case, pending):
            assert pending is not None
            record = next((d for d in s.decisions if d.decision_id == pending.decision_id), None)
            if record is not None:
                return DialInputs(tuple(cases), case, pending, record, user, (), ())
        history: list[HistoryEvent] = []
        for a in sorted(s.attempts.values(), key=lambda a: a.at):
            if a.state == "released" or a.at < query.since:
                continue
            if a.number != query.number and a.case_pk != case.pk:
                continue
            cid = a.case_id if a.creditor == case.creditor else f"{a.creditor}/{a.case_id}"
            history.append(HistoryEvent(at=a.at, case_id=cid, number=a.number, relation=a.relation, kind="attempt"))
            if a.connected:
                history.append(HistoryEvent(at=a.at, case_id=cid, number=a.number, relation=a.relation,
                                            kind="connected"))
        appointments = tuple(ap for pk, ap in s.appointments if pk == case.pk and ap.at >= query.since)
        return DialInputs(tuple(cases), case, pending, None, user, tuple(history), appointments)

    async def apply(self, outcome: DialOutcome) -> DecisionRecord:
        s = self.state
        record = outcome.record
        if outcome.request is not None:
            committed = self._ledger.state.requests if self._ledger is not None else {}
            if outcome.request in s.requests or outcome.request in committed:
                raise RequestDecided(outcome.request)
            reserved = outcome.consumed or outcome.attempt
            s.requests[outcome.request] = (
                record.decision_id, reserved.attempt_id if reserved else None, outcome.request_digest,
                outcome.at or record.at)
        if outcome.consumed is not None:
            s.attempts[outcome.consumed.attempt_id] = outcome.consumed
        else:
            if outcome.attempt is not None:
                s.attempts[outcome.attempt.attempt_id] = outcome.attempt
            chain = record.creditor or "-"
            last = next((d for d in reversed(s.decisions) if (d.creditor or "-") == chain), None)
            head = (last.seq, last.hash, None) if last is not None else None
            record, _ = link_decision(record, chain, head, NO_KEY)
            s.decisions.append(record)
        if outcome.event_type is not None:
            s.outbox.append({
                "type": outcome.event_type, "creditor": record.creditor, "case_id": record.case_id,
                "case_pk": outcome.case_pk, "occurred_at": outcome.at or record.at, **(outcome.event_payload or {}),
            })
        return record


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


def at(text: str) -> datetime:
    """An aware datetime from ISO text with its offset."""
    value = datetime.fromisoformat(text)
    assert value.tzinfo is not None, "give the offset"
    return value
