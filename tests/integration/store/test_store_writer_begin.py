"""The SQLite writer's BEGIN IMMEDIATE waits for another process's write transaction
by retrying on its own (SQLite's busy handler sleeps up to 100 ms between tries), and
still gives up, naming the lock, when the lock stays taken past the busy timeout."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import adapters.db.store as store_mod
from adapters.db.store import begin_immediate


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

    monkeypatch.setattr(store_mod, "_sleep", nap)
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
