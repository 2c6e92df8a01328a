"""A caller cancelled while the SQLite writer thread is opening its transaction (a
timeout around a decision, a client gone) leaves nothing behind: the transaction is
rolled back at once (SQLite's write lock is free for other processes), the next
decide-and-reserve works, and the cancelled one wrote nothing. A caller cancelled after
its COMMIT, while the WAL flush that makes it durable runs, gets the whole write
committed (decision and attempt together), never half of it, and the next write works
too. (The COMMIT itself runs on the event loop at the end of a turn, so nothing can
cancel a caller in the middle of it.)
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import func, select

from adapters.db import tables
from tests.support.builders import one_case
from dialer.app import build_app
from dialer.auth import add_user
from dialer.clock import FixedClock
from dialer.config import build_config


async def _count(store: Any, table: Any) -> int:
    async with store.read() as uow:
        return (await uow.conn.execute(select(func.count()).select_from(table))).scalar_one()


def _write_lock_is_free(db_path: str) -> bool:
    """Can another connection take SQLite's write lock right now (no waiting)?"""
    conn = sqlite3.connect(db_path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


async def _gate(tmp_path: Path) -> Any:
    cfg = build_config({"paths": {"data_dir": str(tmp_path)}})
    clock = FixedClock(datetime(2026, 11, 24, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai")))
    return cfg, clock, build_app(cfg, clock=clock)


async def test_a_dial_cancelled_while_its_commit_is_flushed_to_disk_is_committed_whole_and_the_next_dial_works(
    tmp_path: Path,
) -> None:
    cfg, clock, app = await _gate(tmp_path)
    async with app.router.lifespan_context(app):
        store = app.state.services.store
        _, col = await add_user(store, clock, "col-c", "collector", frozenset({"bank-c"}))
        _, data = await add_user(store, clock, "data-c", "data", frozenset({"bank-c"}))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gate", timeout=60) as c:
            case = one_case("CC-1", "bank-c", "col-c", "13800000099")
            case["commission_start"], case["commission_end"] = "2026-11-01", "2026-12-31"
            r = await c.post("/v1/cases:import", json={"cases": [case]}, headers={"Authorization": f"Bearer {data}"})
            assert r.status_code == 200, r.text
            attempts_before = await _count(store, tables.attempts)
            decisions_before = await _count(store, tables.decisions)

            writer = store._writer
            assert writer is not None and writer.durable_by_fsync  # synchronous = FULL, the default
            flushing, release = threading.Event(), threading.Event()
            real_sync = writer.sync_wal

            def hold_flush() -> None:  # the flush thread, after the COMMIT
                if not flushing.is_set():  # only the first flush is held
                    flushing.set()
                    release.wait(10)
                real_sync()

            writer.sync_wal = hold_flush
            body = {"case_id": "CC-1", "number": "13800000099", "agent_id": "col-c"}
            auth = {"Authorization": f"Bearer {col}"}
            dial = asyncio.ensure_future(c.post("/v1/dials", json=body, headers=auth))
            try:
                assert await asyncio.to_thread(flushing.wait, 10), "the dial's commit never reached its flush"
                dial.cancel()
                await asyncio.sleep(0)  # the cancellation reaches the dial while its flush runs
                assert not dial.done()  # it waits for the flush: its write belongs to the group
            finally:
                release.set()
            with pytest.raises(asyncio.CancelledError):
                await dial
            writer.sync_wal = real_sync

            db_path = cfg.store.url.split(":///", 1)[1]
            assert _write_lock_is_free(db_path), "the cancelled dial's transaction still holds the write lock"
            assert await _count(store, tables.attempts) == attempts_before + 1
            assert await _count(store, tables.decisions) == decisions_before + 1

            r = await c.post("/v1/dials", json=body, headers=auth)
            assert r.status_code == 201, r.text
        assert await _count(store, tables.attempts) == attempts_before + 2
        assert await _count(store, tables.decisions) == decisions_before + 2


async def test_a_dial_cancelled_while_its_write_transaction_begins_leaves_no_transaction_and_the_next_dial_is_allowed(
    tmp_path: Path,
) -> None:
    cfg = build_config({"paths": {"data_dir": str(tmp_path)}})
    clock = FixedClock(datetime(2026, 11, 24, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai")))
    app = build_app(cfg, clock=clock)
    async with app.router.lifespan_context(app):
        svc = app.state.services
        store = svc.store
        _, col = await add_user(store, clock, "col-c", "collector", frozenset({"bank-c"}))
        _, data = await add_user(store, clock, "data-c", "data", frozenset({"bank-c"}))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gate", timeout=60) as c:
            case = one_case("CC-1", "bank-c", "col-c", "13800000099")
            case["commission_start"], case["commission_end"] = "2026-11-01", "2026-12-31"
            r = await c.post("/v1/cases:import", json={"cases": [case]}, headers={"Authorization": f"Bearer {data}"})
            assert r.status_code == 200, r.text
            attempts_before = await _count(store, tables.attempts)
            decisions_before = await _count(store, tables.decisions)

            # Hold the writer thread just after BEGIN IMMEDIATE succeeded, cancel the
            # caller there, then let the thread finish.
            writer = store._writer
            assert writer is not None, "a file database writes through the SQLite writer"
            real_begin = writer.begin
            begun, release = threading.Event(), threading.Event()

            def held_begin() -> Any:
                trans = real_begin()
                writer.begin = real_begin  # only the first write is held
                begun.set()
                release.wait(10)
                return trans

            writer.begin = held_begin
            # BEGIN goes to the worker thread when it could wait (lock taken, connection
            # to open); a free lock is taken inline (`begin_now`). Take the thread path.
            writer.begin_now = lambda: None
            body = {"case_id": "CC-1", "number": "13800000099", "agent_id": "col-c"}
            auth = {"Authorization": f"Bearer {col}"}
            dial = asyncio.ensure_future(c.post("/v1/dials", json=body, headers=auth))
            assert await asyncio.to_thread(begun.wait, 10), "the dial never began its write"
            dial.cancel()
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await dial

            db_path = cfg.store.url.split(":///", 1)[1]
            assert _write_lock_is_free(db_path), "the cancelled dial's transaction still holds the write lock"
            assert await _count(store, tables.attempts) == attempts_before
            assert await _count(store, tables.decisions) == decisions_before

            r = await c.post("/v1/dials", json=body, headers=auth)
            assert r.status_code == 201, r.text
        assert await _count(store, tables.attempts) == attempts_before + 1
        assert await _count(store, tables.decisions) == decisions_before + 1
