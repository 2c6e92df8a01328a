"""Writers of one SQLite file in different processes take turns: a DialGate store waits
for another's write group on the writer lock file (woken the moment it is let go), and
for any other writer by retrying BEGIN IMMEDIATE on its own (SQLite's busy handler
sleeps up to 100 ms between tries); both give up, failing closed, after their timeout.

Two stores in one test process stand for two processes: `flock` locks belong to the
open file, so two stores exclude each other exactly as two processes do."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import adapters.db.sqlite_writer as writer_mod
from adapters.db.migrate import upgrade
from adapters.db.sqlite_writer import begin_immediate
from adapters.db.store import SqlAlchemyCaseStore
from dialer.config import build_config
from dialer.errors import StoreUnavailable

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)


def _conn(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None, timeout=0, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE IF NOT EXISTS t (v TEXT)")
    return con


def test_begin_immediate_takes_a_free_lock_at_the_first_try(tmp_path: Path) -> None:
    con = _conn(tmp_path / "a.db")
    assert begin_immediate(con, 1.0) == 0
    assert con.in_transaction
    con.execute("ROLLBACK")


def test_begin_immediate_gets_the_lock_as_soon_as_the_other_writer_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder, waiter = _conn(tmp_path / "b.db"), _conn(tmp_path / "b.db")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES ('from the other process')")
    naps: list[float] = []

    def nap(seconds: float) -> None:  # the other writer commits while we wait
        naps.append(seconds)
        if len(naps) == 3:
            holder.execute("COMMIT")

    monkeypatch.setattr(writer_mod, "_sleep", nap)
    assert begin_immediate(waiter, 5.0) == 3
    # The first naps are far below SQLite's own first 1 ms sleep.
    assert naps == [0.00005, 0.0001, 0.0002]
    assert waiter.execute("SELECT v FROM t").fetchall() == [("from the other process",)]
    waiter.execute("COMMIT")


def test_begin_immediate_gives_up_after_the_busy_timeout_naming_the_lock(tmp_path: Path) -> None:
    holder, waiter = _conn(tmp_path / "c.db"), _conn(tmp_path / "c.db")
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        begin_immediate(waiter, 0.02)
    assert not waiter.in_transaction
    holder.execute("ROLLBACK")


async def _store(tmp_path: Path, timeout_s: float = 5.0) -> SqlAlchemyCaseStore:
    cfg = build_config({"paths": {"data_dir": str(tmp_path)}, "store": {"timeout_s": timeout_s}})
    store = SqlAlchemyCaseStore(cfg.store)
    await store.__aenter__()
    await upgrade(store)
    return store


def _users_on_disk(tmp_path: Path) -> list[str]:
    con = sqlite3.connect(tmp_path / "dialgate.db")
    try:
        return [r[0] for r in con.execute("SELECT name FROM users ORDER BY id")]
    finally:
        con.close()


async def _hold_write(store: SqlAlchemyCaseStore, name: str, inside: asyncio.Event, release: asyncio.Event) -> None:
    async with store.write() as uow:
        await uow.users.add(name, "collector", frozenset({"bank-w"}), f"h-{name}", NOW)
        inside.set()
        await release.wait()


async def _held_by(store: SqlAlchemyCaseStore, name: str) -> tuple["asyncio.Task[None]", asyncio.Event]:
    """`store` inside a write (its writer lock held) until the returned event is set."""
    inside, release = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(_hold_write(store, name, inside, release))
    await inside.wait()
    return holder, release


async def _until_let_go(lock: Any) -> None:
    """An abandoned wait is granted the lock once its holder lets go, and lets go at once."""
    for _ in range(1000):
        if not lock.stuck:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the abandoned wait never let go of the writer lock")


async def _add(store: SqlAlchemyCaseStore, name: str) -> None:
    async with store.write() as uow:
        await uow.users.add(name, "collector", frozenset({"bank-w"}), f"h-{name}", NOW)


async def test_a_second_process_writes_right_after_the_first_commits(tmp_path: Path) -> None:
    a, b = await _store(tmp_path), await _store(tmp_path)
    try:
        holder, release = await _held_by(a, "first")
        assert a._writer is not None and a._writer.file_lock.held  # noqa: SLF001
        second = asyncio.create_task(_add(b, "second"))
        await asyncio.sleep(0.05)  # give it every chance to (wrongly) get in
        assert not second.done() and _users_on_disk(tmp_path) == []
        release.set()
        await asyncio.wait_for(asyncio.gather(holder, second), 10)
        assert _users_on_disk(tmp_path) == ["first", "second"]
        assert not a._writer.file_lock.held  # noqa: SLF001
    finally:
        await a.__aexit__(None, None, None)
        await b.__aexit__(None, None, None)


async def test_a_write_lock_held_past_the_timeout_fails_closed_and_the_store_recovers(tmp_path: Path) -> None:
    a, b = await _store(tmp_path), await _store(tmp_path, timeout_s=0.2)
    try:
        holder, release = await _held_by(a, "slow")
        with pytest.raises(StoreUnavailable, match="timed out waiting for another process"):
            await _add(b, "late")
        # Its abandoned wait is still queued on the lock: no second wait piles up behind it.
        with pytest.raises(StoreUnavailable, match="held the database's write lock too long"):
            await _add(b, "later")
        release.set()
        await holder
        await _until_let_go(b._writer.file_lock)  # type: ignore[union-attr]  # noqa: SLF001
        await _add(b, "after")
        assert _users_on_disk(tmp_path) == ["slow", "after"]
    finally:
        await a.__aexit__(None, None, None)
        await b.__aexit__(None, None, None)


async def test_a_cancelled_wait_for_the_write_lock_leaves_nothing_held(tmp_path: Path) -> None:
    a, b = await _store(tmp_path), await _store(tmp_path)
    try:
        holder, release = await _held_by(a, "owner")
        waiting = asyncio.create_task(_add(b, "gone"))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        release.set()
        await holder
        lock: Any = b._writer.file_lock  # type: ignore[union-attr]  # noqa: SLF001
        await _until_let_go(lock)
        assert not lock.held
        await _add(a, "owner-again")  # nobody holds the lock: the first store writes at once
        await _add(b, "b-now")
        assert _users_on_disk(tmp_path) == ["owner", "owner-again", "b-now"]
    finally:
        await a.__aexit__(None, None, None)
        await b.__aexit__(None, None, None)


async def test_a_write_waits_for_a_writer_outside_dialgate_and_then_goes_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await _store(tmp_path)
    try:
        await _add(store, "before")  # the writer's connection is open: BEGIN is tried inline first
        outsider = sqlite3.connect(tmp_path / "dialgate.db", isolation_level=None, check_same_thread=False)
        outsider.execute("BEGIN IMMEDIATE")  # e.g. the sqlite3 shell: no writer lock file
        naps: list[float] = []

        def nap(seconds: float) -> None:  # in the worker thread, retrying BEGIN IMMEDIATE
            naps.append(seconds)
            if len(naps) == 2:
                outsider.execute("COMMIT")

        monkeypatch.setattr(writer_mod, "_sleep", nap)
        await asyncio.wait_for(_add(store, "after"), 10)
        assert len(naps) == 2  # it found the lock taken, waited in the thread, then wrote
        assert _users_on_disk(tmp_path) == ["before", "after"]
        outsider.close()
    finally:
        await store.__aexit__(None, None, None)


async def test_with_the_lock_free_a_write_begins_without_a_worker_thread(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    try:
        await _add(store, "opens-the-connection")
        writer: Any = store._writer  # noqa: SLF001

        def no_thread_begin() -> Any:
            raise AssertionError("BEGIN went to a worker thread with the lock free")

        writer.begin = no_thread_begin
        await _add(store, "inline")
        assert _users_on_disk(tmp_path) == ["opens-the-connection", "inline"]
    finally:
        await store.__aexit__(None, None, None)


async def _until(condition: Any) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("never came true")


async def test_the_holder_of_the_write_lock_sees_another_process_wait_for_it_and_no_longer_once_it_is_let_in(
    tmp_path: Path,
) -> None:
    a, b = await _store(tmp_path), await _store(tmp_path)
    try:
        holder, release = await _held_by(a, "import-batch")
        assert not a.writer_wanted()  # nobody waits yet
        gate = asyncio.create_task(_add(b, "gate"))
        await _until(a.writer_wanted)  # what lets a long writer commit early
        assert not gate.done()
        release.set()
        await asyncio.wait_for(asyncio.gather(holder, gate), 10)
        assert _users_on_disk(tmp_path) == ["import-batch", "gate"]
        assert not a.writer_wanted() and not b.writer_wanted()
    finally:
        await a.__aexit__(None, None, None)
        await b.__aexit__(None, None, None)


async def test_the_checkpoint_thread_runs_below_the_threads_that_answer(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    try:
        await _add(store, "first")
        threads = {t.name: t for t in store._writer._threads}  # type: ignore[union-attr]  # noqa: SLF001
        checkpoint, commit = threads["dialgate-sqlite-checkpoint"], threads["dialgate-sqlite-commit"]
        assert checkpoint.native_id is not None and commit.native_id is not None

        def nice(t: Any) -> int:
            return os.getpriority(os.PRIO_PROCESS, t.native_id)

        await _until(lambda: nice(checkpoint) >= 10)
        assert nice(commit) == os.getpriority(os.PRIO_PROCESS, 0)  # the process's own
        assert nice(checkpoint) == max(nice(commit), 10)
    finally:
        await store.__aexit__(None, None, None)
