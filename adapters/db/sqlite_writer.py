"""The SQLite file's write path: one synchronous writer connection, group commit,
BEGIN IMMEDIATE with backoff, the cross-process writer lock and WAL checkpoints on
a thread of their own (see `adapters.db.store` for how the store uses it)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import sqlite3
import threading
from time import monotonic as _monotonic, sleep as _sleep
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Connection, create_engine, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from dialer.errors import StoreUnavailable
from dialer.model import (
    Principal,
)

log = structlog.get_logger("dialgate.store")

# WAL checkpoints (copying committed pages from the WAL back into the database file, then
# fsyncing both) run on a thread of the writer's own, at most this often while writes
# come in, so no COMMIT pays for one. SQLite's own automatic checkpoint stays on, at
# this many WAL pages, only as the backstop that lets the WAL start over from its
# beginning: a background checkpoint under a steady stream of commits never quite
# catches up with the last one.
CHECKPOINT_EVERY_S = 0.05
WAL_BACKSTOP_PAGES = 10_000
CHECKPOINT_NICE = 10  # the checkpoint thread's priority (Linux: per thread)

class GroupMemo:
    """What the units of one SQLite write group read on every decision and may read
    again: each chain's head (seq, hash, keyed_from) as the group's last append left it, and the
    users looked up by name (the SIP gate asks for its agent on every INVITE).

    Correct because a group is one write transaction: from its BEGIN IMMEDIATE to its
    COMMIT SQLite's write lock keeps every other connection and process out, so only
    the group's own units change anything, one at a time, and they keep the memo in
    step: an append records the head it wrote; anything else that could touch these
    tables is a Core statement through the unit's connection shim, which forgets the
    memo before it runs, and a unit rolled back to its savepoint forgets it too. The
    memo dies with its group (the next group starts empty, after other processes may
    have written)."""

    __slots__ = ("heads", "users")

    def __init__(self) -> None:
        self.heads: dict[str, tuple[int, str, int | None]] = {}
        self.users: dict[str, Principal | None] = {}

    def forget(self) -> None:
        self.heads.clear()
        self.users.clear()


class SyncConnShim:
    """The AsyncConnection surface the repositories use, over a sync Connection.
    `memo`: the write group's, forgotten before any statement goes through here."""

    def __init__(self, conn: Connection, memo: GroupMemo | None = None) -> None:
        self.sync_connection = conn
        self.dialect = conn.dialect
        self._memo = memo

    def _forget(self) -> None:
        if self._memo is not None:
            self._memo.forget()

    async def execute(self, statement: Any, parameters: Any = None, **kw: Any) -> Any:
        self._forget()
        return self.sync_connection.execute(statement, parameters, **kw)

    async def exec_driver_sql(self, statement: str, parameters: Any = None, **kw: Any) -> Any:
        self._forget()
        return self.sync_connection.exec_driver_sql(statement, parameters, **kw)

    async def scalar(self, statement: Any, parameters: Any = None, **kw: Any) -> Any:
        self._forget()
        return self.sync_connection.scalar(statement, parameters, **kw)

    async def run_sync(self, fn: Any, *args: Any, **kw: Any) -> Any:
        self._forget()
        return fn(self.sync_connection, *args, **kw)

    def begin_nested(self) -> "_NestedShim":
        self._forget()
        return _NestedShim(self.sync_connection)


