"""What the parts of `SqlAlchemyCaseStore` share: its state, declared once, the
in-process write lock and the commit listeners."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.db.sqlite_writer import SqliteWriter, WriteGroup
from dialer.config import StoreConfig
from dialer.errors import StoreUnavailable
from dialer.evidence import EvidenceKey


class StoreBase:
    """The store's attributes (set by `SqlAlchemyCaseStore.__init__`) and the steps both
    write paths take: queueing for the write lock, telling the commit listeners."""

    config: StoreConfig
    events: bool
    evidence: EvidenceKey
    url: str
    is_sqlite: bool
    is_postgres: bool
    timeout: float
    _engine: AsyncEngine | None
    _write_lock: asyncio.Lock
    _memory: bool
    _writer: SqliteWriter | None
    _group: WriteGroup | None
    _lock_waiting: int
    _finishers: set[asyncio.Task[Any]]
    _commit_listeners: list[Callable[[], None]]

    def on_commit(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` after each write transaction committed (when its `write()`
        exits cleanly, so what it wrote is visible); never after a rollback. Returns the
        undo. The event relay is woken this way."""
        self._commit_listeners.append(listener)

        def remove() -> None:
            if listener in self._commit_listeners:
                self._commit_listeners.remove(listener)

        return remove

    def _committed(self) -> None:
        for listener in self._commit_listeners:
            listener()

    async def _acquire_write_lock(self) -> None:
        lock = self._write_lock
        if not lock.locked() and not self._lock_waiting:  # free, nobody queued: taken at once, no time-out to arm
            await lock.acquire()
            return
        self._lock_waiting += 1
        try:
            async with asyncio.timeout(self.timeout):
                await self._write_lock.acquire()
        except TimeoutError as exc:
            raise StoreUnavailable("timed out waiting for the store's write lock") from exc
        finally:
            self._lock_waiting -= 1
