"""`lead`: the once-only work runs for each term this instance wins, stops when the term
ends, and a failing start gives the term up instead of killing the service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from adapters.db.leader import PgAdvisoryLeadership
from dialer.leadership import StaticLeadership, lead


class FakeLeadership:
    """Terms granted and revoked by the test."""

    instance = "fake/1"

    def __init__(self) -> None:
        self.current: int | None = None
        self.changed = asyncio.Condition()
        self.stepped_down: list[int] = []

    async def grant(self, token: int) -> None:
        async with self.changed:
            self.current = token
            self.changed.notify_all()

    async def revoke(self) -> None:
        async with self.changed:
            self.current = None
            self.changed.notify_all()

    @property
    def token(self) -> int | None:
        return self.current

    def holds(self, token: int) -> bool:
        return self.current == token

    async def wait_elected(self) -> int:
        async with self.changed:
            await self.changed.wait_for(lambda: self.current is not None)
            assert self.current is not None
            return self.current

    async def wait_lost(self, token: int) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.current != token)

    async def step_down(self, token: int) -> None:
        self.stepped_down.append(token)
        await self.revoke()


class Work:
    """Records when each term's work starts and ends."""

    def __init__(self, fail_first: bool = False) -> None:
        self.log: list[tuple[str, int]] = []
        self.fail_first = fail_first
        self.events = asyncio.Queue[tuple[str, int]]()

    def __call__(self, token: int) -> Any:
        @asynccontextmanager
        async def enter() -> AsyncIterator[None]:
            if self.fail_first:
                self.fail_first = False
                await self.events.put(("failed", token))
                raise RuntimeError("broker refused the client id")
            await self.events.put(("start", token))
            try:
                yield
            finally:
                await self.events.put(("stop", token))

        return enter()


async def _next(work: Work) -> tuple[str, int]:
    async with asyncio.timeout(5):
        return await work.events.get()


async def test_work_runs_for_each_term_won_and_stops_when_the_term_ends() -> None:
    leadership, work, stop = FakeLeadership(), Work(), asyncio.Event()
    task = asyncio.create_task(lead(leadership, work, stop))
    await asyncio.sleep(0)
    assert work.events.empty()  # a follower runs nothing
    await leadership.grant(1)
    assert await _next(work) == ("start", 1)
    await leadership.revoke()
    assert await _next(work) == ("stop", 1)
    await leadership.grant(2)
    assert await _next(work) == ("start", 2)
    stop.set()
    assert await _next(work) == ("stop", 2)
    async with asyncio.timeout(5):
        await task


async def test_work_that_fails_to_start_gives_the_term_up_and_is_tried_again_next_term() -> None:
    leadership, work, stop = FakeLeadership(), Work(fail_first=True), asyncio.Event()
    task = asyncio.create_task(lead(leadership, work, stop, retry_s=0.01))
    await leadership.grant(1)
    assert await _next(work) == ("failed", 1)
    await asyncio.sleep(0.05)
    assert leadership.stepped_down == [1] and leadership.current is None
    await leadership.grant(2)
    assert await _next(work) == ("start", 2)
    stop.set()
    assert await _next(work) == ("stop", 2)
    async with asyncio.timeout(5):
        await task


async def test_a_follower_on_sqlite_never_runs_the_work_and_the_lock_holder_leads() -> None:
    follower, leader = StaticLeadership(False, "a"), StaticLeadership(True, "b")
    assert follower.token is None and not follower.holds(1)
    assert leader.token == 1 and leader.holds(1)
    assert (await leader.describe())["leader"] == "b"
    assert (await follower.describe())["is_leader"] is False
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await follower.wait_elected()


def test_a_term_is_over_here_before_the_server_can_free_the_lock() -> None:
    now = [100.0]
    lead_ = PgAdvisoryLeadership("postgresql+asyncpg://u:p@127.0.0.1:1/db", "x", monotonic=lambda: now[0],
                                 heartbeat_s=1, heartbeat_timeout_s=2, lease_s=8, margin_s=3)
    lead_._token, lead_._last_ok = 1, 100.0  # a heartbeat answered at t=100
    assert lead_.holds(1) and lead_.token == 1
    now[0] = 104.9  # frozen, no heartbeat since: still inside lease - margin
    assert lead_.holds(1)
    now[0] = 105.0  # the server frees the lock at 108 at the earliest
    assert not lead_.holds(1) and lead_.token is None


def test_timings_that_would_let_two_leaders_overlap_are_refused() -> None:
    with pytest.raises(ValueError, match="before the lease"):
        PgAdvisoryLeadership("postgresql+asyncpg://u:p@h/db", "x", heartbeat_s=3, heartbeat_timeout_s=3,
                             lease_s=8, margin_s=3)


def test_a_multi_host_store_url_becomes_one_asyncpg_dsn_naming_every_host() -> None:
    from adapters.db.leader import asyncpg_dsn

    assert asyncpg_dsn("postgresql+asyncpg://gate:p%40ss@/dialgate?host=10.0.0.1:5432&host=10.0.0.2:5433"
                       "&target_session_attrs=read-write") == (
        "postgresql://gate:p%40ss@10.0.0.1:5432,10.0.0.2:5433/dialgate?target_session_attrs=read-write")
    assert asyncpg_dsn("postgresql+asyncpg://gate:pw@db:5432/dialgate") == "postgresql://gate:pw@db:5432/dialgate"