class _NestedShim:
    """`async with conn.begin_nested():` — a SAVEPOINT on the sync connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.tx: Any = None

    async def __aenter__(self) -> Any:
        self.tx = self.conn.begin_nested()
        return self.tx

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is None:
            self.tx.commit()
        else:
            self.tx.rollback()
        return False


# How long the writer sleeps between tries of BEGIN IMMEDIATE while another process
# holds SQLite's write lock: short at first (another DialGate process's group commit
# holds it for a millisecond or two), then a millisecond, until `busy_timeout_ms`.
_BEGIN_BACKOFF_S = (0.00005, 0.0001, 0.0002, 0.0005)


def begin_immediate(dbapi_conn: sqlite3.Connection, busy_s: float) -> int:
    """BEGIN IMMEDIATE on `dbapi_conn` (whose own busy timeout is 0), waiting for another
    process's write transaction by retrying with short sleeps up to `busy_s`; returns how
    many tries failed. SQLite's own busy handler sleeps 1, 2, 5, 10 … 100 ms between
    tries, so a second process on the same file would wait far longer than the lock is
    held (two `dialgate serve` on one database slower together than one).
    Raises the last `sqlite3.OperationalError` when the lock stays taken."""
    deadline = _monotonic() + busy_s
    tries = 0
    while True:
        try:
            dbapi_conn.execute("BEGIN IMMEDIATE")
            return tries
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if _monotonic() >= deadline:
                raise
        _sleep(_BEGIN_BACKOFF_S[tries] if tries < len(_BEGIN_BACKOFF_S) else 0.001)
        tries += 1


class WriterFileLock:
    """An exclusive `flock` on `<database>.writer-lock`, held from a write group's BEGIN to
    its COMMIT: DialGate processes writing one SQLite file (`serve --workers N`, a CLI
    command beside a running service) take turns the moment the holder lets go — the
    kernel wakes the waiter — where SQLite's busy handler polls with sleeps and lets the
    process that just committed take the lock again before the other wakes up.

    A wait that outlasts the timeout is abandoned (`abandon`): its thread stays blocked
    in `flock` and lets go as soon as it is granted; meanwhile nobody else in this process
    waits behind it (`try_acquire` says "stuck") so a hung holder costs one thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        # Held shared by every process waiting for the lock, so a long holder (an
        # import's batch) can see someone waits and commit early (`wanted`).
        self.want_fd = os.open(path + "-want", os.O_RDWR | os.O_CREAT, 0o600)
        self.held = False
        self.stuck = False  # an abandoned blocking wait is still in flock()
        self._abandoned = False
        self._mutex = threading.Lock()

    def try_acquire(self) -> bool:
        with self._mutex:
            if self.stuck:
                return False
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            self.held = True
            return True

    def acquire_blocking(self) -> bool:
        """In a worker thread: wait for the lock. False if the wait was abandoned meanwhile."""
        fcntl.flock(self.want_fd, fcntl.LOCK_SH)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        finally:
            fcntl.flock(self.want_fd, fcntl.LOCK_UN)
        with self._mutex:
            if self._abandoned:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                self._abandoned = self.stuck = False
                return False
            self.held = True
            return True

    def wanted(self) -> bool:
        """Whether another process is waiting for the lock right now."""
        try:
            fcntl.flock(self.want_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self.want_fd, fcntl.LOCK_UN)
        return False

    def abandon(self) -> bool:
        """Give up a blocking wait: True if it had not got the lock (it lets go when it
        does); False if it got it just now (the caller holds it and must release it)."""
        with self._mutex:
            if self.held:
                return False
            self._abandoned = self.stuck = True
            return True

    def release(self) -> None:
        with self._mutex:
            if self.held:
                self.held = False
                fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.release()
        if not self.stuck:
            os.close(self.fd)
            os.close(self.want_fd)


def open_existing(path: str) -> sqlite3.Connection:
    """A connection to the database file at `path`, which must exist: a plain connect
    would create an empty database there (say, after the data directory was moved away)."""
    return sqlite3.connect(
        Path(path).resolve().as_uri() + "?mode=rw", uri=True, timeout=0, isolation_level=None, check_same_thread=False
    )


