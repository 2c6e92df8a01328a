"""The token cache: a cached token costs no read of the store; a heard change to users
empties the cache; while changes cannot be heard (`UserNotices` not listening) every
token is read from the store and nothing is kept; a read that raced a change is not
kept either."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from dialer.auth import Authenticator, UserNotices, hash_token
from dialer.errors import Unauthenticated
from dialer.model import Principal

TOKEN = "dg_test-token"
HEADER = f"Bearer {TOKEN}"
ALICE = Principal(user_id=1, name="alice", role="collector", creditors=frozenset({"bank-a"}))


class Store:
    """Enough of a `CaseStore` for the Authenticator: `read()` and its users' lookup,
    counted; `hold` keeps a read waiting after it took its snapshot."""

    def __init__(self) -> None:
        self.principals = {hash_token(TOKEN): ALICE}
        self.reads = 0
        self.hold: asyncio.Event | None = None
        self.users = self

    async def by_token_hash(self, digest: str) -> Principal | None:
        self.reads += 1
        found = self.principals.get(digest)  # what this read's snapshot holds
        hold = self.hold
        if hold is not None:
            await hold.wait()
        return found

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Any]:
        yield self


def _auth(store: Store, notices: UserNotices | None) -> Authenticator:
    return Authenticator(store, cache_s=300, notices=notices)  # type: ignore[arg-type]


async def test_without_notices_a_cached_token_is_not_read_again() -> None:
    store = Store()
    auth = _auth(store, None)
    assert await auth.authenticate(HEADER) == ALICE
    assert await auth.authenticate(HEADER) == ALICE
    assert store.reads == 1


async def test_a_heard_change_empties_the_cache() -> None:
    store, notices = Store(), UserNotices()
    notices.changed()  # listening
    auth = _auth(store, notices)
    await auth.authenticate(HEADER)
    await auth.authenticate(HEADER)
    assert store.reads == 1
    del store.principals[hash_token(TOKEN)]
    notices.changed()
    with pytest.raises(Unauthenticated):
        await auth.authenticate(HEADER)


async def test_before_listening_and_after_a_loss_every_token_is_read_and_none_kept() -> None:
    store, notices = Store(), UserNotices()
    auth = _auth(store, notices)
    for _ in range(3):  # not listening yet
        await auth.authenticate(HEADER)
    assert store.reads == 3
    notices.changed()  # listening
    await auth.authenticate(HEADER)
    await auth.authenticate(HEADER)
    assert store.reads == 4
    notices.lost()
    await auth.authenticate(HEADER)
    await auth.authenticate(HEADER)
    assert store.reads == 6
    notices.changed()  # listening again
    await auth.authenticate(HEADER)
    await auth.authenticate(HEADER)
    assert store.reads == 7


async def test_a_read_that_raced_a_change_is_answered_but_not_kept() -> None:
    store, notices = Store(), UserNotices()
    notices.changed()
    auth = _auth(store, notices)
    store.hold = hold = asyncio.Event()
    before = asyncio.create_task(auth.authenticate(HEADER))  # reads alice, then waits
    await asyncio.sleep(0)
    store.hold = None
    del store.principals[hash_token(TOKEN)]  # disabled, and heard
    notices.changed()
    with pytest.raises(Unauthenticated):
        await auth.authenticate(HEADER)  # another request sees the change
    hold.set()
    assert await before == ALICE  # what it read before the change
    with pytest.raises(Unauthenticated):
        await auth.authenticate(HEADER)  # not served from that answer
    assert store.reads == 3
