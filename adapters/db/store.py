"""SqlAlchemyCaseStore: the case store on SQLite (aiosqlite) or PostgreSQL (asyncpg).

Atomic decide-and-reserve rests on `write(lock_keys)`:

* SQLite: the driver's own BEGIN is disabled and we emit `BEGIN IMMEDIATE` for write
  transactions (the SQLAlchemy "serializable isolation / savepoints" recipe), so the
  write lock is taken before the first read and every writer is serialised — across
  processes too. In-process, writers also queue on an `asyncio.Lock` first: SQLite's
  busy handler polls with sleeps, a FIFO lock does not. WAL lets readers run alongside.
  For a file database, write transactions run on one synchronous pysqlite connection
  (`SqliteWriter`): BEGIN IMMEDIATE runs inline when the lock is free (else in a
  worker thread), the statements run inline — a few tens of microseconds each —
  instead of two or three thread hand-offs per statement through aiosqlite. Reads stay
  on aiosqlite. Writes that queue while one runs, or run later in the same turn of the
  event loop, share its transaction (group commit, `_sqlite_write`): each in its own
  SAVEPOINT, one COMMIT and one fsync for the group, nobody answered before that
  COMMIT is on stable storage. In WAL mode the COMMIT (page writes only) runs inline at
  the end of the loop's turn (`_commit_at_turn_end`); otherwise on the commit thread.
  With `synchronous = FULL` the fsync happens after SQLite's write lock is let go
  (`SqliteWriter.durable_by_fsync`), so the next group runs during the flush. WAL
  checkpoints run on a connection and thread of their own (`_checkpoint_work`), not
  inside a COMMIT that holds the write lock.
  DialGate processes sharing the file take turns on `<database>.writer-lock`.
* PostgreSQL: READ COMMITTED plus `pg_advisory_xact_lock` on each lock key
  (``case:…``, ``number:…``), taken in sorted order (one statement) so two requests
  never deadlock; a decision's append then locks its chain's head row (see
  `SqlDecisionLog.append` and `ledger_pg`). A dial's statements run in asyncpg on the
  unit's connection (`ledger_pg.PgDialLedger`).

Every connection is used by one task only (one AsyncConnection per unit of work).
Library exceptions are translated at this boundary into `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Sequence

import structlog
from sqlalchemy import event, text
from sqlalchemy.exc import DataError, DBAPIError, DisconnectionError, SQLAlchemyError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.util import await_

from adapters.db.imports_repo import SqlImportJobRepository
from dialer.config import StoreConfig
from dialer.errors import StoreRefusedValue, StoreUnavailable
from dialer.evidence import EvidenceKey
from adapters.db.attempts_repo import SqlAttemptRepository
from adapters.db.cases_repo import SqlCaseRepository
from adapters.db.decision_log import SqlDecisionLog
from adapters.db.outbox_repo import SqlOutbox
from adapters.db.sqlite_writer import (
    GroupMemo, SqliteWriter, SyncConnShim, WriteGroup, WriterFileLock, in_thread, resolve_future, shielded, wait_out,
)
from adapters.db.users_repo import SqlAuditLog, SqlUserRepository
from adapters.db.ledger_core import CoreDialLedger, LockFn
from adapters.db.ledger_pg import PgDialLedger
from adapters.db.ledger_sqlite import (
    SqliteAttemptRepository, SqliteCaseRepository, SqliteDecisionLog, SqliteDialLedger, SqliteOutbox,
    SqliteUserRepository,
)

log = structlog.get_logger("dialgate.store")
_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))")
# Keys in the order given (sorted by the caller): two units never wait on each other crosswise.
_ADVISORY_LOCKS = text("SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest(CAST(:keys AS text[])) AS k")

class SqlAlchemyCaseStore:
    """The `CaseStore` port over SQLAlchemy Core. Use as `async with store:`."""

    def __init__(self, config: StoreConfig, *, events: bool = True, evidence: EvidenceKey | None = None) -> None:
        """`events`: keep what units of work put in the outbox. False when no event bus
        is configured: nothing would ever read (or prune) those rows, and writing them
        is a tenth of a dial's cost. `evidence`: the key the decision log is chained
        with (`dialer.evidence.load_key`); without one, a key that lives as long as
        this object (what it chains cannot be verified by another process)."""
        self.config = config
        self.events = events
        self.evidence = evidence or EvidenceKey.ephemeral()
        self.url = config.url
        self.is_sqlite = config.is_sqlite
        self.is_postgres = config.is_postgres
        self._engine: AsyncEngine | None = None
        self._write_lock = asyncio.Lock()
        self.timeout = config.timeout_s
        self._memory = self.url in ("sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:")
        self._writer: SqliteWriter | None = None
        self._group: WriteGroup | None = None
        self._lock_waiting = 0
        self._finishers: set[asyncio.Task[Any]] = set()
        self._commit_listeners: list[Callable[[], None]] = []

    # -- lifecycle -------------------------------------------------------------------
    async def __aenter__(self) -> "SqlAlchemyCaseStore":
        self._engine = self._make_engine()
        if self.is_sqlite and not self._memory:
            cfg = self.config
            self._writer = SqliteWriter(
                self.url.split(":///", 1)[1], cfg.busy_timeout_ms, cfg.sqlite_synchronous.upper()
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            await asyncio.to_thread(self._writer.close)
            self._writer = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    @property
    def serialised_writes(self) -> bool:
        """SQLite: every write transaction runs alone (BEGIN IMMEDIATE), so a use case
        may decide which case it is about inside its write."""
        return self.is_sqlite

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("store not opened: use `async with store:`")
        return self._engine

    def _make_engine(self) -> AsyncEngine:
        cfg = self.config
        if self.is_sqlite:
            memory = self.url in ("sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:")
            if not memory:
                _private_database_file(self.url.split(":///", 1)[1].split("?", 1)[0])
            kwargs: dict[str, Any] = {"connect_args": {"timeout": cfg.busy_timeout_ms / 1000}}
            if memory:
                kwargs["poolclass"] = StaticPool
            else:
                kwargs["pool_size"] = 8
                kwargs["max_overflow"] = 8
            engine = create_async_engine(self.url, **kwargs)
            sync_engine = engine.sync_engine
            busy, sync_mode = cfg.busy_timeout_ms, cfg.sqlite_synchronous.upper()

            @event.listens_for(sync_engine, "connect")
            def _on_connect(dbapi_conn: Any, _record: Any) -> None:
                # Disable the driver's implicit BEGIN; we emit our own in "begin".
                dbapi_conn.isolation_level = None
                cur = dbapi_conn.cursor()
                if not memory:
                    cur.execute("PRAGMA journal_mode=WAL")
                cur.execute(f"PRAGMA busy_timeout={int(busy)}")
                cur.execute(f"PRAGMA synchronous={sync_mode}")
                cur.execute("PRAGMA foreign_keys=ON")
                # Statement journals (a statement inside a SAVEPOINT that changes several
                # rows or indexes) and sorts without an index use temporary storage, by
                # default a file created and unlinked in /var/tmp each time: five system
                # calls and a directory update, many times a second under load.
                cur.execute("PRAGMA temp_store=MEMORY")
                cur.close()

            @event.listens_for(sync_engine, "begin")
            def _on_begin(conn: Any) -> None:
                mode = conn.get_execution_options().get("dialgate_begin", "DEFERRED")
                conn.exec_driver_sql(f"BEGIN {mode}")

            return engine
        engine = create_async_engine(
            self.url,
            pool_size=cfg.pool_size,
            max_overflow=cfg.pool_size,
            pool_timeout=cfg.timeout_s,
            # lock_timeout for every transaction on the connection, set once at connect
            # rather than by a statement in each unit
            connect_args={"timeout": cfg.timeout_s, "command_timeout": cfg.timeout_s * 2,
                          "server_settings": {"lock_timeout": f"{int(cfg.timeout_s * 1000)}ms"}},
        )

        @event.listens_for(engine.sync_engine, "checkout")
        def _ping(_dbapi_conn: Any, record: Any, _proxy: Any) -> None:
            # `pool_pre_ping`'s ping is BEGIN, a statement and ROLLBACK: three round trips
            # on every unit. One empty statement finds a connection the server dropped (a
            # failover) as well; the pool then opens a new one.
            try:
                await_(record.driver_connection.fetchrow(";"))
            except Exception as exc:  # noqa: BLE001 - any failure means this connection is unusable
                raise DisconnectionError(f"connection lost: {type(exc).__name__}") from exc

        return engine

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

    # -- what the event relay needs (dialer/outbox.py `RelayStore`) -------------------
    def outbox_source(self, *, now: Callable[[], datetime], retention: timedelta) -> Any:
        from adapters.db.outbox_source import SqlAlchemyOutboxSource

        return SqlAlchemyOutboxSource(self, now=now, retention=retention)

    def commits_elsewhere(self, on_commit: Callable[[], None]) -> AbstractAsyncContextManager[Any]:
        """PostgreSQL: LISTEN for the other instances' commit notices. SQLite: the
        processes sharing the file are one pool's workers, which wake the relay through
        the pool's own socket (adapters/mqtt/waker.py), so nothing here."""
        if not self.is_postgres:
            return nullcontext()
        from adapters.db.leader import asyncpg_dsn
        from adapters.db.outbox_notify import PgOutboxListener

        return PgOutboxListener(asyncpg_dsn(self.url), on_commit)

    def announce_commits(self) -> AbstractAsyncContextManager[Any]:
        """PostgreSQL: a `PgOutboxWaker` (NOTIFY after commits); None elsewhere."""
        if not self.is_postgres:
            return nullcontext()
        from adapters.db.leader import asyncpg_dsn
        from adapters.db.outbox_notify import PgOutboxWaker

        return PgOutboxWaker(asyncpg_dsn(self.url))

    # -- units of work ---------------------------------------------------------------
    def write(self, lock_keys: Sequence[str] = ()) -> AbstractAsyncContextManager["SqlUnitOfWork"]:
        """A serialised write transaction (see the module docstring). The SQLite
        writer's group commit is handed out as it is, not wrapped in one more context
        manager: every decision would pay for that layer."""
        if self.is_sqlite and self._writer is not None:
            return self._sqlite_write()
        return self._other_write(lock_keys)

    def write_unannounced(self) -> AbstractAsyncContextManager["SqlUnitOfWork"]:
        """A write whose commit calls no `on_commit` listener: the event relay's own
        bookkeeping (rows marked sent, old rows pruned) must not wake the relay again."""
        if self.is_sqlite and self._writer is not None:
            return self._sqlite_write(announce=False)
        return self._other_write((), announce=False)

    def ledger(self, lock_keys: Sequence[str] = ()) -> AbstractAsyncContextManager["SqlUnitOfWork"]:
        """A write unit for one decision (the unit is the `DialLedger`: `gather`, `apply`)."""
        return self.write(lock_keys)

    @asynccontextmanager
    async def _other_write(self, lock_keys: Sequence[str], announce: bool = True) -> AsyncIterator["SqlUnitOfWork"]:
        if self.is_sqlite:
            await self._acquire_write_lock()
            try:
                async with self._transaction("IMMEDIATE", ()) as uow:
                    yield uow
            finally:
                self._write_lock.release()
        else:
            async with self._transaction(None, lock_keys) as uow:
                yield uow
        if announce:
            self._committed()

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
                    raise _store_error(exc) from exc
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

    @asynccontextmanager
    async def read(self) -> AsyncIterator["SqlUnitOfWork"]:
        async with self._transaction("DEFERRED" if self.is_sqlite else None, (), reading=True) as uow:
            yield uow

    @asynccontextmanager
    async def _transaction(
        self, begin: str | None, lock_keys: Sequence[str], *, reading: bool = False
    ) -> AsyncIterator["SqlUnitOfWork"]:
        try:
            conn = await self.engine.connect()
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"cannot connect to the store: {type(exc).__name__}") from exc
        try:
            if begin is not None:
                await conn.execution_options(dialgate_begin=begin)
            try:
                trans = await conn.begin()
                pg: Any = None  # the asyncpg connection under `conn` (PostgreSQL)
                if self.is_postgres:
                    # The first statement BEGINs (the driver's transaction starts with it):
                    # the unit's locks in one statement, in sorted order, when it has any.
                    if lock_keys:
                        await conn.execute(_ADVISORY_LOCKS, {"keys": sorted(set(lock_keys))})
                    else:
                        await conn.exec_driver_sql("SELECT 1")
                    pg = (await conn.get_raw_connection()).driver_connection
            except (SQLAlchemyError, OSError, TimeoutError) as exc:
                raise StoreUnavailable(f"cannot open a transaction: {type(exc).__name__}: {exc}") from exc
            held = sorted(set(lock_keys))
            async def take_locks(keys: list[str]) -> None:
                try:
                    for key in keys:
                        await conn.execute(_ADVISORY_LOCK, {"k": key})
                except (SQLAlchemyError, OSError, TimeoutError) as exc:
                    raise _store_error(exc) from exc

            lock: LockFn | None = take_locks if self.is_postgres and not reading else None
            uow = SqlUnitOfWork(
                conn, self.is_postgres, events=self.events, evidence=self.evidence, held=held, lock=lock,
                pg=None if reading else pg, chain_shards=self.config.chain_shards,
            )
            try:
                yield uow
            except BaseException:
                try:
                    await trans.rollback()
                except (SQLAlchemyError, OSError):
                    pass
                raise
            try:
                await trans.commit()
            except (SQLAlchemyError, OSError, TimeoutError) as exc:
                raise StoreUnavailable(f"commit failed: {type(exc).__name__}: {exc}") from exc
        except (SQLAlchemyError, OSError) as exc:
            raise _store_error(exc) from exc
        finally:
            try:
                await conn.close()
            except (SQLAlchemyError, OSError):
                pass

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"store unreachable: {type(exc).__name__}") from exc


