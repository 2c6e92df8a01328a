"""`PgAdvisoryLeadership`: one leader among every `dialgate serve` on one PostgreSQL.

The leader is the session holding `pg_try_advisory_lock(LOCK_CLASS, LOCK_ID)` on a
connection of its own (asyncpg, outside the store's pool, so no pooled connection can
carry the lock away). The two-int form never collides with the store's own advisory
locks (single bigint keys: a different lock tag on the server).

Fencing: a leader that lost its connection stops before another can start.
* The connection is opened with `idle_session_timeout = LEASE_S`: a session that sends
  nothing for that long is ended by the server, and its lock released. A partitioned or
  frozen leader therefore loses the lock at most `LEASE_S` after its last heartbeat.
* The leader sends a heartbeat (is the lock still mine?) every `HEARTBEAT_S`; a
  heartbeat that fails or takes longer than `HEARTBEAT_TIMEOUT_S` ends the term here.
* `holds(token)` is also false once `LEASE_S - MARGIN_S` have passed since the last
  good heartbeat, so work that checks it stops before the server can let the lock go,
  even when this process was frozen (SIGSTOP, a long GC) and has not noticed yet.
With HEARTBEAT_S + HEARTBEAT_TIMEOUT_S < LEASE_S - MARGIN_S the leader has given up
before the server frees the lock. A killed leader's socket is closed by its kernel, and
the server frees the lock at once: a follower, which asks every `RETRY_S`, takes over
within about a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("dialgate.leader")

LOCK_CLASS = 0x4447  # "DG"
LOCK_ID = 1  # the singletons' lock
HEARTBEAT_S = 1.0
HEARTBEAT_TIMEOUT_S = 2.0
LEASE_S = 8.0
MARGIN_S = 3.0
RETRY_S = 1.0

_HELD = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = $2 "
    "AND objsubid = 2 AND granted AND pid = pg_backend_pid()"
)
_HOLDER = (
    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 2 "
    "AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    """The store's `postgresql+asyncpg://` URL as a DSN asyncpg takes. A multi-host URL
    (SQLAlchemy's spelling: `?host=a:5432&host=b:5432`) becomes asyncpg's
    `postgresql://user@a:5432,b:5432/db`: asyncpg reads only the last `host` parameter."""
    from urllib.parse import quote, urlencode

    from sqlalchemy.engine import make_url

    url = make_url(sqlalchemy_url)
    query = dict(url.query)
    hosts = query.pop("host", None)
    if hosts is None or isinstance(hosts, str):
        return url.set(drivername="postgresql").render_as_string(hide_password=False)
    user = quote(url.username or "", safe="")
    if url.password is not None:
        user += ":" + quote(str(url.password), safe="")
    rest = urlencode([(k, v) for k, vs in query.items() for v in ((vs,) if isinstance(vs, str) else vs)])
    return f"postgresql://{user}@{','.join(hosts)}/{url.database or ''}" + (f"?{rest}" if rest else "")


class PgAdvisoryLeadership:
    """Campaigns while entered (`async with`); `campaign=False` only observes (a pool's
    secondary worker, which reports the leader but never runs the singletons)."""

    def __init__(
        self,
        url: str,
        instance: str,
        *,
        campaign: bool = True,
        heartbeat_s: float = HEARTBEAT_S,
        heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S,
        lease_s: float = LEASE_S,
        margin_s: float = MARGIN_S,
        retry_s: float = RETRY_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if heartbeat_s + heartbeat_timeout_s >= lease_s - margin_s:
            raise ValueError("a heartbeat must fail before the lease can run out on the server")
        self.instance = instance[:63]
        self._dsn = asyncpg_dsn(url)
        self._campaign = campaign
        self._heartbeat_s = heartbeat_s
        self._heartbeat_timeout_s = heartbeat_timeout_s
        self._lease_s = lease_s
        self._margin_s = margin_s
        self._retry_s = retry_s
        self._monotonic = monotonic
        self._token: int | None = None
        self._terms = 0
        self._last_ok = 0.0
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None
        # Set once the first campaign round is over (lock won or not, or no database):
        # start-up waits for it, so a lone instance serves with its singletons running.
        self.asked = asyncio.Event()

    async def __aenter__(self) -> PgAdvisoryLeadership:
        if self._campaign:
            self._task = asyncio.create_task(self._run(), name="leader-campaign")
        else:
            self.asked.set()  # an observer never asks
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # -- the Leadership port ---------------------------------------------------------

    @property
    def token(self) -> int | None:
        return self._token if self._token is not None and self.holds(self._token) else None

    def holds(self, token: int) -> bool:
        return (
            self._token == token
            and self._monotonic() - self._last_ok < self._lease_s - self._margin_s
        )

    async def wait_elected(self) -> int:
        async with self._changed:
            await self._changed.wait_for(lambda: self._token is not None)
            assert self._token is not None
            return self._token

    async def wait_lost(self, token: int) -> None:
        # Woken by the campaign when the term ends, and at least every heartbeat to
        # see a lease that ran out while this loop was not scheduled.
        while self.holds(token):
            async with self._changed:
                try:
                    async with asyncio.timeout(self._heartbeat_s):
                        await self._changed.wait_for(lambda: not self.holds(token))
                except TimeoutError:
                    pass

    async def step_down(self, token: int) -> None:
        """Give the term up (its work failed); the campaign asks again after RETRY_S."""
        if self._token == token and self._conn is not None:
            self._conn.terminate()  # the server frees the lock as the socket closes

    async def describe(self) -> dict[str, Any]:
        leader, primary = await self._observe()
        return {"instance": self.instance, "is_leader": self.token is not None,
                "leader": self.instance if self.token is not None else leader,
                "elected_by": "postgresql-advisory-lock", "store_primary": primary}

    # -- the campaign ----------------------------------------------------------------

    async def _observe(self) -> tuple[str | None, bool | None]:
        """(the leader's instance name, whether the server is a primary) on a short
        connection of its own (the campaign's is busy with its heartbeat); Nones when
        the store does not answer."""
        import asyncpg

        try:
            conn = await asyncpg.connect(self._dsn, timeout=self._heartbeat_timeout_s)
        except Exception:  # noqa: BLE001 - no server, or none read-write: unknown
            return None, None
        try:
            leader = await conn.fetchval(_HOLDER, LOCK_CLASS, LOCK_ID, timeout=self._heartbeat_timeout_s)
            recovering = await conn.fetchval("SELECT pg_is_in_recovery()", timeout=self._heartbeat_timeout_s)
            return leader, not recovering
        except Exception:  # noqa: BLE001 - reported as unknown, never raised into /readyz
            return None, None
        finally:
            conn.terminate()

    async def _set(self, token: int | None) -> None:
        async with self._changed:
            self._token = token
            self._changed.notify_all()

    async def _run(self) -> None:
        import asyncpg

        while True:
            try:
                conn = await asyncpg.connect(
                    self._dsn, timeout=self._heartbeat_timeout_s,
                    server_settings={
                        "application_name": self.instance,
                        "idle_session_timeout": f"{int(self._lease_s * 1000)}ms",
                    },
                )
            except Exception as exc:  # noqa: BLE001 - no server, or none read-write: ask again
                log.warning("leader.connect_failed", error=f"{type(exc).__name__}: {exc}")
                self.asked.set()
                await asyncio.sleep(self._retry_s)
                continue
            self._conn = conn
            try:
                while not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", LOCK_CLASS, LOCK_ID,
                                              timeout=self._heartbeat_timeout_s):
                    self.asked.set()
                    await asyncio.sleep(self._retry_s)  # also keeps the session from idling out
                self._last_ok = self._monotonic()
                self._terms += 1
                await self._set(self._terms)
                self.asked.set()
                while True:
                    await asyncio.sleep(self._heartbeat_s)
                    asked = self._monotonic()
                    held = await conn.fetchval(_HELD, LOCK_CLASS, LOCK_ID, timeout=self._heartbeat_timeout_s)
                    if not held:
                        log.error("leader.lock_lost", instance=self.instance)
                        break
                    self._last_ok = asked
            except Exception as exc:  # noqa: BLE001 - any failure ends the term
                self.asked.set()
                if self._token is not None:
                    log.error("leader.heartbeat_failed", instance=self.instance,
                              error=f"{type(exc).__name__}: {exc}")
            finally:
                await self._set(None)
                self._conn = None
                conn.terminate()
            await asyncio.sleep(self._retry_s)
