"""`store.on_commit`: what wakes the event relay. A listener hears of every write that
committed, after its rows are visible to a new reader, and never of a rollback or of the
relay's own bookkeeping (`write_unannounced`); its undo stops it. On a SQLite file (group
commit), in-memory SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from adapters.db import tables
from adapters.db.migrate import upgrade
from adapters.db.store import SqlAlchemyCaseStore
from dialer.config import build_config
from gate_store_support import pg_url  # noqa: F401 - fixture

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


@asynccontextmanager
async def _store(url: str | None, tmp_path: Path) -> AsyncIterator[SqlAlchemyCaseStore]:
    cfg = build_config({"paths": {"data_dir": str(tmp_path)}, **({"store": {"url": url}} if url else {})})
    async with SqlAlchemyCaseStore(cfg.store) as store:
        await upgrade(store)
        yield store


async def _users(store: SqlAlchemyCaseStore) -> int:
    async with store.read() as uow:
        return int((await uow.conn.execute(select(func.count()).select_from(tables.users))).scalar_one())


async def _listener_hears_commits_only(store: SqlAlchemyCaseStore) -> None:
    heard: list[int] = []
    seen: list[asyncio.Task[int]] = []

    def listener() -> None:
        heard.append(len(heard) + 1)
        if len(heard) == 1:  # what a relay woken now reads (one read: in memory, one connection)
            seen.append(asyncio.ensure_future(_users(store)))

    forget = store.on_commit(listener)
    async with store.write() as uow:
        await uow.users.add("u-1", "collector", frozenset({"bank-a"}), "h-1", NOW)
    assert heard == [1] and await seen[0] == 1

    with pytest.raises(RuntimeError):
        async with store.write() as uow:
            await uow.users.add("u-2", "collector", frozenset({"bank-a"}), "h-2", NOW)
            raise RuntimeError("rolled back")
    assert heard == [1] and await _users(store) == 1

    async with store.write_unannounced() as uow:
        await uow.users.add("u-3", "collector", frozenset({"bank-a"}), "h-3", NOW)
    assert heard == [1] and await _users(store) == 2

    async def add(name: str) -> None:
        async with store.write() as uow:
            await uow.users.add(name, "collector", frozenset({"bank-a"}), f"h-{name}", NOW)

    await asyncio.gather(*(add(f"g-{i}") for i in range(5)))  # on a file: one group commit
    assert heard == [1, 2, 3, 4, 5, 6]

    forget()
    await add("after")
    assert len(heard) == 6 and await _users(store) == 8


@pytest.mark.parametrize("url", [None, "sqlite+aiosqlite://"], ids=["sqlite-file", "sqlite-memory"])
async def test_a_listener_hears_each_commit_after_its_rows_are_visible_and_never_a_rollback(
    url: str | None, tmp_path: Path
) -> None:
    async with _store(url, tmp_path) as store:
        await _listener_hears_commits_only(store)


async def test_a_listener_hears_each_commit_and_never_a_rollback_on_postgres(pg_url: str, tmp_path: Path) -> None:
    async with _store(pg_url, tmp_path) as store:
        await _listener_hears_commits_only(store)


async def test_the_store_offers_no_cross_instance_wakes_on_sqlite(tmp_path: Path) -> None:
    async with _store(None, tmp_path) as store:
        called: list[Any] = []
        async with store.commits_elsewhere(lambda: called.append(1)) as listening, store.announce_commits() as waker:
            assert (listening, waker) == (None, None)
        source = store.outbox_source(now=lambda: NOW, retention=timedelta(days=7))
        assert await source.fetch_unsent(10) == [] and called == []
