"""The `DialLedger` contract, run on every implementation: the in-memory fake
(tests/fakes.py), SQLAlchemy Core on an in-memory SQLite, the SQLite file's driver SQL
(adapters/db/ledger_sqlite.py) and PostgreSQL (asyncpg, adapters/db/ledger_pg.py, with its locks).

Each answers the same questions the same way: what `gather` reads for a dial (the case
it means, the agent, the history, the pending authorisation) and what `apply` leaves
behind (the attempt, the chained decision, the event), and a unit that raises writes
nothing."""

from __future__ import annotations

import dataclasses
import gc
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, AsyncIterator
from zoneinfo import ZoneInfo

import pytest

from dialer.app import open_services
from dialer.config import build_config
from dialer.model import AttemptRecord, CaseInput, ContactRecord, DecisionRecord, Principal
from dialer.ports import DialOutcome, DialQuery
from gate_store_support import private_pg_database
from tests.fakes import FakeDialLedger

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI)
NUMBER = "+8613800000011"
OTHER = "+8613800000012"
AGENT = "col-k"


def _case(case_id: str, creditor: str, number: str, agent: str = AGENT) -> CaseInput:
    return CaseInput(
        creditor=creditor, case_id=case_id, debtor_name="合同测试", status="active",
        commission_start=date(2026, 11, 1), commission_end=date(2026, 12, 31), assigned_agent=agent,
        flags=frozenset(), amount_due="100.00", overdue_days=3, contacts=(ContactRecord(number, "self"),),
    )


CASES = [_case("K-1", "bank-k", NUMBER), _case("K-2", "bank-k", OTHER), _case("K-2", "bank-l", OTHER),
         _case("K-3", "bank-l", OTHER)]


class Backend:
    """One ledger under test, seeded with `CASES` and the agent."""

    def __init__(self, name: str, store: Any) -> None:
        self.name = name
        self.store = store

    def ledger(self) -> Any:
        return self.store.ledger()


@asynccontextmanager
async def _real(name: str, url: str, data_dir: Path) -> AsyncIterator[Backend]:
    cfg = build_config({"paths": {"data_dir": str(data_dir)}, "store": {"url": url}})
    async with open_services(cfg) as svc:
        async with svc.store.write() as uow:
            await uow.users.add(AGENT, "collector", frozenset({"bank-k", "bank-l"}), "hash-k", NOW)
            for c in CASES:
                await uow.cases.upsert(c, NOW)
        yield Backend(name, svc.store)


@asynccontextmanager
async def _fake() -> AsyncIterator[Backend]:
    fake = FakeDialLedger()
    fake.add_user(Principal(user_id=1, name=AGENT, role="collector", creditors=frozenset({"bank-k", "bank-l"})))
    from dialer.model import CaseRecord

    for pk, c in enumerate(CASES, start=1):
        fake.add_case(CaseRecord(
            pk=pk, creditor=c.creditor, case_id=c.case_id, debtor_name=c.debtor_name, status=c.status,
            commission_start=c.commission_start, commission_end=c.commission_end, assigned_agent=c.assigned_agent,
            flags=c.flags, amount_due=c.amount_due, overdue_days=c.overdue_days, follow_up_status="new",
            next_action_date=None, event_seq=0, contacts=c.contacts,
        ))
    yield Backend("fake", fake)


