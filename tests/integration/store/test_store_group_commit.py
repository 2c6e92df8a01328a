"""SQLite group commit: writes queued behind a running one share its transaction
(one COMMIT, one fsync) yet each still succeeds or fails on its own, nobody hears
"done" before the COMMIT, and a failed COMMIT fails every member (fail closed)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from adapters.db.migrate import upgrade
from adapters.db.store import SqlAlchemyCaseStore
from dialer.config import build_config
from dialer.errors import StoreUnavailable

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)


def _users_on_disk(db: str) -> set[str]:
    con = sqlite3.connect(db)
    try:
        return {r[0] for r in con.execute("SELECT name FROM users")}
    finally:
        con.close()


async def _open(tmp_path: Path) -> tuple[SqlAlchemyCaseStore, str]:
    cfg = build_config({"paths": {"data_dir": str(tmp_path)}})
    store = SqlAlchemyCaseStore(cfg.store)
    await store.__aenter__()
    await upgrade(store)
    return store, cfg.store.url.split(":///", 1)[1]


async def _add(
    store: SqlAlchemyCaseStore, name: str, *, inside: asyncio.Event | None = None, until: asyncio.Event | None = None
) -> None:
    """One user row in one write. With `inside`/`until`: say so once inside the unit of
    work, then hold it (and the write lock) until `until` is set."""
    async with store.write() as uow:
        await uow.users.add(name, "collector", frozenset({"bank-g"}), f"h-{name}", NOW)
        if inside is not None:
            inside.set()
        if until is not None:
            await until.wait()


async def test_writes_queued_behind_a_running_one_are_each_on_disk_when_their_write_returns(tmp_path: Path) -> None:
    store, db = await _open(tmp_path)
    try:
        first_inside, let_first_finish = asyncio.Event(), asyncio.Event()
        seen_on_return: dict[str, bool] = {}

        async def add(name: str, hold: bool = False) -> None:
            if hold:
                await _add(store, name, inside=first_inside, until=let_first_finish)
            else:
                await _add(store, name)
            seen_on_return[name] = name in _users_on_disk(db)

        first = asyncio.create_task(add("u-0", hold=True))
        await first_inside.wait()
        rest = [asyncio.create_task(add(f"u-{i}")) for i in range(1, 20)]
        await asyncio.sleep(0)  # let them queue on the write lock
        let_first_finish.set()
        await asyncio.gather(first, *rest)

        assert seen_on_return == {f"u-{i}": True for i in range(20)}
        assert _users_on_disk(db) == {f"u-{i}" for i in range(20)}
    finally:
        await store.__aexit__(None, None, None)


async def test_writes_that_run_in_the_same_turn_of_the_event_loop_share_one_commit_and_one_wal_flush(
    tmp_path: Path,
) -> None:
    store, db = await _open(tmp_path)
    writer: Any = store._writer  # noqa: SLF001
    try:
        async with store.write() as uow:  # opens the writer's connection and threads
            await uow.users.add("warm", "collector", frozenset({"bank-g"}), "h-warm", NOW)
        real_sync = writer.sync_wal
        flushes = 0

        def counted() -> None:
            nonlocal flushes
            flushes += 1
            real_sync()

        writer.sync_wal = counted

        await asyncio.gather(*(_add(store, f"t-{i}") for i in range(20)))
        assert _users_on_disk(db) == {"warm"} | {f"t-{i}" for i in range(20)}
        assert flushes == 1  # one group: one COMMIT, one fsync for the twenty writes
    finally:
        await store.__aexit__(None, None, None)


async def test_a_group_commits_when_the_write_queued_behind_its_last_member_is_cancelled_before_its_turn(
    tmp_path: Path,
) -> None:
    store, db = await _open(tmp_path)
    try:
        b_inside, let_b_finish = asyncio.Event(), asyncio.Event()

        await _add(store, "warm")  # the writer's connection is open: BEGIN runs inline from now on
        # a and b run in the same turn: both join one group; b then holds the write lock, mid-unit
        a = asyncio.create_task(_add(store, "a"))
        b = asyncio.create_task(_add(store, "b", inside=b_inside, until=let_b_finish))
        await b_inside.wait()
        c = asyncio.create_task(_add(store, "c"))
        await asyncio.sleep(0)  # c queues on the write lock behind b
        let_b_finish.set()
        c.cancel()  # b finishes with c still queued; c is cancelled before its turn
        with pytest.raises(asyncio.CancelledError):
            await c
        _, pending = await asyncio.wait({a, b}, timeout=10)
        if pending:  # let the stuck members go (they ignore cancellation), then fail
            stuck = store._group  # noqa: SLF001
            if stuck is not None:
                stuck.error = StoreUnavailable("the test gave up on this group")
                stuck.settle()
            await asyncio.gather(*pending, return_exceptions=True)
            pytest.fail("a group member still waits for a COMMIT nobody will make")
        await asyncio.gather(a, b)

        assert _users_on_disk(db) == {"warm", "a", "b"}
        await _add(store, "after")
        assert _users_on_disk(db) == {"warm", "a", "b", "after"}
    finally:
        await store.__aexit__(None, None, None)


async def test_a_write_that_fails_inside_a_group_undoes_only_itself(tmp_path: Path) -> None:
    store, db = await _open(tmp_path)
    try:
        first_inside, let_first_finish = asyncio.Event(), asyncio.Event()

        async def add(name: str, *, hold: bool = False, fail: bool = False) -> None:
            async with store.write() as uow:
                await uow.users.add(name, "collector", frozenset({"bank-g"}), f"h-{name}", NOW)
                if hold:
                    first_inside.set()
                    await let_first_finish.wait()
                if fail:
                    raise ValueError("refused after writing")

        first = asyncio.create_task(add("keep-1", hold=True))
        await first_inside.wait()
        failing = asyncio.create_task(add("undone", fail=True))
        last = asyncio.create_task(add("keep-2"))
        await asyncio.sleep(0)
        let_first_finish.set()
        await first
        with pytest.raises(ValueError, match="refused after writing"):
            await failing
        await last

        assert _users_on_disk(db) == {"keep-1", "keep-2"}
    finally:
        await store.__aexit__(None, None, None)


async def test_when_the_group_commit_fails_every_member_is_told_the_store_is_unavailable_and_nothing_is_kept(
    tmp_path: Path,
) -> None:
    store, db = await _open(tmp_path)
    try:
        first_inside, let_first_finish = asyncio.Event(), asyncio.Event()

        async def poison() -> None:
            # A foreign-key violation checked only at COMMIT: the whole group's COMMIT fails.
            async with store.write() as uow:
                await uow.conn.exec_driver_sql("PRAGMA defer_foreign_keys=ON")
                await uow.conn.exec_driver_sql(
                    "INSERT INTO user_creditors (user_id, creditor) VALUES (987654, 'no-such-creditor')"
                )

        first = asyncio.create_task(_add(store, "g-1", inside=first_inside, until=let_first_finish))
        await first_inside.wait()
        bad = asyncio.create_task(poison())
        other = asyncio.create_task(_add(store, "g-2"))
        await asyncio.sleep(0)
        let_first_finish.set()
        results = await asyncio.gather(first, bad, other, return_exceptions=True)

        assert all(isinstance(r, StoreUnavailable) for r in results), results
        assert _users_on_disk(db) == set()
        await _add(store, "after")  # the store is usable again
        assert _users_on_disk(db) == {"after"}
    finally:
        await store.__aexit__(None, None, None)


def test_a_commit_that_fails_in_an_unexpected_way_fails_its_members_closed_and_the_store_goes_on(
    tmp_path: Path,
) -> None:
    # On a loop of its own in a thread: were the members left waiting for a group that
    # never settles (they outwait cancellation), the test fails at the deadline instead
    # of hanging the suite.
    async def scenario() -> tuple[list[Any], set[str]]:
        store, db = await _open(tmp_path)
        writer: Any = store._writer  # noqa: SLF001
        try:
            await _add(store, "warm")  # the writer's connection is open: BEGIN runs inline from now on
            real_commit = writer.commit

            def broken(trans: Any) -> None:  # not a database error: a bug, say
                writer.commit = real_commit
                real_commit(trans)
                raise ValueError("unexpected")

            writer.commit = broken
            results = await asyncio.gather(_add(store, "x-1"), _add(store, "x-2"), return_exceptions=True)
            await _add(store, "after")  # the store goes on
            return results, _users_on_disk(db)
        finally:
            await store.__aexit__(None, None, None)

    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = asyncio.run(scenario())
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "the group's members still wait for a COMMIT that failed"
    if "error" in outcome:
        raise outcome["error"]
    results, on_disk = outcome["value"]
    assert all(isinstance(r, StoreUnavailable) for r in results), results  # fail closed
    assert {"warm", "after"} <= on_disk


async def test_writes_cancelled_at_any_point_of_a_busy_group_commit_never_hang_and_never_lose_a_returned_write(
    tmp_path: Path,
) -> None:
    import random

    store, db = await _open(tmp_path)
    rnd = random.Random(4475)
    try:
        returned: list[str] = []

        async def add(name: str) -> None:
            await _add(store, name)
            returned.append(name)

        for round_ in range(5):
            tasks = [asyncio.create_task(add(f"r{round_}-{i}")) for i in range(60)]
            victims = [t for i, t in enumerate(tasks) if i % 4 == 1]
            for _ in range(rnd.randrange(1, 40)):  # cancel somewhere between queueing and committing
                await asyncio.sleep(0)
            for t in victims:
                t.cancel()
            done, pending = await asyncio.wait(tasks, timeout=30)
            assert not pending, "a write hung"
            for t in done:
                assert t.cancelled() or t.exception() is None, t.exception()
        on_disk = _users_on_disk(db)
        assert set(returned) <= on_disk  # a write that returned is committed
        # Cancelled ones are either wholly there or wholly absent; the store still works.
        await add("after")
        assert "after" in _users_on_disk(db)
    finally:
        await store.__aexit__(None, None, None)


async def test_with_synchronous_full_a_write_returns_only_after_its_wal_flush_and_the_next_write_runs_during_it(
    tmp_path: Path,
) -> None:
    import threading

    store, db = await _open(tmp_path)
    writer: Any = store._writer  # noqa: SLF001
    async with store.write() as uow:  # opens the writer's connection
        await uow.users.add("first", "collector", frozenset({"bank-g"}), "h-first", NOW)
    assert writer.durable_by_fsync  # [store] sqlite_synchronous = "FULL", the default
    real_sync = writer.sync_wal
    flushing, let_flush = threading.Event(), threading.Event()
    calls = 0

    def slow_first_flush() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            flushing.set()
            let_flush.wait(10)
        real_sync()

    writer.sync_wal = slow_first_flush
    try:
        first = asyncio.create_task(_add(store, "flushed-late"))
        assert await asyncio.to_thread(flushing.wait, 10)
        assert not first.done()  # committed, not yet on stable storage: no answer
        assert "flushed-late" in _users_on_disk(db)
        # The write lock was let go at COMMIT: the next write runs and commits during the
        # flush (a reader sees it), and is answered once a flush after its COMMIT is done.
        second = asyncio.create_task(_add(store, "meanwhile"))
        for _ in range(2000):
            if "meanwhile" in _users_on_disk(db):
                break
            await asyncio.sleep(0.005)
        assert "meanwhile" in _users_on_disk(db)
        assert not first.done() and not second.done()
        let_flush.set()
        await asyncio.wait_for(asyncio.gather(first, second), 10)
        assert _users_on_disk(db) == {"first", "flushed-late", "meanwhile"}
        assert calls == 2  # the second flush covered the second write
    finally:
        let_flush.set()
        await store.__aexit__(None, None, None)


async def test_a_wal_flush_that_fails_fails_its_write_closed(tmp_path: Path) -> None:
    import errno

    store, _db = await _open(tmp_path)
    writer: Any = store._writer  # noqa: SLF001

    def broken_disk() -> None:
        raise OSError(errno.EIO, "Input/output error")

    writer.sync_wal = broken_disk
    try:
        with pytest.raises(StoreUnavailable, match="could not be flushed to disk"):
            async with store.write() as uow:
                await uow.users.add("lost", "collector", frozenset({"bank-g"}), "h-lost", NOW)
    finally:
        await store.__aexit__(None, None, None)


async def test_with_synchronous_normal_the_writer_leaves_syncing_to_sqlite(tmp_path: Path) -> None:
    cfg = build_config({"paths": {"data_dir": str(tmp_path)}, "store": {"sqlite_synchronous": "NORMAL"}})
    store = SqlAlchemyCaseStore(cfg.store)
    await store.__aenter__()
    try:
        await upgrade(store)
        async with store.write() as uow:
            await uow.users.add("n", "collector", frozenset({"bank-g"}), "h-n", NOW)
            assert uow.cases.raw.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert not store._writer.durable_by_fsync  # type: ignore[union-attr]  # noqa: SLF001
    finally:
        await store.__aexit__(None, None, None)


def _users_in_main_file(db: str, scratch: Path) -> set[str] | None:
    """The users a copy of the database file alone (no WAL) holds: what checkpoints have
    copied back. None when the copy caught a checkpoint half-way."""
    copy = scratch / "main-only.db"
    copy.write_bytes(Path(db).read_bytes())
    try:
        con = sqlite3.connect(copy)
        try:
            return {r[0] for r in con.execute("SELECT name FROM users")}
        finally:
            con.close()
    except sqlite3.DatabaseError:
        return None


async def test_committed_pages_reach_the_database_file_through_the_background_checkpointer(tmp_path: Path) -> None:
    from adapters.db.sqlite_writer import WAL_BACKSTOP_PAGES

    store, db = await _open(tmp_path)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    try:
        # A few small writes: far below the WAL size at which a COMMIT would checkpoint
        # on its own, so only the checkpointer's thread can copy them into the file.
        for i in range(5):
            async with store.write() as uow:
                await uow.users.add(f"ck-{i}", "collector", frozenset({"bank-g"}), f"h-ck-{i}", NOW)
                assert uow.cases.raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == WAL_BACKSTOP_PAGES
        wanted = {f"ck-{i}" for i in range(5)}
        seen: set[str] | None = None
        for _ in range(1000):  # the checkpointer runs every 50 ms while writes come in
            seen = _users_in_main_file(db, scratch)
            if seen is not None and wanted <= seen:
                break
            await asyncio.sleep(0.01)
        assert seen is not None and wanted <= seen
        threads = list(store._writer._threads)  # type: ignore[union-attr]  # noqa: SLF001
        assert [t.name for t in threads if t.is_alive()][-1] == "dialgate-sqlite-checkpoint"
    finally:
        await store.__aexit__(None, None, None)
    assert not [t.name for t in threads if t.is_alive()]  # stopped with the store


def test_the_checkpointers_connection_never_creates_a_database_where_none_is(tmp_path: Path) -> None:
    from adapters.db.sqlite_writer import open_existing

    gone = tmp_path / "dialgate.db"  # its directory is there, the file is not (deleted, moved)
    with pytest.raises(sqlite3.OperationalError):
        open_existing(str(gone))
    assert not gone.exists()
    there = tmp_path / "数据 #1.db"  # spaces, '#' and non-ASCII survive the URI
    sqlite3.connect(there).execute("CREATE TABLE t (x)").connection.close()
    con = open_existing(str(there))
    try:
        assert con.execute("SELECT name FROM sqlite_master").fetchall() == [("t",)]
    finally:
        con.close()
