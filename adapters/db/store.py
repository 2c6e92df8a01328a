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
  checkpoints run on a connection and thread of their own (`_checkpoint_work`, below
  the threads that answer), not inside a COMMIT that holds the write lock.
  DialGate processes sharing the file take turns on `<database>.writer-lock`; one
  waiting for it holds `<database>.writer-lock-want`, so a long writer (an import's
  batch) can end early and let it in (`writer_wanted`).
* PostgreSQL: READ COMMITTED plus `pg_advisory_xact_lock` on each lock key
  (``case:…``, ``number:…``), taken in sorted order (one statement) so two requests
  never deadlock; a decision's append then locks its chain's head row (see
  `SqlDecisionLog.append` and `ledger_pg`). A dial's unit runs on asyncpg connections
  of its own, without SQLAlchemy (`pg_units.PgUnits`, `ledger_pg.PgDialLedger`).

Every connection is used by one task only (one AsyncConnection per unit of work).
Library exceptions are translated at this boundary into `StoreUnavailable`.

    store               `SqlAlchemyCaseStore`: engines, the Core transaction, the relay's hooks
    store_group_commit  the SQLite file's write path: group commit, `_commit_at_turn_end`
    store_base          the state both write paths share, the write lock, commit listeners
    unit_of_work        `SqlUnitOfWork`: one transaction's repositories and ledger
    pg_units            PostgreSQL's decision units on asyncpg connections of their own
"""

from __future__ import annotations

import asyncio
import os
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Sequence

import structlog
from sqlalchemy import event, text
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.util import await_

from adapters.db.ledger_core import LockFn
from adapters.db.ledger_pg import LOCK_EACH
from adapters.db.pg_units import PgConnections, PgUnits
from adapters.db.sqlite_writer import SqliteWriter
from adapters.db.store_group_commit import SqliteGroupCommit
from adapters.db.unit_of_work import SqlUnitOfWork, store_error
from dialer.config import StoreConfig
from dialer.errors import StoreUnavailable
from dialer.evidence import EvidenceKey
from dialer.ports import DialLedger

__all__ = ["SqlAlchemyCaseStore", "SqlUnitOfWork"]

log = structlog.get_logger("dialgate.store")
# Keys in the order given (sorted by the caller): two units never wait on each other crosswise.
_ADVISORY_LOCKS = text(f"SELECT {LOCK_EACH} FROM unnest(CAST(:keys AS text[])) AS k")


class SqlAlchemyCaseStore(SqliteGroupCommit):
    """The `CaseStore` port over SQLAlchemy Core. Use as `async with store:`."""

    def __init__(self, config: StoreConfig, *, events: bool = True, evidence: EvidenceKey | None = None) -> None:
        """`events`: keep what units of work put in the outbox. False when no event bus
        is configured: nothing would ever read (or prune) those rows, and writing them
        is a tenth of a dial's cost. `evidence`: the key the decision log is chained
        with (`dialer.evidence.load_key`); without one, a key that lives as long as
        this object (what it chains cannot be verified by another process)."""
        self.config = config
        self._pg_units: PgUnits | None = None
        self.events = events
        self.evidence = evidence or EvidenceKey.ephemeral()
        self.url = config.url
        self.is_sqlite = config.is_sqlite
        self.is_postgres = config.is_postgres
        self._engine = None
        self._write_lock = asyncio.Lock()
        self.timeout = config.timeout_s
        self._memory = self.url in ("sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:")
        self._writer = None
        self._group = None
        self._lock_waiting = 0
        self._finishers = set()
        self._commit_listeners = []

    @property
    def events(self) -> bool:
        return self._events

    @events.setter
    def events(self, keep: bool) -> None:
        # One setting for every unit: the decisions' own PostgreSQL units hold it too.
        self._events = keep
        if self._pg_units is not None:
            self._pg_units.events = keep

    # -- lifecycle -------------------------------------------------------------------
    async def __aenter__(self) -> "SqlAlchemyCaseStore":
        self._engine = self._make_engine()
        if self.is_sqlite and not self._memory:
            cfg = self.config
            self._writer = SqliteWriter(
                self.url.split(":///", 1)[1], cfg.busy_timeout_ms, cfg.sqlite_synchronous.upper()
            )
        if self.is_postgres:
            from adapters.db.leader import asyncpg_dsn

            cfg = self.config
            self._pg_units = PgUnits(
                PgConnections(asyncpg_dsn(self.url), size=cfg.pool_size, timeout_s=cfg.timeout_s),
                lambda keys: self._transaction(None, keys), self._committed, self.evidence,
                events=self.events, shards=cfg.chain_shards,
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            await asyncio.to_thread(self._writer.close)
            self._writer = None
        if self._pg_units is not None:
            await self._pg_units.connections.close()
            self._pg_units = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    @property
    def serialised_writes(self) -> bool:
        """SQLite: every write transaction runs alone (BEGIN IMMEDIATE), so a use case
        may decide which case it is about inside its write."""
        return self.is_sqlite

    def writer_wanted(self) -> bool:
        """SQLite: whether another process waits for the database's write lock (a gate
        behind an import's batch). PostgreSQL: never; its writers wait on rows, not one lock."""
        return self._writer is not None and self._writer.file_lock.wanted()

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
        # The decisions' own pool (pg_units) holds up to `pool_size` connections; this
        # one the same, so a process stays within twice `pool_size` as it always has.
        kept = max(1, cfg.pool_size // 2)
        engine = create_async_engine(
            self.url,
            pool_size=kept,
            max_overflow=cfg.pool_size - kept,
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

    def ledger(self, lock_keys: Sequence[str] = ()) -> AbstractAsyncContextManager[DialLedger]:
        """A write unit for one decision (the unit is the `DialLedger`: `gather`, `apply`);
        on PostgreSQL on a connection of its own (`pg_units`)."""
        if self._pg_units is not None:
            return self._pg_units.unit(lock_keys)
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
                if self.is_postgres and lock_keys:
                    # the unit's locks in one statement, in sorted order
                    await conn.execute(_ADVISORY_LOCKS, {"keys": sorted(set(lock_keys))})
            except (SQLAlchemyError, OSError, TimeoutError) as exc:
                raise StoreUnavailable(f"cannot open a transaction: {type(exc).__name__}: {exc}") from exc
            held = sorted(set(lock_keys))
            async def take_locks(keys: list[str]) -> None:
                try:
                    if keys:
                        await conn.execute(_ADVISORY_LOCKS, {"keys": keys})
                except (SQLAlchemyError, OSError, TimeoutError) as exc:
                    raise store_error(exc) from exc

            lock: LockFn | None = take_locks if self.is_postgres and not reading else None
            uow = SqlUnitOfWork(
                conn, self.is_postgres, events=self.events, evidence=self.evidence, held=held, lock=lock,
                chain_shards=self.config.chain_shards,
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
            raise store_error(exc) from exc
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