@pytest.fixture(params=["fake", "core-sqlite-memory", "sqlite-file", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "fake":
        async with _fake() as b:
            yield b
    elif request.param == "core-sqlite-memory":
        async with _real(request.param, "sqlite+aiosqlite://", tmp_path) as b:
            yield b
    elif request.param == "sqlite-file":
        async with _real(request.param, f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}", tmp_path) as b:
            assert b.store._writer is not None  # noqa: SLF001 - the driver-SQL ledger is the point
            yield b
    else:
        async with private_pg_database() as url, _real(request.param, url, tmp_path) as b:
            yield b


def _query(**kw: Any) -> DialQuery:
    base: dict[str, Any] = dict(number=NUMBER, agent_id=AGENT, at=NOW, since=NOW - timedelta(days=30),
                                history_limit=4)
    base.update(kw)
    return DialQuery(**base)


def _record(decision_id: str, creditor: str, case_id: str, attempt_id: str | None, allowed: bool = True) -> DecisionRecord:
    return DecisionRecord(
        decision_id=decision_id, kind="dial", at=NOW, evaluated_at=NOW, user=AGENT, agent_id=AGENT, channel="api",
        creditor=creditor, case_id=case_id, number_masked="138****0011", attempt_id=attempt_id, allowed=allowed,
        rule_id="allow" if allowed else "cap.number_hour", reason="", reason_zh="", next_allowed_at=None,
        policy_version="v", checks=(), inputs_used={},
    )


def _attempt(attempt_id: str, pk: int, case_id: str, decision_id: str, *, at: datetime = NOW,
             state: str = "authorised") -> AttemptRecord:
    return AttemptRecord(
        attempt_id=attempt_id, case_pk=pk, creditor="bank-k", case_id=case_id, number=NUMBER, relation="self",
        agent_id=AGENT, channel="api", state=state, at=at, valid_until=at + timedelta(seconds=120),
        decision_id=decision_id,
    )


async def test_gather_by_case_id_reads_the_case_the_agent_and_an_empty_history(backend: Backend) -> None:
    async with backend.ledger() as ledger:
        got = await ledger.gather(_query(case_id="K-1"))
    assert got.case is not None and (got.case.creditor, got.case.case_id) == ("bank-k", "K-1")
    assert [c.number for c in got.case.contacts] == [NUMBER]
    assert got.agent is not None and got.agent.name == AGENT and got.agent.creditors == {"bank-k", "bank-l"}
    assert got.history == () and got.appointments == () and got.pending is None


async def test_a_case_id_two_creditors_share_is_no_one_case_unless_the_scope_says_which(backend: Backend) -> None:
    async with backend.ledger() as ledger:
        both = await ledger.gather(_query(case_id="K-2", number=OTHER))
        one = await ledger.gather(_query(case_id="K-2", number=OTHER, creditors=frozenset({"bank-l"})))
        none = await ledger.gather(_query(case_id="K-2", number=OTHER, creditors=frozenset({"bank-x"})))
    assert both.case is None and sorted(c.creditor for c in both.cases) == ["bank-k", "bank-l"]
    assert one.case is not None and one.case.creditor == "bank-l"
    assert none.case is None and none.cases == ()


async def test_without_a_case_id_the_agents_active_cases_holding_the_number_are_the_candidates(backend: Backend) -> None:
    async with backend.ledger() as ledger:
        single = await ledger.gather(_query())
        several = await ledger.gather(_query(number=OTHER))
    assert single.case is not None and single.case.case_id == "K-1"
    assert several.case is None and sorted((c.creditor, c.case_id) for c in several.cases) == [
        ("bank-k", "K-2"), ("bank-l", "K-2"), ("bank-l", "K-3")]


async def test_an_applied_attempt_and_decision_are_read_back_by_the_next_gather_and_chained(backend: Backend) -> None:
    async with backend.ledger() as ledger:
        case = (await ledger.gather(_query(case_id="K-1"))).case
        first = await ledger.apply(DialOutcome(
            record=_record("d-1", "bank-k", "K-1", "a-1"), attempt=_attempt("a-1", case.pk, "K-1", "d-1"),
            event_type="dial.allowed", event_payload={"decision_id": "d-1"}, case_pk=case.pk,
        ))
    async with backend.ledger() as ledger:
        second = await ledger.apply(DialOutcome(record=_record("d-2", "bank-k", "K-1", None, allowed=False)))
        got = await ledger.gather(_query(case_id="K-1", at=NOW + timedelta(minutes=1)))
    assert (first.seq, second.seq) == (1, 2) and second.prev_hash == first.hash and first.hash
    assert [(h.kind, h.number, h.case_id) for h in got.history] == [("attempt", NUMBER, "K-1")]


async def test_a_live_authorisation_is_found_by_agent_and_number_and_consumed_once(backend: Backend) -> None:
    async with backend.ledger() as ledger:
        case = (await ledger.gather(_query(case_id="K-1"))).case
        await ledger.apply(DialOutcome(record=_record("d-3", "bank-k", "K-1", "a-3"),
                                       attempt=_attempt("a-3", case.pk, "K-1", "d-3")))
    later = NOW + timedelta(seconds=30)
    async with backend.ledger() as ledger:
        got = await ledger.gather(_query(at=later, consume=True))
        assert got.pending is not None and got.pending.attempt_id == "a-3"
        assert got.pending_record is not None and got.pending_record.decision_id == "d-3"
        assert got.case is not None and got.case.case_id == "K-1"
        kept = await ledger.apply(DialOutcome(
            record=got.pending_record, consumed=dataclasses.replace(got.pending, state="dialing"),
            event_type="attempt.state", event_payload={"state": "dialing"}, case_pk=got.case.pk, at=later,
        ))
        assert kept.decision_id == "d-3"
    async with backend.ledger() as ledger:
        again = await ledger.gather(_query(at=later, consume=True))
        by_id = await ledger.gather(_query(number="", agent_id="", at=later, attempt_id="a-3"))
    assert again.pending is None and again.case is not None
    assert by_id.pending is not None and by_id.pending.state == "dialing" and by_id.case is not None
    assert by_id.case.case_id == "K-1" and [h.kind for h in by_id.history] == ["attempt"]


async def test_a_unit_that_raises_writes_nothing(backend: Backend) -> None:
    with pytest.raises(RuntimeError):
        async with backend.ledger() as ledger:
            case = (await ledger.gather(_query(case_id="K-1"))).case
            await ledger.apply(DialOutcome(record=_record("d-4", "bank-k", "K-1", "a-4"),
                                           attempt=_attempt("a-4", case.pk, "K-1", "d-4")))
            raise RuntimeError("the use case failed after applying")
    async with backend.ledger() as ledger:
        got = await ledger.gather(_query(case_id="K-1", consume=True))
        first = await ledger.apply(DialOutcome(record=_record("d-5", "bank-k", "K-1", None, allowed=False)))
    assert got.history == () and got.pending is None
    assert first.seq == 1  # the rolled-back record took no place in the chain


async def test_a_request_identity_applied_is_replayed_by_the_next_gather_with_its_decision_and_attempt(
    backend: Backend,
) -> None:
    async with backend.ledger() as ledger:
        assert (await ledger.gather(_query(case_id="K-1", request="req-1"))).replay is None
        case = (await ledger.gather(_query(case_id="K-1", request="req-1"))).case
        await ledger.apply(DialOutcome(
            record=_record("d-6", "bank-k", "K-1", "a-6"), attempt=_attempt("a-6", case.pk, "K-1", "d-6"),
            case_pk=case.pk, request="req-1", request_digest="digest-1",
        ))
    async with backend.ledger() as ledger:
        got = await ledger.gather(_query(case_id="K-1", request="req-1"))
        other = await ledger.gather(_query(case_id="K-1", request="req-2"))
    assert got.replay is not None and got.case is None
    assert got.replay.record.decision_id == "d-6" and got.replay.record.seq == 1
    assert got.replay.attempt is not None and got.replay.attempt.attempt_id == "a-6"
    assert got.replay.digest == "digest-1"
    assert other.replay is None and other.case is not None


async def test_the_same_identity_applied_twice_keeps_one_decision_and_one_attempt(backend: Backend) -> None:
    from dialer.errors import RequestDecided

    # Two units that both gathered before either applied: the second must not write.
    async with backend.ledger() as ledger:
        case = (await ledger.gather(_query(case_id="K-1"))).case
        await ledger.apply(DialOutcome(
            record=_record("d-7", "bank-k", "K-1", "a-7"), attempt=_attempt("a-7", case.pk, "K-1", "d-7"),
            case_pk=case.pk, request="req-7", request_digest="digest-7",
        ))
    with pytest.raises(RequestDecided):
        async with backend.ledger() as ledger:
            await ledger.apply(DialOutcome(
                record=_record("d-8", "bank-k", "K-1", "a-8"), attempt=_attempt("a-8", case.pk, "K-1", "d-8"),
                case_pk=case.pk, request="req-7", request_digest="digest-7",
            ))
    async with backend.ledger() as ledger:
        got = await ledger.gather(_query(case_id="K-1", request="req-7"))
        history = await ledger.gather(_query(case_id="K-1"))
        nxt = await ledger.apply(DialOutcome(record=_record("d-9", "bank-k", "K-1", None, allowed=False)))
    assert got.replay is not None and got.replay.record.decision_id == "d-7"
    assert [h.kind for h in history.history] == ["attempt"]
    assert nxt.seq == 2  # d-8 took no place in the chain


async def test_a_blocked_decision_under_an_identity_replays_with_no_attempt(backend: Backend) -> None:
    async with backend.ledger() as ledger:
        await ledger.apply(DialOutcome(record=_record("d-10", "bank-k", "K-1", None, allowed=False),
                                       request="req-10", request_digest="digest-10"))
    async with backend.ledger() as ledger:
        got = await ledger.gather(_query(case_id="K-1", request="req-10"))
    assert got.replay is not None and got.replay.attempt is None and not got.replay.record.allowed


@pytest.mark.parametrize("engine", ["core-sqlite-memory", "sqlite-file", "postgresql"])
async def test_a_ledger_unit_leaves_no_reference_cycle_for_the_cycle_collector(engine: str, tmp_path: Path) -> None:
    # Every decision opens a unit: one left in a cycle is freed only by the cycle
    # collector, whose young collections then run an order of magnitude more often.
    async with AsyncExitStack() as stack:
        if engine == "postgresql":
            url = await stack.enter_async_context(private_pg_database())
        else:
            url = "sqlite+aiosqlite://" if engine == "core-sqlite-memory" else f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"
        backend = await stack.enter_async_context(_real(engine, url, tmp_path))
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds unreachable stays in gc.garbage
        try:
            for i in range(3):
                async with backend.ledger() as ledger:
                    got = await ledger.gather(_query(case_id="K-1"))
                    await ledger.apply(DialOutcome(record=_record(f"d-gc-{i}", "bank-k", "K-1", None, allowed=False)))
                assert got.case is not None
            del ledger, got
            gc.collect()
            left = sorted({type(o).__name__ for o in gc.garbage if "Ledger" in type(o).__name__
                           or "UnitOfWork" in type(o).__name__ or "Repository" in type(o).__name__})
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    assert left == []
