"""Waking the leader's outbox relay from any instance on one PostgreSQL.

The relay runs in one instance (the leader, dialer/leadership.py); events committed by
another instance would otherwise wait for the relay's slow poll. After its commits an
instance sends `NOTIFY dialgate_outbox` (at most one per `WAKE_AFTER_S`, on a connection
of its own, never inside the dial's transaction); the leader LISTENs on that channel
and wakes its relay. A lost notification costs only latency: the poll still publishes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from adapters.db.pg_listen import PgListener

log = structlog.get_logger("dialgate.outbox_notify")

CHANNEL = "dialgate_outbox"
WAKE_AFTER_S = 0.005  # commits this close together share one NOTIFY


class PgOutboxWaker:
    """`wake_soon()` after each commit (from the event loop); sends one NOTIFY for a burst."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PgOutboxWaker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    def wake_soon(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._notify(), name="outbox-notify")

    async def _notify(self) -> None:
        import asyncpg

        await asyncio.sleep(WAKE_AFTER_S)
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self._dsn, timeout=2.0)
            await self._conn.execute(f"NOTIFY {CHANNEL}", timeout=2.0)
        except Exception as exc:  # noqa: BLE001 - the relay's poll publishes anyway
            log.warning("outbox.notify_failed", error=f"{type(exc).__name__}: {exc}")
            if self._conn is not None:
                self._conn.terminate()
                self._conn = None


class PgOutboxListener(PgListener):
    """LISTENs on `CHANNEL` while entered and calls `on_wake` for each notification, and
    once each time it starts listening; reconnects after a lost connection."""

    def __init__(self, dsn: str, on_wake: Callable[[], None]) -> None:
        super().__init__(dsn, CHANNEL, on_wake)
