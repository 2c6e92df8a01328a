"""Which instance runs what must exist once: the outbox relay and MQTT bus, the
recordings sweep and inbox, the PBX user agent, the expiry of stale authorisations.

Two ways to decide, chosen by the store (dialer/bootstrap.py `open_leadership`):

* SQLite: the database is a file on one host, so the pool's file lock decides
  (dialer/workers.py): `StaticLeadership(True)` in the worker holding it, `False` in
  the others. A lone `dialgate serve` leads.
* PostgreSQL: any number of `dialgate serve` instances on any hosts share the
  database, so the database decides: `adapters.db.leader.PgAdvisoryLeadership` holds a
  session-level advisory lock on a connection of its own. When the leader dies its
  connection closes, the lock goes with it, and another instance takes the role.

`lead(leadership, enter, stop)` is the loop every instance runs: wait to be elected,
enter the once-only work, hold it until the term ends (or the service stops), leave it,
and campaign again.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from dialer.services import Campaign

log = structlog.get_logger("dialgate.leadership")


def instance_name(port: int | None = None) -> str:
    """This process as the other instances see it (PostgreSQL's `application_name`,
    at most 63 bytes): host, process id, HTTP port."""
    return f"dialgate/{socket.gethostname()[:32]}/{os.getpid()}" + (f"/{port}" if port else "")


class StaticLeadership:
    """A fixed answer: the SQLite pool's file lock was decided at start."""

    def __init__(self, leader: bool, instance: str) -> None:
        self.instance = instance
        self._leader = leader
        self._never = asyncio.Event()
        self.asked = asyncio.Event()
        self.asked.set()  # decided before start: no round to wait for

    @property
    def token(self) -> int | None:
        return 1 if self._leader else None

    def holds(self, token: int) -> bool:
        return self._leader and token == 1

    async def wait_elected(self) -> int:
        if not self._leader:
            await self._never.wait()
        return 1

    async def wait_lost(self, token: int) -> None:
        await self._never.wait()

    async def step_down(self, token: int) -> None:
        return None  # the file lock stays decided for the process's life

    async def describe(self) -> dict[str, Any]:
        return {"instance": self.instance, "is_leader": self._leader,
                "leader": self.instance if self._leader else None, "elected_by": "file-lock",
                # one SQLite file: no standby to tell apart
                "store_primary": True}


async def _first(*waits: Awaitable[Any]) -> None:
    """Return as soon as one of `waits` finished; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def lead(
    leadership: Campaign,
    enter: Callable[[int], AbstractAsyncContextManager[Any]],
    stop: asyncio.Event,
    *,
    retry_s: float = 1.0,
    tried: asyncio.Event | None = None,
) -> None:
    """Run `enter(token)` (the once-only work, as one async context) for each term this
    instance wins, until `stop` is set. The context is left as soon as the term ends:
    its tasks are cancelled there, before the lock's lease can run out on the server.
    `tried` is set once the first term's work was entered (or failed to be)."""
    while not stop.is_set():
        elected = asyncio.ensure_future(leadership.wait_elected())
        await _first(elected, stop.wait())
        if stop.is_set() or not elected.done() or elected.cancelled():
            return
        token = elected.result()
        log.info("leader.elected", instance=leadership.instance, token=token)
        try:
            async with enter(token):
                if tried is not None:
                    tried.set()
                await _first(leadership.wait_lost(token), stop.wait())
        except Exception as exc:  # noqa: BLE001 - a failing singleton must not kill the service
            log.error("leader.work_failed", instance=leadership.instance, token=token,
                      error=f"{type(exc).__name__}: {exc}")
            if tried is not None:
                tried.set()
            await leadership.step_down(token)  # let another instance try
            try:
                async with asyncio.timeout(retry_s):
                    await stop.wait()
            except TimeoutError:
                pass
        if not stop.is_set():
            log.warning("leader.stepped_down", instance=leadership.instance, token=token)
