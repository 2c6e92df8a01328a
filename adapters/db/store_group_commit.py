"""The SQLite file's group commit as the store runs it (see `adapters.db.store`):
units of work that queue in the same turn of the event loop share one transaction,
each in its own SAVEPOINT, and nobody is answered before the COMMIT is durable."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import asynccontextmanager
from typing import AsyncIterator

from sqlalchemy.exc import SQLAlchemyError

from adapters.db.sqlite_writer import (
    SqliteWriter, SyncConnShim, WriteGroup, WriterFileLock, in_thread, resolve_future, shielded, wait_out,
)
from adapters.db.store_base import StoreBase
from adapters.db.unit_of_work import SqlUnitOfWork, store_error
from dialer.errors import StoreUnavailable


class SqliteGroupCommit(StoreBase):
    """The write path of a SQLite file database: `_sqlite_write` and the steps that
    commit, close or abort a group."""

    @asynccontextmanager
    async def _sqlite_write(self, announce: bool = True) -> AsyncIterator["SqlUnitOfWork"]:
        """Group commit: units of work that queue while one runs join its transaction.

        Each unit of work still runs alone (the write lock) and inside its own SAVEPOINT
        (all but the group's first), so a failing one undoes only itself. When a unit
        finishes and nobody else is queued, the group commits at once; otherwise it
        queues behind them and the first member back commits everybody. No member's
        `write()` returns before the group's COMMIT (one fsync for the group) is done,
        and if that COMMIT fails every member gets `StoreUnavailable` (fail closed).
        """
        writer = self._writer
        assert writer is not None
        await self._acquire_write_lock()
        group: WriteGroup | None = None
        joined = committed_here = False
        try:
            if self._group is None:
                await self._take_file_lock(writer.file_lock)
                try:
                    trans = writer.begin_now()
                    if trans is None:
                        trans = await in_thread(writer.begin)
                except asyncio.CancelledError:
                    # The thread finished BEGIN IMMEDIATE before `in_thread` re-raised: the
                    # transaction (and SQLite's write lock) is ours to roll back.
                    writer.abandon()
                    raise
                except (sqlite3.Error, SQLAlchemyError, OSError) as exc:
                    writer.reset()
                    raise StoreUnavailable(f"cannot open a write transaction: {type(exc).__name__}: {exc}") from exc
                except BaseException:
                    writer.abandon()
                    raise
                self._group = WriteGroup(trans)
            group = self._group
            assert writer.conn is not None
            try:
                # Raw SAVEPOINT on the driver connection: SQLAlchemy's begin_nested costs
                # more than the unit's statements; the name is ours alone.
                savepoint = writer.conn.connection.dbapi_connection if group.members else None
                if savepoint is not None:
                    savepoint.execute("SAVEPOINT dialgate_unit")
            except (sqlite3.Error, SQLAlchemyError, OSError) as exc:
                self._abort_group(group, exc)
                raise StoreUnavailable(f"store error: {type(exc).__name__}: {exc}") from exc
            uow = SqlUnitOfWork(
                SyncConnShim(writer.conn, group.memo), False,  # type: ignore[arg-type]
                raw=writer.conn.connection.dbapi_connection,  # type: ignore[arg-type]  # SQLAlchemy types it as any DBAPI connection; the writer's is pysqlite's
                events=self.events, memo=group.memo,
                evidence=self.evidence,
            )
            try:
                yield uow
                if savepoint is not None:
                    savepoint.execute("RELEASE dialgate_unit")
            except BaseException as exc:
                group.memo.forget()  # the unit's writes are undone; what it memoised may be wrong
                try:
                    if savepoint is not None:
                        savepoint.execute("ROLLBACK TO dialgate_unit")
                        savepoint.execute("RELEASE dialgate_unit")
                    else:  # the group's first unit: nothing else to keep
                        self._abort_group(group, exc)
                except (sqlite3.Error, SQLAlchemyError, OSError):
                    self._abort_group(group, exc)
                if isinstance(exc, (sqlite3.Error, SQLAlchemyError, OSError)):
                    raise store_error(exc) from exc
                raise
            group.members += 1
            joined = True
            if not self._lock_waiting:
                if writer.wal:
                    # Units that run later in this turn of the event loop join the group;
                    # it commits when the turn is over (`_commit_at_turn_end`).
                    if not group.commit_soon:
                        group.commit_soon = True
                        asyncio.get_running_loop().call_soon(self._commit_at_turn_end, group)
                else:
                    await self._finish_group(group)  # waits its COMMIT out even if we are cancelled
                committed_here = True
        finally:
            if group is not None and not group.closed and not joined:
                # A failed unit: commit the members before it once the queue has run.
                if self._lock_waiting:
                    task = asyncio.ensure_future(self._finish_group_locked(group))
                    self._finishers.add(task)
                    task.add_done_callback(self._finishers.discard)
                else:
                    await shielded(self._finish_group(group))
            self._write_lock.release()
        # Others were queued: they joined this group. Its first member queues once more for
        # the lock and, back at the head, commits everybody; the others only wait for that.
        if not committed_here and group.members == 1:
            await shielded(self._finish_group_locked(group))
        await group.settled()  # committed, and on stable storage
        group.check()
        if announce:
            self._committed()

    async def _take_file_lock(self, lock: WriterFileLock) -> None:
        """The cross-process writer lock for a new group (see `WriterFileLock`): at once
        when free; else waited for in a worker thread, for at most `[store] timeout_s`."""
        if lock.try_acquire():
            return
        if lock.stuck:
            raise StoreUnavailable("another process has held the database's write lock too long")
        waiting = asyncio.get_running_loop().run_in_executor(None, lock.acquire_blocking)
        try:
            async with asyncio.timeout(self.timeout):
                got = await asyncio.shield(waiting)
        except TimeoutError as exc:
            if lock.abandon():
                raise StoreUnavailable("timed out waiting for another process's write transaction") from exc
            return  # granted just as the time ran out: ours
        except asyncio.CancelledError:
            if not lock.abandon():
                lock.release()  # granted just as we were cancelled
            raise
        if not got:  # an earlier abandoned wait took and let go of the lock: we do not hold it
            raise StoreUnavailable("the database's write lock was given up")

    async def _finish_group_locked(self, group: "WriteGroup") -> None:
        if group.closed:
            return
        self._lock_waiting += 1
        try:
            await self._write_lock.acquire()
        finally:
            self._lock_waiting -= 1
        try:
            await self._finish_group(group)
        finally:
            self._write_lock.release()

    async def _finish_group(self, group: "WriteGroup") -> None:
        """COMMIT (or roll back an empty) group; the write lock is held."""
        if group.closed:
            return
        writer = self._writer
        assert writer is not None
        if self._close_empty(group, writer):
            return
        loop = asyncio.get_running_loop()
        flush = writer.durable_by_fsync
        committed: asyncio.Future[None] = loop.create_future()

        def work() -> None:  # on the writer's thread: COMMIT, queue the WAL flush, say so
            try:
                writer.commit(group.trans)
            except BaseException as exc:  # noqa: BLE001 - reported to the awaiting side
                loop.call_soon_threadsafe(resolve_future, committed, exc)
                return
            if flush:
                writer.flush_then(loop, group)  # settles the group when the WAL is on disk
            loop.call_soon_threadsafe(resolve_future, committed, None)

        try:
            writer.run(work)
            await wait_out(committed)
        except (SQLAlchemyError, OSError, RuntimeError) as exc:
            # SQLite may keep the transaction open after a failed COMMIT while SQLAlchemy
            # considers it over: start from a fresh connection (this drops the transaction).
            writer.reset()
            group.error = StoreUnavailable(f"commit failed: {type(exc).__name__}: {exc}")
            group.settle()
            return
        except asyncio.CancelledError:
            if not flush:  # committed: the group goes on (the flush thread settles it otherwise)
                group.settle()
            raise
        except BaseException:
            writer.abandon()
            group.error = StoreUnavailable("commit interrupted")
            group.settle()
            raise
        # Committed; the write lock is released by our caller as we return, and the group
        # settles when the WAL flush is done (at once when there is none to do).
        if not flush:
            group.settle()

    def _close_empty(self, group: "WriteGroup", writer: SqliteWriter) -> bool:
        """Close `group` to new members; an empty one is rolled back and settled here
        (True). False: it has members, and the caller commits them."""
        group.closed = True
        if self._group is group:
            self._group = None
        if group.members:
            return False
        try:
            writer.rollback(group.trans)
        except (SQLAlchemyError, OSError):
            writer.reset()
        group.settle()
        return True

    def _commit_at_turn_end(self, group: "WriteGroup") -> None:
        """COMMIT `group` right here on the event loop, once the units that ran in the
        same turn of the loop have joined it.

        In WAL mode a COMMIT only appends the group's pages to the WAL: no fsync (that is
        the flush thread's, `durable_by_fsync`) and no checkpoint (the checkpointer
        thread's). Handing it to the commit thread costs more than doing it: a thread
        wake-up, the GIL changing hands twice and another wake-up of the loop to hear
        "committed", for groups that are mostly one or two units. Groups still form under load:
        every unit that becomes ready before the turn ends is in this COMMIT.

        If a unit holds the write lock now (it awaited something real mid-unit), the
        group commits once that unit and any queued behind it are done: a finisher queues
        for the lock (`_finish_group_locked`). Waiting for the unit to schedule the commit
        again is not enough: with others queued it leaves the commit to them, and they may
        all be cancelled before their turn."""
        group.commit_soon = False
        if group.closed:
            return
        if self._write_lock.locked():
            task = asyncio.ensure_future(self._finish_group_locked(group))
            self._finishers.add(task)
            task.add_done_callback(self._finishers.discard)
            return
        writer = self._writer
        if writer is None:  # the store closed meanwhile
            group.error = StoreUnavailable("the store closed before the commit")
            group.settle()
            return
        try:
            if self._close_empty(group, writer):
                return
            writer.commit(group.trans)
            if not writer.durable_by_fsync:
                group.settle()
                return
            writer.flush_then(asyncio.get_running_loop(), group)
        except Exception as exc:  # noqa: BLE001 - a loop callback: unsettled, its members would wait forever
            # As in `_finish_group`: start from a fresh connection (this drops the transaction).
            writer.reset()
            if group.error is None:
                group.error = StoreUnavailable(f"commit failed: {type(exc).__name__}: {exc}")
            group.settle()

    def _abort_group(self, group: "WriteGroup", exc: BaseException) -> None:
        """Roll the whole group back (its transaction is unusable or has only the failed unit)."""
        writer = self._writer
        assert writer is not None
        if self._group is group:
            self._group = None
        if group.closed:
            return
        group.closed = True
        if group.members:
            group.error = StoreUnavailable(f"store error in a grouped write: {type(exc).__name__}: {exc}")
        group.settle()
        try:
            writer.rollback(group.trans)
        except (SQLAlchemyError, OSError):
            writer.reset()