def _private_database_file(path: str) -> None:
    """Create the SQLite file readable by its owner only (0600), like the key files, before
    SQLite opens it: SQLite gives its -wal and -shm files the database file's mode, and
    would create the database under the umask (world-readable, usually). An existing file
    that others can read is tightened, with a warning."""
    db = Path(path)
    if not db.parent.exists():
        db.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(db, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for f in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        try:
            mode = f.stat().st_mode & 0o777
        except FileNotFoundError:
            continue
        if mode & 0o077:
            try:
                os.chmod(f, 0o600)
            except PermissionError:
                continue  # not ours to change: left as it is
            log.warning("store.file_tightened", file=str(f), was=oct(mode))


def _store_error(exc: BaseException) -> Exception:
    """What a failed statement means to the caller. A value the driver could not bind
    (an out-of-range date or integer) or the database refused as data says nothing
    about the store's health: it must not answer 503 "store unavailable" and page
    on-call; everything else from the driver or the connection does."""
    if isinstance(exc, DataError) or (isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)):
        return StoreRefusedValue(f"a value was refused by the store: {type(exc.orig or exc).__name__}")
    return StoreUnavailable(f"store error: {type(exc).__name__}: {exc}")


class SqlUnitOfWork:
    """One transaction's repositories, and its `DialLedger` (`gather`, `apply`). `raw`:
    the pysqlite connection under `conn` when this unit runs on the SQLite writer; the
    dial's statements then go to it as driver SQL (`ledger_sqlite`). `held`: the lock
    keys the unit took (PostgreSQL), `lock` takes more inside it. `pg`: the asyncpg
    connection under `conn` in a PostgreSQL write unit; the dial runs on it (`ledger_pg`)."""

    def __init__(
        self, conn: AsyncConnection, is_postgres: bool, raw: sqlite3.Connection | None = None, *, events: bool = True,
        memo: GroupMemo | None = None, evidence: EvidenceKey | None = None,
        held: Sequence[str] = (), lock: LockFn | None = None, pg: Any = None, chain_shards: int = 1,
    ) -> None:
        self.conn = conn
        self.cases: SqlCaseRepository
        self.attempts: SqlAttemptRepository
        self.decisions: SqlDecisionLog
        self.outbox: SqlOutbox
        self.users: SqlUserRepository
        ledger: CoreDialLedger
        if raw is not None:
            self.cases = SqliteCaseRepository(conn, raw, evidence)
            self.attempts = SqliteAttemptRepository(conn, raw)
            self.decisions = SqliteDecisionLog(conn, raw, memo, evidence)
            self.outbox = SqliteOutbox(conn, raw, self.cases, keep=events)
            self.users = SqliteUserRepository(conn, raw, memo)
            ledger = SqliteDialLedger(self)
        else:
            self.cases = SqlCaseRepository(conn, evidence)
            self.attempts = SqlAttemptRepository(conn)
            self.decisions = SqlDecisionLog(conn, is_postgres, evidence)
            self.outbox = SqlOutbox(conn, self.cases, keep=events)
            self.users = SqlUserRepository(conn)
            if pg is not None:
                ledger = PgDialLedger(self, pg, frozenset(held), lock, events=events, shards=chain_shards)
            else:
                ledger = CoreDialLedger(self, frozenset(held), lock)
        self.audit = SqlAuditLog(conn)
        self.imports = SqlImportJobRepository(conn, is_postgres)
        self.gather = ledger.gather
        self.apply = ledger.apply
