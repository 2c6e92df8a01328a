"""Every call placed counts against the caps as the rules say, whatever the order and the
timing of what follows its decision: the consumption of a click-to-dial authorisation by
the SIP gate, the release by the user agent, the expiry sweep and PBX call events."""

from __future__ import annotations

import asyncio
import dataclasses
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from dialer.attempt_state import AttemptStates
from dialer.model import CallProgress, Principal
from dialer.services import Services
from dialer.usecases import RequestDial
from tests.support.pg import private_pg_database
from tests.support.serving import one_case_gate, store_url


@pytest.fixture(params=["sqlite", "postgresql"])
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Services, dict[str, Principal]]]:
    async with store_url(request.param, "counting") as url, _serving(tmp_path, url) as got:
        yield got


def _serving(tmp_path: Path, url: str | None = None) -> AbstractAsyncContextManager[tuple[Services, dict[str, Principal]]]:
    return one_case_gate(tmp_path, url, creditor="bank-s", case_id="S-1", number="13800000077",
                         users=(("col-s", "collector"), ("pbx-s", "pbx"), ("data-s", "data")),
                         store={"busy_timeout_ms": 200, "timeout_s": 2.0})


def _click(users: dict[str, Principal]) -> RequestDial:
    return RequestDial(actor=users["col-s"], case_id="S-1", number="13800000077", agent_id="col-s")


def _invite(users: dict[str, Principal], **kw: Any) -> RequestDial:
    return RequestDial(actor=users["pbx-s"], case_id="S-1", number="13800000077", agent_id="col-s", channel="sip",
                       match_pending=True, **kw)


async def test_a_click_placed_late_in_its_validity_counts_from_when_the_call_was_placed_not_from_the_click(
    served: Any,
) -> None:
    svc, users = served
    clock = svc.clock
    start = clock.now()
    clicked = await svc.gate.request_dial(_click(users))
    assert clicked.allowed and clicked.attempt is not None
    # The PBX places the click-to-dial near the end of its validity: the debtor's phone rings now.
    clock.set(start + timedelta(seconds=svc.config.gate.attempt_validity_s - 1))
    placed = await svc.gate.request_dial(_invite(users))
    assert placed.allowed and placed.reused
    clock.set(start + timedelta(minutes=30))
    second = await svc.gate.request_dial(_invite(users))
    assert second.allowed and not second.reused
    # An hour after the click, but not an hour after the first call was placed: two calls
    # within the last hour already, so a third is over the hourly cap.
    clock.set(start + timedelta(hours=1, seconds=30))
    third = await svc.gate.request_dial(_invite(users))
    assert not third.allowed and third.decision.rule_id == "cap.number_hourly"


# -- moves racing the SIP gate's consumption (PostgreSQL: units of different tasks or
# instances run side by side; SQLite runs every write alone) ----------------------------
class _PausedAfterRead:
    """The store, with one write unit held just after it has read the attempts it will
    move: the interleaving of a unit on another instance (or task) that reads, then
    writes, while the SIP gate consumes the same authorisation in between."""

    def __init__(self, store: Any, method: str) -> None:
        self._store = store
        self._method = method
        self.read = asyncio.Event()
        self.go = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @asynccontextmanager
    async def write(self, *args: Any, **kw: Any) -> AsyncIterator[Any]:
        async with self._store.write(*args, **kw) as uow:
            real = getattr(uow.attempts, self._method)

            async def read_then_wait(*a: Any, **k: Any) -> Any:
                got = await real(*a, **k)
                self.read.set()
                await self.go.wait()
                return got

            setattr(uow.attempts, self._method, read_then_wait)
            yield uow


@pytest.fixture
async def served_on_pg(tmp_path: Path) -> AsyncIterator[tuple[Services, dict[str, Principal]]]:
    async with private_pg_database("counting") as url, _serving(tmp_path, url) as got:
        yield got


async def _state(svc: Services, attempt_id: str) -> str:
    async with svc.store.read() as uow:
        found = await uow.attempts.get(attempt_id)
    assert found is not None
    return found.state


async def test_a_release_by_the_user_agent_racing_the_sip_gates_consumption_leaves_the_placed_call_counting(
    served_on_pg: Any,
) -> None:
    svc, users = served_on_pg
    clicked = await svc.gate.request_dial(_click(users))
    assert clicked.attempt is not None
    attempt = clicked.attempt
    # The user agent's ring of the agent goes unanswered while the agent's desk phone dials
    # the clicked number: the release reads the attempt still authorised...
    paused = _PausedAfterRead(svc.store, "get")
    states = AttemptStates(paused, svc.clock)  # type: ignore[arg-type]
    release = asyncio.create_task(states.record_progress(
        attempt, CallProgress(attempt.attempt_id, "ended", svc.clock.now(), cause="agent_no_answer"), release=True))
    await paused.read.wait()
    # ...the SIP gate consumes it and the PBX is sent to the debtor...
    placed = await svc.gate.request_dial(_invite(users, attempt_id=attempt.attempt_id))
    assert placed.allowed and placed.reused
    # ...then the release writes.
    paused.go.set()
    await release
    assert await _state(svc, attempt.attempt_id) == "dialing"


async def test_an_expiry_sweep_racing_the_sip_gates_consumption_does_not_let_a_later_release_uncount_the_call(
    served_on_pg: Any,
) -> None:
    svc, users = served_on_pg
    clock = svc.clock
    start = clock.now()
    clicked = await svc.gate.request_dial(_click(users))
    assert clicked.attempt is not None
    attempt = clicked.attempt
    # The sweep, on an instance whose clock is a second ahead, reads the authorisation as stale...
    paused = _PausedAfterRead(svc.store, "expired")
    sweeper = dataclasses.replace(svc.gate, store=paused, _background=set())
    clock.set(start + timedelta(seconds=svc.config.gate.attempt_validity_s + 1))
    sweep = asyncio.create_task(sweeper.expire_attempts())
    await paused.read.wait()
    # ...while the SIP gate, its clock a second behind, consumes it: the debtor's phone rings...
    clock.set(start + timedelta(seconds=svc.config.gate.attempt_validity_s))
    placed = await svc.gate.request_dial(_invite(users, attempt_id=attempt.attempt_id))
    assert placed.allowed and placed.reused
    paused.go.set()
    await sweep
    # ...and the user agent, whose ring of the agent went unanswered, releases what it can.
    states = AttemptStates(svc.store, clock)
    await states.record_progress(
        attempt, CallProgress(attempt.attempt_id, "ended", clock.now(), cause="agent_no_answer"), release=True)
    assert await _state(svc, attempt.attempt_id) == "dialing"
