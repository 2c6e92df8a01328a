"""An instance's commits wake the leader's relay through PostgreSQL: NOTIFY from the
waker, LISTEN in the leader; a burst of commits shares one notification, and the
listener comes back after its connection is killed."""

from __future__ import annotations

import asyncio

from adapters.db.leader import asyncpg_dsn
from adapters.db.outbox_notify import PgOutboxListener, PgOutboxWaker


async def _woken(count: list[int], changed: asyncio.Event, at_least: int) -> None:
    async with asyncio.timeout(10):
        while count[0] < at_least:
            changed.clear()
            await changed.wait()


async def test_a_commit_on_one_instance_wakes_the_listener_of_another(pg_url: str) -> None:
    import asyncpg

    dsn = asyncpg_dsn(pg_url)
    count, changed = [0], asyncio.Event()

    def on_wake() -> None:
        count[0] += 1
        changed.set()

    async with PgOutboxListener(dsn, on_wake), PgOutboxWaker(dsn) as waker:
        await _woken(count, changed, 1)  # the listener's own wake once it listens
        for _ in range(50):  # one burst of commits
            waker.wake_soon()
        await _woken(count, changed, 2)
        await asyncio.sleep(0.2)
        assert count[0] == 2  # the burst was one NOTIFY

        # The listener's connection dies (a server restart, a failover): it listens again.
        admin = await asyncpg.connect(dsn)
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid() AND datname = current_database()")
            assert killed == 1
        finally:
            await admin.close()
        await _woken(count, changed, 3)  # relistened, and woke once for what it may have missed
        waker.wake_soon()
        await _woken(count, changed, 4)
