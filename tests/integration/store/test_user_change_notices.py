"""On PostgreSQL a change to a user that a token cache holds is announced in its own
transaction: heard after it commits (a reader woken by it sees the change), never for
a rollback, and for every kind of change (disable, enable, token, creditor granted or
revoked); adding a user, which no cache can hold yet, announces nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.db.leader import asyncpg_dsn
from adapters.db.migrate import upgrade
from adapters.db.store import SqlAlchemyCaseStore
from adapters.db.users_notify import PgUserChanges
from dialer.config import build_config
from dialer.model import Principal

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


@asynccontextmanager
async def _store(url: str, tmp_path: Path) -> AsyncIterator[SqlAlchemyCaseStore]:
    cfg = build_config({"paths": {"data_dir": str(tmp_path)}, "store": {"url": url}})
    async with SqlAlchemyCaseStore(cfg.store) as store:
        await upgrade(store)
        yield store


class Heard:
    def __init__(self, store: SqlAlchemyCaseStore) -> None:
        self.store = store
        self.count = 0
        self.lost = 0
        self.changed = asyncio.Event()
        self.seen: list[asyncio.Task[Principal | None]] = []

    def on_change(self, name: str | None = None) -> None:
        self.count += 1
        self.changed.set()
        if name is not None:  # what a cache emptied now reads back
            self.seen.append(asyncio.ensure_future(self._read(name)))

    async def _read(self, name: str) -> Principal | None:
        async with self.store.read() as uow:
            return await uow.users.by_name(name)

    async def wait(self, count: int) -> None:
        async with asyncio.timeout(5):
            while self.count < count:
                self.changed.clear()
                await self.changed.wait()


async def test_a_change_is_heard_after_it_commits_and_a_rollback_never(pg_url: str, tmp_path: Path) -> None:
    async with _store(pg_url, tmp_path) as store:
        heard = Heard(store)
        follow = PgUserChanges(asyncpg_dsn(pg_url)).follow(lambda: heard.on_change("col-n"), lambda: None)
        async with store.write() as uow:
            await uow.users.add("col-n", "collector", frozenset({"bank-n"}), "h1", NOW)
        async with follow:
            await heard.wait(1)  # once listening
            await asyncio.gather(*heard.seen)
            heard.seen.clear()

            with pytest.raises(RuntimeError):
                async with store.write() as uow:
                    await uow.users.set_disabled("col-n", True)
                    raise RuntimeError("rolled back")
            async with store.write() as uow:
                await uow.users.add("col-m", "collector", frozenset({"bank-n"}), "h2", NOW)
            await asyncio.sleep(0.3)
            assert heard.count == 1

            async with store.write() as uow:
                await uow.users.set_disabled("col-n", True)
            await heard.wait(2)
            assert await heard.seen[-1] is None  # disabled: the woken reader sees it

            for change in ("enable", "token", "grant", "revoke"):
                async with store.write() as uow:
                    if change == "enable":
                        await uow.users.set_disabled("col-n", False)
                    elif change == "token":
                        await uow.users.set_token("col-n", "h3")
                    elif change == "grant":
                        await uow.users.grant("col-n", "bank-o")
                    else:
                        await uow.users.revoke("col-n", "bank-o")
            await heard.wait(6)
            assert (await heard.seen[-1]) is not None and (await heard.seen[-1]).creditors == frozenset({"bank-n"})
