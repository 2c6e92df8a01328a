"""The console's blocked-dial pages and CSV export read the decision log newest first
without sorting the whole date range, for every reviewed kind (dials and PBX rechecks).

With `kind IN ('dial', 'recheck')` SQLite can seek the review index
(allowed, kind, at, ...) but gets two runs of rows, each in `at` order, and must sort
all of them to hand out one page (~25x slower at 10^5 blocked dials). The console
therefore asks once per kind and merges. Plans are SQLite's defaults on the migrated
schema (DialGate never runs ANALYZE), so an empty database shows a large one's plans.
tests/integration/store/test_decision_log_indexes.py holds every reader to an index seek;
this module holds the console's paging to an ordered one.
"""

from __future__ import annotations

import sqlite3
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import event

from adapters.db.console_blocked import encode_cursor
from adapters.db.console_queries import SqlAlchemyConsoleQueries
from adapters.db.migrate import upgrade
from adapters.db.store import SqlAlchemyCaseStore
from dialer.config import build_config
from dialer.console.ports import BlockedDialFilter, Principal
from dialer.model import REVIEWED_KINDS

TODAY = date(2026, 11, 24)
D30 = {"date_from": TODAY - timedelta(days=29), "date_to": TODAY}
FILTERS = {
    "30 days": BlockedDialFilter(**D30),
    "creditor, 30 days": BlockedDialFilter(**D30, creditor="bank-b"),
    "agent, 30 days": BlockedDialFilter(**D30, agent="col-1"),
    "rule, 30 days": BlockedDialFilter(**D30, rule_id="case.paused"),
    "case of a creditor": BlockedDialFilter(creditor="bank-b", case_id="B-1"),
    "all time": BlockedDialFilter(),
}
WHO = Principal("comp", "comp", "compliance", frozenset({"bank-a", "bank-b"}))


@pytest.fixture
async def paging_statements(tmp_path: Path) -> tuple[Path, list[tuple[str, str, Any]]]:
    """(label, SQL, parameters) of what the console sends for pages and exports."""
    path = tmp_path / "plans.db"
    cfg = build_config({"paths": {"data_dir": str(tmp_path)}, "store": {"url": f"sqlite+aiosqlite:///{path}"}})
    captured: list[tuple[str, str, Any]] = []
    label = ["?"]

    def on_execute(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and " decisions" in statement:
            captured.append((label[0], statement, parameters))

    async with SqlAlchemyCaseStore(cfg.store) as store:
        await upgrade(store)
        cq = SqlAlchemyConsoleQueries(SimpleNamespace(store=store, auth=None))
        cursor = encode_cursor(datetime(2026, 11, 20, tzinfo=timezone.utc), 10**9)
        event.listen(store.engine.sync_engine, "before_cursor_execute", on_execute)
        try:
            for name, flt in FILTERS.items():
                label[0] = f"page, {name}"
                await cq.blocked_dials(WHO, flt, None, 50)
                label[0] = f"later page, {name}"
                await cq.blocked_dials(WHO, flt, cursor, 50)
                label[0] = f"export, {name}"
                async for _ in cq.export_blocked_dials(WHO, flt):
                    pass
        finally:
            event.remove(store.engine.sync_engine, "before_cursor_execute", on_execute)
    return path, captured


def _plans(path: Path, statements: list[tuple[str, str, Any]]) -> list[tuple[str, Any, list[str]]]:
    con = sqlite3.connect(path)
    try:
        return [(label, params, [r[3] for r in con.execute("EXPLAIN QUERY PLAN " + sql, params)])
                for label, sql, params in statements]
    finally:
        con.close()


async def test_every_blocked_dial_page_and_export_reads_an_index_in_order_without_sorting_the_range(
    paging_statements,
) -> None:
    path, statements = paging_statements
    plans = _plans(path, statements)
    assert {label for label, _, _ in plans} == {f"{p}, {f}" for p in ("page", "later page", "export") for f in FILTERS}
    for label, _, plan in plans:
        assert [line for line in plan if line.startswith("SEARCH decisions")], (label, plan)
        assert not [line for line in plan if line.startswith("SCAN decisions")], (label, plan)
        # "RIGHT PART OF ORDER BY" (ties on `at` ordered by id) streams; a whole ORDER BY does not.
        assert "USE TEMP B-TREE FOR ORDER BY" not in plan, (label, plan)


async def test_each_page_asks_for_every_reviewed_kind_and_never_for_what_if_checks(paging_statements) -> None:
    path, statements = paging_statements
    by_label: dict[str, set[str]] = {}
    for label, params, _ in _plans(path, statements):
        by_label.setdefault(label, set()).update(p for p in params if p in ("dial", "check", "recheck"))
    assert by_label and all(kinds == set(REVIEWED_KINDS) for kinds in by_label.values()), by_label
    assert "check" not in REVIEWED_KINDS
