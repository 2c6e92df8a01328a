"""A stop that commits while a dial is being decided wins: the dial either committed
before the stop (it was decided first) or saw the stop and was refused. Never an
allowed dial committed after the stop, decided on the case as it was before it.

Each test parks a dial between the ledger's read and its write (the ledger's `gather`
waits on an event), runs the stop, and lets the dial go on once the stop has either
committed or is seen waiting for the dial's locks. On the SQLite file and on
PostgreSQL."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from sqlalchemy import func, select

from adapters.db import tables
from adapters.db.leader import asyncpg_dsn
from dialer.attempt_state import AttemptStates, CallEvent
from dialer.auth import UserAdmin, UsersRevision
from dialer.case_actions import CaseAction, CaseActions
from dialer.errors import NoSuchCase, UnprocessableEntity
from dialer.imports import parse_cases_payload
from dialer.model import Principal
from dialer.ports import DialInputs, DialLedger, DialOutcome, DialQuery
from dialer.services import Services
from dialer.usecases import DialResult, LogOutcome, RequestDial
from tests.support.builders import one_case
from tests.support.pg import private_pg_database
from tests.support.serving import one_case_gate, store_url

SHANGHAI = ZoneInfo("Asia/Shanghai")
NUMBER = "13800000077"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Services, dict[str, Principal]]]:
    async with store_url(request.param, "race") as url, _serving(tmp_path, url) as s:
        yield s


# Regulation F's quiet period after a conversation (policy.presets "us-regf"): one
# connected call per case in seven days.
QUIET_AFTER_CONVERSATION = {
    "id": "cap.quiet_after_conversation", "scope": "case", "relations": ["self", "guarantor"],
    "count": "connected", "limit": 1, "window": "7 calendar_days",
}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def served_quiet(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Services, dict[str, Principal]]]:
    """`served` under a cap on connected calls."""
    async with store_url(request.param, "race") as url, \
            _serving(tmp_path, url, policy={"caps": [QUIET_AFTER_CONVERSATION]}) as s:
        yield s


def _serving(
    tmp_path: Path, url: str | None = None, policy: dict[str, Any] | None = None,
) -> AbstractAsyncContextManager[tuple[Services, dict[str, Principal]]]:
    return one_case_gate(
        tmp_path, url, creditor="bank-r", case_id="R-1", number=NUMBER,
        users=(("col-r", "collector"), ("col-q", "collector"), ("pbx-r", "pbx"), ("data-r", "data"),
               ("sup-r", "supervisor")),
        store={"timeout_s": 5.0}, config={"policy": policy or {}},
    )


class _ParkedLedger:
    """A ledger whose first `gather` waits, once it has read, until `go` is set."""

    def __init__(self, inner: DialLedger, read: asyncio.Event, go: asyncio.Event) -> None:
        self.inner, self.read, self.go = inner, read, go

    async def gather(self, query: DialQuery) -> DialInputs:
        inputs = await self.inner.gather(query)
        if not self.read.is_set():
            self.read.set()
            await self.go.wait()
        return inputs

    async def apply(self, outcome: DialOutcome) -> Any:
        return await self.inner.apply(outcome)


@asynccontextmanager
async def parked_dial(svc: Services) -> AsyncIterator[tuple[asyncio.Event, asyncio.Event]]:
    """While open, the next dial's ledger parks after its read: (read, go)."""
    store: Any = svc.store
    plain = store.ledger
    read, go = asyncio.Event(), asyncio.Event()

    @asynccontextmanager
    async def ledger(lock_keys: Sequence[str] = ()) -> AsyncIterator[Any]:
        async with plain(lock_keys) as inner:
            yield _ParkedLedger(inner, read, go) if not read.is_set() else inner

    store.ledger = ledger
    try:
        yield read, go
    finally:
        go.set()
        del store.ledger


async def done_or_waiting(svc: Services, task: asyncio.Task[Any]) -> bool:
    """Wait until `task` finished or is seen waiting for a lock the parked dial holds;
    True when it finished (the stop committed while the dial was parked)."""
    store: Any = svc.store
    conn = await asyncpg.connect(asyncpg_dsn(store.url)) if store.is_postgres else None
    try:
        async with asyncio.timeout(10):
            while not task.done():
                if conn is not None:
                    waiting = await conn.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock'")
                else:
                    waiting = store._lock_waiting
                if waiting:
                    return False
                await asyncio.sleep(0.005)  # polled: what is awaited is the condition, not the time
    finally:
        if conn is not None:
            await conn.close()
    return True


