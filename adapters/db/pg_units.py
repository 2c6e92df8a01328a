"""`PgUnits`: the PostgreSQL decision units, on asyncpg connections of their own.

A decision is the store's hottest write: SQLAlchemy's pool checkout, its ping, its BEGIN
and COMMIT and the greenlet bridge under every call cost a dial more Python time and two
more round trips than its own statements. So a dial's unit (`SqlAlchemyCaseStore.ledger`)
runs on a small pool of plain asyncpg connections: BEGIN and the unit's first locks in one
simple query, the ledger's statements (`ledger_pg.PgDialLedger`), COMMIT. Every other
unit stays on SQLAlchemy.

* **Failover.** No ping before use: the first round trip is the unit's BEGIN, and when it
  fails because a pooled connection was lost (the server restarted or a standby was
  promoted), nothing was written, so the unit begins again on the next connection, in the
  end a new one (the multi-host URL's `target_session_attrs` picks the primary).
* **Fail closed.** Every other failure is `StoreUnavailable` (or `StoreRefusedValue`
  for a value the server refused as data), and the connection is closed rather than
  reused. A COMMIT the server answered with ROLLBACK (the transaction had failed) is a
  failure too, never an answered decision.
* **Bounded.** At most `[store] pool_size` connections, every one kept when idle (a
  pool that closed some after a burst opened new backends in the middle of the next
  one's decisions), waiting for one at most `timeout_s`; every statement is bounded by the connection's
  `command_timeout`, every lock wait by `lock_timeout`.
* **The Core path.** A shape `PgDialLedger` does not write itself switches the unit: its
  transaction is rolled back (nothing written), a SQLAlchemy unit takes the same locks,
  and that unit commits or rolls back in its place.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, AsyncIterator, Callable, Sequence

import asyncpg

from adapters.db.ledger_pg import LOCK_EACH, LOCKS, PG_FAILURES, PgDialLedger, store_error
from dialer.errors import StoreUnavailable
from dialer.evidence import EvidenceKey
from dialer.ports import DialLedger

# A pooled connection that went away, or that asyncpg finds still busy with an operation
# of its last unit: nothing was written yet, so the unit may begin again on another one.
_LOST = (
    asyncpg.InterfaceError, asyncpg.PostgresConnectionError, asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError, asyncpg.CannotConnectNowError, asyncpg.InternalClientError, OSError,
)


def begin_sql(keys: Sequence[str]) -> str | None:
    """BEGIN and the advisory locks on `keys` (sorted by the caller, as every unit takes
    them) as one simple query: a simple query takes no parameters, so the keys are
    literals, quoted as `standard_conforming_strings` reads them (set on every connection
    of the pool). None when a key holds a NUL, which a literal cannot carry: the keys then
    go as a parameter in a statement of their own."""
    if not keys:
        return "BEGIN"
    if any("\x00" in k for k in keys):
        return None
    literals = ", ".join("'" + k.replace("'", "''") + "'" for k in keys)
    return f"BEGIN; SELECT {LOCK_EACH} FROM unnest(ARRAY[{literals}]::text[]) AS k"


class PgConnections:
    """A pool of asyncpg connections (see the module docstring for its bounds)."""

    def __init__(self, dsn: str, *, size: int, timeout_s: float) -> None:
        self.dsn = dsn
        self.size = size
        self.timeout_s = timeout_s
        self._idle: list[Any] = []
        self._slots = asyncio.Semaphore(size)
        self._closed = False

    async def acquire(self) -> tuple[Any, bool]:
        """A connection and whether it is new (a new one is not retried when it fails)."""
        if self._closed:
            raise StoreUnavailable("the store is closed")
        if self._slots.locked():
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self._slots.acquire()
            except TimeoutError as exc:
                raise StoreUnavailable("timed out waiting for a store connection") from exc
        else:
            await self._slots.acquire()  # free: no time-out to arm
        if self._idle:
            return self._idle.pop(), False
        try:
            conn = await asyncpg.connect(
                self.dsn, timeout=self.timeout_s, command_timeout=self.timeout_s * 2,
                server_settings={"lock_timeout": f"{int(self.timeout_s * 1000)}ms",
                                 "standard_conforming_strings": "on"},
            )
        except BaseException as exc:
            self._slots.release()
            if isinstance(exc, PG_FAILURES):
                raise StoreUnavailable(f"cannot connect to the store: {type(exc).__name__}") from exc
            raise
        return conn, True

    def release(self, conn: Any, reusable: bool) -> None:
        """Give `conn` back: kept when `reusable` and out of any transaction, else closed."""
        try:
            if reusable and not self._closed and not conn.is_closed() and not conn.is_in_transaction() \
                    and len(self._idle) < self.size:
                self._idle.append(conn)
            elif not conn.is_closed():
                conn.terminate()
        finally:
            self._slots.release()

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            try:
                await conn.close(timeout=self.timeout_s)
            except (*PG_FAILURES, asyncio.CancelledError):
                conn.terminate()


class PgUnits:
    """Opens decision units (`unit`) on `PgConnections`; `core(keys)` opens the store's
    SQLAlchemy write unit holding `keys`, for the Core path; `committed` tells the
    store's commit listeners."""

    def __init__(
        self, connections: PgConnections, core: Callable[[Sequence[str]], AbstractAsyncContextManager[DialLedger]],
        committed: Callable[[], None], evidence: EvidenceKey, *, events: bool, shards: int,
    ) -> None:
        self.connections = connections
        self._core = core
        self._committed = committed
        self.evidence = evidence
        self.events = events
        self.shards = shards

    async def _begin(self, keys: list[str]) -> Any:
        sql = begin_sql(keys)
        while True:
            conn, fresh = await self.connections.acquire()
            try:
                if sql is None:
                    await conn.execute("BEGIN")
                    await conn.execute(LOCKS, keys)
                else:
                    await conn.execute(sql)
                return conn
            except PG_FAILURES as exc:
                self.connections.release(conn, False)
                if fresh or not isinstance(exc, _LOST):
                    raise store_error(exc) from exc
                # a pooled connection that was lost: nothing was written, begin on the next
            except BaseException:
                self.connections.release(conn, False)
                raise

    async def _end(self, conn: Any, exc: BaseException | None) -> None:
        """COMMIT (`exc` None) or ROLLBACK, and give the connection back."""
        if exc is None:
            try:
                status = await conn.execute("COMMIT")
            except BaseException as e:
                self.connections.release(conn, False)
                if isinstance(e, PG_FAILURES):
                    raise StoreUnavailable(f"commit failed: {type(e).__name__}: {e}") from e
                raise
            if status != "COMMIT":  # the server rolled back a transaction that had failed
                self.connections.release(conn, False)
                raise StoreUnavailable(f"commit failed: the server answered {status}")
            self.connections.release(conn, True)
            return
        reusable = not isinstance(exc, (asyncio.CancelledError, *PG_FAILURES, StoreUnavailable))
        if reusable:
            try:
                await conn.execute("ROLLBACK")
            except PG_FAILURES:
                reusable = False  # the connection is closed instead; the unit's own error stands
            except BaseException:
                self.connections.release(conn, False)
                raise  # a cancellation while rolling back is the caller's to see
        self.connections.release(conn, reusable)

    @asynccontextmanager
    async def unit(self, lock_keys: Sequence[str]) -> AsyncIterator[PgDialLedger]:
        keys = sorted(set(lock_keys))
        conn: Any = await self._begin(keys)
        stack = AsyncExitStack()

        async def core(held: Sequence[str]) -> DialLedger:
            # what this transaction read is dropped with its locks; the Core unit takes
            # them again before it reads, and nothing was written here yet. The keys come
            # as an argument: a closure over the ledger would be a cycle the ledger holds.
            nonlocal conn
            raw, conn = conn, None
            await self._end(raw, _SWITCHED)
            return await stack.enter_async_context(self._core(held))

        ledger = PgDialLedger(conn, keys, core, self.evidence, events=self.events, shards=self.shards)
        try:
            yield ledger
        except BaseException as exc:
            if conn is not None:
                await self._end(conn, exc)
            await stack.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        if conn is not None:
            await self._end(conn, None)
        else:
            await stack.aclose()  # the Core unit commits
        self._committed()


class _Switched(Exception):
    """The unit went to the Core path (its own transaction is rolled back)."""


_SWITCHED = _Switched()
