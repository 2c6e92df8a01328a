"""Revocation notices between instances on one PostgreSQL.

Every change to a user that a token cache holds (`SqlUserRepository.set_token`,
`set_disabled`, `grant`, `revoke`) sends `pg_notify('dialgate_auth', name)` in its own
transaction: PostgreSQL delivers it at COMMIT, after the change is visible, and never
for a rollback. Each serving process LISTENs (`PgUserChanges`) and empties its token
cache on a notice; while it is not listening its cache is not trusted, since notices
sent then are lost (`dialer.auth.UserNotices`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from sqlalchemy import text

from adapters.db.pg_listen import PgListener

CHANNEL = "dialgate_auth"
NOTIFY = text(f"SELECT pg_notify('{CHANNEL}', :name)")
# A dead listening connection goes unnoticed at most this long (plus the probe's
# timeout); it bounds how long a cache is trusted after notices stopped arriving.
HEARTBEAT_S = 1.0
PROBE_TIMEOUT_S = 1.0
# Start-up waits this long for the first LISTEN, so a started worker serves from its
# cache; past it the worker starts anyway and reads every token from the store.
FIRST_LISTEN_S = 5.0


class PgUserChanges:
    """The `UserChanges` port on PostgreSQL: LISTEN on `CHANNEL`."""

    def __init__(self, dsn: str, *, first_listen_s: float = FIRST_LISTEN_S) -> None:
        self._dsn = dsn
        self._first_listen_s = first_listen_s

    @asynccontextmanager
    async def follow(self, on_change: Callable[[], None], on_lost: Callable[[], None]) -> AsyncIterator[PgListener]:
        listener = PgListener(self._dsn, CHANNEL, on_change, on_lost=on_lost, heartbeat_s=HEARTBEAT_S,
                              probe_timeout_s=PROBE_TIMEOUT_S)
        async with listener:
            try:
                async with asyncio.timeout(self._first_listen_s):
                    await listener.listening.wait()
            except TimeoutError:
                pass  # not listening yet: the cache stays untrusted until it is
            yield listener