async def _attempts(svc: Services) -> int:
    async with svc.store.read() as uow:
        return int((await uow.conn.execute(select(func.count()).select_from(tables.attempts))).scalar_one())


async def dial_raced_by(
    svc: Services, cmd: RequestDial, stop: Callable[[], Awaitable[Any]],
) -> tuple[bool, DialResult, Any]:
    """`cmd` decided while `stop()` runs between the dial's read and its write: whether
    the stop committed while the dial was parked, the decision, and the stop's result."""
    async with parked_dial(svc) as (read, go):
        dial = asyncio.create_task(svc.gate.request_dial(cmd))
        await read.wait()
        stopping = asyncio.create_task(stop())
        stop_first = await done_or_waiting(svc, stopping)
        go.set()
        decided = await dial
        return stop_first, decided, await stopping


def _dial(users: dict[str, Principal], **kw: Any) -> RequestDial:
    base = dict(actor=users["col-r"], case_id="R-1", number=NUMBER, agent_id="col-r")
    return RequestDial(**{**base, **kw})


async def test_a_dispute_logged_while_a_dial_of_the_case_is_decided_is_not_overtaken_by_that_dial(
    served: Any,
) -> None:
    svc, users = served
    first = await svc.gate.request_dial(_dial(users))
    assert first.allowed and first.attempt is not None
    stop_first, second, (_, _, after) = await dial_raced_by(svc, _dial(users), lambda: svc.gate.log_outcome(LogOutcome(
        actor=users["col-r"], attempt_id=first.attempt.attempt_id, disposition="connected_self", result="dispute")))
    assert "dispute" in after.flags
    assert not (stop_first and second.allowed), (
        "a dial allowed on the case as read before the dispute committed after it")
    # and the stop holds for the next dial
    third = await svc.gate.request_dial(_dial(users))
    assert not third.allowed and third.decision.rule_id == "case.dispute"


async def test_an_agent_disabled_while_an_invite_for_them_is_decided_is_not_overtaken_by_that_invite(
    served: Any,
) -> None:
    svc, users = served
    invite = _dial(users, actor=users["pbx-r"], channel="sip", match_pending=True)
    stop_first, decided, _ = await dial_raced_by(
        svc, invite, lambda: UserAdmin(svc.store, svc.clock, UsersRevision(None)).set_disabled("col-r", True))
    assert not (stop_first and decided.allowed), (
        "an INVITE allowed for an agent read as enabled committed after the agent was disabled")
    with pytest.raises(UnprocessableEntity):  # the SIP gate answers an agent it cannot find with a 603
        await svc.gate.request_dial(invite)


async def test_a_collector_disabled_after_their_click_was_authenticated_is_refused_the_dial(served: Any) -> None:
    svc, users = served
    clicked = _dial(users)  # the request's principal, resolved before the disable
    await UserAdmin(svc.store, svc.clock, UsersRevision(None)).set_disabled("col-r", True)
    decided = await svc.gate.request_dial(clicked)
    assert not decided.allowed and decided.decision.rule_id == "agent.not_assigned"
    assert decided.attempt is None and await _attempts(svc) == 0


async def test_a_collector_whose_creditor_was_revoked_after_their_click_was_authenticated_is_refused_the_dial(
    served: Any,
) -> None:
    svc, users = served
    clicked = _dial(users)
    await UserAdmin(svc.store, svc.clock, UsersRevision(None)).revoke_creditor("col-r", "bank-r")
    with pytest.raises(NoSuchCase):  # out of the collector's scope now, as a request authenticated after it
        await svc.gate.request_dial(clicked)
    assert await _attempts(svc) == 0