class SqliteWriter:
    """One synchronous pysqlite connection for a file database's write transactions."""

    def __init__(self, path: str, busy_ms: int, sync_mode: str) -> None:
        self.file_lock = WriterFileLock(path + ".writer-lock")
        self.engine = create_engine(
            f"sqlite+pysqlite:///{path}",
            poolclass=StaticPool,
            connect_args={"check_same_thread": False, "timeout": busy_ms / 1000},
        )

        self.path = path
        self.wal_path = path + "-wal"
        self.wal = False
        self.sync_pragma = sync_mode
        # synchronous=FULL in WAL mode is COMMIT = append the frames + fsync the WAL, all
        # under SQLite's write lock. The writer does the same in two steps: COMMIT with
        # synchronous=NORMAL (frames appended, lock released at once), then fdatasync of
        # the WAL (`sync_wal`) before any member of the group hears "done" — the next
        # group runs its statements during the flush instead of queueing behind it. An
        # answer still comes only once its transaction, and every one before it, is on
        # stable storage (WAL frames are checksummed in order: recovery keeps a prefix).
        self.durable_by_fsync = False

        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
            wal = str(cur.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower() == "wal"
            self.wal = wal
            self.durable_by_fsync = wal and sync_mode == "FULL"
            self.sync_pragma = "NORMAL" if self.durable_by_fsync else sync_mode
            cur.execute(f"PRAGMA synchronous={self.sync_pragma}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA temp_store=MEMORY")  # see `_make_engine`
            if wal:
                cur.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")
            # Inside a write transaction (WAL, the write lock held) nothing waits for
            # the lock; BEGIN IMMEDIATE does its own waiting (`begin_immediate`).
            cur.execute("PRAGMA busy_timeout=0")
            cur.close()

        self._begun = False  # `begin_now` began on the driver connection: the listener skips one BEGIN

        @event.listens_for(self.engine, "begin")
        def _on_begin(conn: Any) -> None:
            if self._begun:  # `begin_now` ran BEGIN IMMEDIATE on the driver connection already
                self._begun = False
                return
            begin_immediate(conn.connection.dbapi_connection, busy_ms / 1000)

        self.conn: Connection | None = None
        # COMMITs run in order on a thread of the writer's own, WAL flushes on another (so
        # the next group's COMMIT need not wait for the last one's flush): handing work to
        # them is a queue put (an executor hand-off cost twice the CPU per group). One
        # flush serves every group committed before it started.
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._flushes: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        # Committed since the last checkpoint; and the checkpointer's stop signal.
        self._dirty = threading.Event()
        self._stopping = threading.Event()

    def run(self, job: Any) -> None:
        """Run `job()` on the writer's commit thread (started on first use); `job` reports
        its own outcome (it must not raise)."""
        self._ensure_threads()
        self._jobs.put(job)

    def _ensure_threads(self) -> None:
        if not self._threads:
            self._threads = [
                threading.Thread(target=self._work, name="dialgate-sqlite-commit", daemon=True),
                threading.Thread(target=self._flush_work, name="dialgate-sqlite-flush", daemon=True),
                threading.Thread(target=self._checkpoint_work, name="dialgate-sqlite-checkpoint", daemon=True),
            ]
            for t in self._threads:
                t.start()

    def flush_then(self, loop: asyncio.AbstractEventLoop, group: "WriteGroup") -> None:
        """After `group`'s COMMIT: settle it on `loop` once the WAL is flushed (failed,
        with the error that stopped the flush). The flush thread calls `_durable` on the
        loop itself, not through a future whose done-callback would (one loop turn
        less before the members wake; no latency difference was measurable at 2,000
        decisions/s, but no future and no lambda per group)."""
        self._ensure_threads()
        self._flushes.put((loop, group))

    def _checkpoint_work(self) -> None:
        """Checkpoint (PASSIVE: never waits for, nor blocks, a writer or a reader) on a
        connection of its own, at most every `CHECKPOINT_EVERY_S` while commits come in.
        A failed checkpoint loses nothing: the pages stay in the WAL for the next one."""
        con: sqlite3.Connection | None = None
        failing = False
        # Below the threads that answer: copying pages back can wait, a decision cannot,
        # and under an import's commits the copying is most of this process's work.
        with contextlib.suppress(OSError):
            me = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, me, max(os.getpriority(os.PRIO_PROCESS, me), CHECKPOINT_NICE))
        try:
            while True:
                self._dirty.wait()
                if self._stopping.is_set():
                    return
                self._dirty.clear()
                try:
                    if con is None:
                        con = open_existing(self.path)
                        con.execute(f"PRAGMA synchronous={self.sync_pragma}")
                    con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    failing = False
                except sqlite3.Error as exc:
                    if not failing:
                        log.warning("store.checkpoint_failed", error=f"{type(exc).__name__}: {exc}")
                    failing = True
                    if con is not None:
                        con.close()
                        con = None
                if self._stopping.wait(CHECKPOINT_EVERY_S):
                    return
        finally:
            if con is not None:
                con.close()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except BaseException:  # noqa: BLE001 - a job reports its own errors; the thread must live
                pass

    def _flush_work(self) -> None:
        while (first := self._flushes.get()) is not None:
            waiting = [first]
            stop = False
            while True:  # everything committed before this flush starts rides on it
                try:
                    more = self._flushes.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                waiting.append(more)
            error: BaseException | None = None
            try:
                self.sync_wal()
            except BaseException as exc:  # noqa: BLE001 - reported to every group waiting
                error = exc
            for loop, group in waiting:
                try:
                    loop.call_soon_threadsafe(_durable, group, error)
                except RuntimeError:  # its loop is closed: nobody waits any more
                    pass
            if stop:
                return

    def begin_now(self) -> Any:
        """BEGIN IMMEDIATE right here (on the event loop's thread) when nothing can make it
        wait: the connection is open and SQLite's write lock is free (this connection's
        busy timeout is 0, so a taken lock answers at once). None when the lock is taken
        or the connection needs opening: then `begin` in a worker thread. Saves a thread
        hand-off per write group, which cost more CPU than the BEGIN itself."""
        conn = self.conn
        if conn is None or conn.invalidated or conn.closed or conn.in_transaction():
            return None
        raw = conn.connection.dbapi_connection
        assert raw is not None  # an open, valid connection holds its driver connection
        try:
            raw.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                return None
            raise
        self._begun = True
        try:
            return conn.begin()
        finally:
            self._begun = False

    def begin(self) -> Any:
        if self.conn is None or self.conn.invalidated or self.conn.closed:
            self.conn = self.engine.connect()
        if self.conn.in_transaction():
            # Left open by a caller cancelled mid-begin (see `abandon`); the write lock
            # means nobody else is using it.
            self.conn.rollback()
        return self.conn.begin()

    def commit(self, trans: Any) -> None:
        """COMMIT the group's transaction (on the commit thread), then let the other processes in."""
        try:
            trans.commit()
        finally:
            self.file_lock.release()
        if self.wal:
            self._dirty.set()  # the checkpointer has pages to copy back

    def rollback(self, trans: Any) -> None:
        try:
            trans.rollback()
        finally:
            self.file_lock.release()

    def sync_wal(self) -> None:
        """Flush the WAL to stable storage (`durable_by_fsync`): every frame written so far."""
        fd = os.open(self.wal_path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def abandon(self) -> None:
        """Roll back whatever transaction is open: its caller was cancelled."""
        try:
            if self.conn is not None and not self.conn.closed and self.conn.in_transaction():
                self.conn.rollback()
        except (SQLAlchemyError, OSError):
            self.reset()
        finally:
            self.file_lock.release()

    def reset(self) -> None:
        """After a failure that left the connection unusable: start over."""
        try:
            if self.conn is not None:
                self.conn.invalidate()
                self.conn.close()
        except (SQLAlchemyError, OSError):
            pass
        finally:
            self.file_lock.release()
        self.conn = None
        self.engine.dispose()

    def close(self) -> None:
        if self._threads:
            self._jobs.put(None)
            self._threads[0].join(timeout=30)
            self._flushes.put(None)
            self._threads[1].join(timeout=30)
            self._stopping.set()
            self._dirty.set()
            self._threads[2].join(timeout=30)
            self._threads = []
            self._stopping.clear()
        if self.wal and self.sync_pragma == "NORMAL" and os.path.exists(self.wal_path):
            # Commits without their own flush (an import's batches) are on disk once the
            # store is closed: whoever hears "done" next may rely on them.
            try:
                self.sync_wal()
            except OSError as exc:
                log.warning("store.close_flush_failed", error=f"{type(exc).__name__}: {exc}")
        try:
            if self.conn is not None:
                self.conn.close()
        finally:
            self.conn = None
            self.engine.dispose()
            self.file_lock.close()


async def shielded(coro: Any) -> Any:
    """Run `coro` to its end even if the caller is cancelled (a group's COMMIT belongs to
    every member, not only to the one that happens to run it); then re-raise."""
    return await wait_out(asyncio.ensure_future(coro))


def resolve_future(fut: "asyncio.Future[None]", exc: BaseException | None) -> None:
    if not fut.done():
        if exc is None:
            fut.set_result(None)
        else:
            fut.set_exception(exc)


def _durable(group: "WriteGroup", exc: BaseException | None) -> None:
    """The group's WAL flush is over: it is durable, or its members are told the store
    failed (the rows may be there after all: failing closed only ever over-counts)."""
    if exc is not None and group.error is None:
        group.error = StoreUnavailable(f"the commit could not be flushed to disk: {type(exc).__name__}: {exc}")
    group.settle()


async def wait_out(fut: "asyncio.Future[Any]") -> Any:
    """`await fut` to its end even if we are cancelled meanwhile, then re-raise that
    cancellation (unless `fut` failed: its error goes up instead)."""
    cancelled = None
    while not fut.done():
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError as exc:
            cancelled = exc
    if cancelled is not None and not fut.cancelled() and fut.exception() is None:
        raise cancelled
    return fut.result()


async def in_thread(fn: Any) -> Any:
    """Run `fn` in a worker thread; if we are cancelled, still wait for it to finish
    (the SQLite connection must not be left mid-statement), then re-raise."""
    return await shielded(asyncio.to_thread(fn))


class WriteGroup:
    """One SQLite write transaction shared by the units of work queued together."""

    __slots__ = ("trans", "members", "closed", "done", "error", "_waiters", "commit_soon", "memo")

    def __init__(self, trans: Any) -> None:
        self.trans = trans
        self.memo = GroupMemo()
        self.members = 0
        self.commit_soon = False  # `_commit_at_turn_end` is scheduled
        self.closed = False  # its transaction is committed, rolled back or being committed
        self.done = False  # settled: members may go (after the WAL flush when there is one)
        self.error: StoreUnavailable | None = None
        self._waiters: list[asyncio.Future[None]] = []

    def check(self) -> None:
        if self.error is not None:
            raise StoreUnavailable(str(self.error)) from self.error

    def settle(self) -> None:
        """The group is committed, rolled back or failed: wake the members waiting for it."""
        self.closed = self.done = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():  # a cancelled member's waiter is done already
                waiter.set_result(None)

    async def settled(self) -> None:
        """Wait until the group is settled — also when cancelled meanwhile (then re-raise):
        the caller's unit is in the group's transaction either way.

        Each member waits on a future of its own, so cancelling one cancels nobody
        else's wait; one shared future would need `asyncio.shield` per member, an extra
        future, two callbacks and a loop iteration on every decision."""
        cancelled: asyncio.CancelledError | None = None
        while not self.done:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError as exc:
                cancelled = exc
        if cancelled is not None:
            raise cancelled


