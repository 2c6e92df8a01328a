"""LISTEN on one PostgreSQL channel, on a connection of its own, while entered.

What the outbox relay's wake (`outbox_notify`) and the token caches' revocation notices
(`users_notify`) share: connect, LISTEN, call `on_notify` once listening and for each
notification; notice a lost connection (asyncpg's termination callback, and a periodic
`SELECT 1` for a server that stopped answering), call `on_lost`, and listen again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("dialgate.pg_listen")

RETRY_S = 1.0


class PgListener:
    """LISTENs on `channel` while entered. `on_notify()` runs once each time listening
    starts (whatever was sent while nobody listened is lost) and for each notification;
    `on_lost()` as soon as a connection that was listening is gone. `heartbeat_s`: how
    long a silently dead connection may go unnoticed, at most (plus its probe's timeout)."""

    def __init__(self, dsn: str, channel: str, on_notify: Callable[[], None], *,
                 on_lost: Callable[[], None] | None = None, heartbeat_s: float = 5.0,
                 probe_timeout_s: float = 2.0) -> None:
        self._dsn = dsn
        self._channel = channel
        self._on_notify = on_notify
        self._on_lost = on_lost
        self._heartbeat_s = heartbeat_s
        self._probe_timeout_s = probe_timeout_s
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    async def __aenter__(self) -> PgListener:
        self._task = asyncio.create_task(self._run(), name=f"listen-{self._channel}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        import asyncpg

        while True:
            conn: Any = None
            try:
                # Named, so an operator (or a test) can tell it apart in pg_stat_activity.
                conn = await asyncpg.connect(self._dsn, timeout=2.0,
                                             server_settings={"application_name": f"dialgate listen {self._channel}"})
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c: lost.set())
                await conn.add_listener(self._channel, lambda *_: self._on_notify())
                self.listening.set()
                self._on_notify()  # whatever was committed while nobody listened
                while not lost.is_set():
                    try:
                        async with asyncio.timeout(self._heartbeat_s):
                            await lost.wait()
                    except TimeoutError:
                        await conn.execute("SELECT 1", timeout=self._probe_timeout_s)  # notices a dead server
                log.warning("pg.listen_lost", channel=self._channel)
            except Exception as exc:  # noqa: BLE001 - keep listening; the caller's fallback covers the gap
                log.warning("pg.listen_failed", channel=self._channel, error=f"{type(exc).__name__}: {exc}")
            finally:
                if conn is not None:
                    conn.terminate()
                if self.listening.is_set():
                    self.listening.clear()
                    if self._on_lost is not None:
                        self._on_lost()
            await asyncio.sleep(RETRY_S)