@pytest.mark.postgres
async def test_an_invite_naming_no_case_whose_case_changed_while_it_waited_for_its_locks_holds_the_new_case_lock(
    tmp_path: Path,
) -> None:
    """An INVITE without a case id finds its case by agent and number, takes that case's
    lock and reads again. When the case it finds then is another one (an import moved
    the number's case to the agent meanwhile), that case's lock is taken as well before
    deciding, so a pause of it waits for the dial, or the dial sees the pause. (SQLite
    runs one writer at a time: nothing can change between the read and the lock.)"""
    async with private_pg_database("race") as url, _serving(tmp_path, url) as (svc, users):
        other = one_case("R-2", "bank-r", "col-q", NUMBER)
        other["commission_start"], other["commission_end"] = "2026-11-01", "2026-12-31"
        await svc.gate.import_cases(users["data-r"], parse_cases_payload({"cases": [other]}, svc.region_of))
        invite = _dial(users, actor=users["pbx-r"], channel="sip", match_pending=True, case_id="")
        importer = await asyncpg.connect(asyncpg_dsn(url))  # stands for an import holding R-1's lock
        try:
            tx = importer.transaction()
            await tx.start()
            await importer.execute("SELECT pg_advisory_xact_lock(hashtextextended('case:R-1', 0))")
            async with parked_dial(svc) as (read, go):
                dial = asyncio.create_task(svc.gate.request_dial(invite))
                assert not await done_or_waiting(svc, dial)  # it found R-1 and waits for its lock
                await importer.execute("UPDATE cases SET assigned_agent = 'col-q' WHERE case_id = 'R-1'")
                await importer.execute("UPDATE cases SET assigned_agent = 'col-r' WHERE case_id = 'R-2'")
                await tx.commit()
                await read.wait()
                stop = asyncio.create_task(CaseActions(svc.gate).run(CaseAction(
                    actor=users["sup-r"], case_id="R-2", action="pause", reason="bank's instruction")))
                stop_first = await done_or_waiting(svc, stop)
                go.set()
                decided = await dial
                await stop
        finally:
            await importer.close()
    assert decided.record.case_id == "R-2"
    assert not (stop_first and decided.allowed), "an INVITE allowed on R-2 as read before its pause committed after it"


async def test_a_dial_whose_read_outlasts_the_calling_window_is_decided_at_the_time_it_is_decided(served: Any) -> None:
    """The read can wait (for the case's lock, for the store's writer): a dial asked at
    20:59:59 whose inputs are in hand at 21:00:01 is decided at 21:00:01, not allowed on
    the time it was asked and committed after the window closed."""
    svc, users = served
    clock = svc.gate.clock
    clock.set(datetime(2026, 11, 24, 20, 59, 59, tzinfo=SHANGHAI))
    async with parked_dial(svc) as (read, go):
        dial = asyncio.create_task(svc.gate.request_dial(_dial(users)))
        await read.wait()
        clock.set(datetime(2026, 11, 24, 21, 0, 1, tzinfo=SHANGHAI))
        go.set()
        decided = await dial
    assert not decided.allowed and decided.decision.rule_id == "window.outside_hours"
    assert await _attempts(svc) == 0


async def test_a_call_answered_while_another_dial_of_the_case_is_decided_counts_against_that_dial(
    served_quiet: Any,
) -> None:
    svc, users = served_quiet
    first = await svc.gate.request_dial(_dial(users))
    assert first.allowed and first.attempt is not None
    stop_first, second, _ = await dial_raced_by(svc, _dial(users), lambda: AttemptStates(svc.store, svc.clock).apply_call_event(
        CallEvent(pbx_id="pbx-1", kind="answered", occurred_at=svc.clock.now(), attempt_id=first.attempt.attempt_id)))
    assert not (stop_first and second.allowed), (
        "a dial allowed on the case's connected calls as read before the answer committed after it")
    third = await svc.gate.request_dial(_dial(users))
    assert not third.allowed and third.decision.rule_id == "cap.quiet_after_conversation"



async def test_two_dials_by_one_agent_are_decided_side_by_side_not_one_after_the_other(served: Any) -> None:
    # The agent's lock is shared by dials (only a change to the user takes it plainly):
    # a PBX routing many calls under one agent must not queue them on it.
    svc, users = served
    other = one_case("R-2", "bank-r", "col-r", "13800000078")
    other["commission_start"], other["commission_end"] = "2026-11-01", "2026-12-31"
    await svc.gate.import_cases(users["data-r"], parse_cases_payload({"cases": [other]}, svc.region_of))
    async with parked_dial(svc) as (read, go):
        first = asyncio.create_task(svc.gate.request_dial(_dial(users)))
        await read.wait()
        second = asyncio.create_task(svc.gate.request_dial(_dial(users, case_id="R-2", number="13800000078")))
        # SQLite serialises every writer; on PostgreSQL the second dial finishes while the first is parked
        finished_alone = await done_or_waiting(svc, second)
        go.set()
        results = [await first, await second]
    assert all(r.allowed for r in results)
    store: Any = svc.store
    assert finished_alone or not store.is_postgres, "the second dial by the same agent waited for the first"
