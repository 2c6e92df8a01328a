"""Every reader of the decision log, attempts and outbox seeks an index on the migrated
schema, as SQLite plans it in production: DialGate never runs ANALYZE, so there is no
sqlite_stat1 and the planner uses its default estimates. Those plans do not depend on
the rows present, so a small database shows the plans of a 10^6-row one.

The statements are the ones the real readers send (captured from the store's engine while
the repositories and console queries run), not copies of them.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from alembic import command
from sqlalchemy import event, update
from sqlalchemy.dialects import sqlite as sqlite_dialect

from adapters.db import ledger_sqlite as hot
from adapters.db.console_blocked import encode_cursor
from adapters.db.console_queries import SqlAlchemyConsoleQueries
from adapters.db.migrate import alembic_config, upgrade
from adapters.db.outbox_source import Q_PRUNE, SqlAlchemyOutboxSource
from adapters.db.store import SqlAlchemyCaseStore
from adapters.db.tables import attempts, outbox
from dialer.config import build_config
from dialer.console.ports import BlockedDialFilter, NotFound, Principal

UTC = timezone.utc
SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
TODAY = NOW.astimezone(SHANGHAI).date()
TABLES = ("decisions", "attempts", "outbox")
# Readers whose job is the whole table, by design.
WHOLE_TABLE = {"audit: chain names"}
# Known gap (before and after migration 0004): the console's case filter for an admin who
# names no creditor reads the whole (allowed, kind, at, ...) index; nothing indexes
# decisions by case_id alone (157 ms at 10^6 decisions).
ADMIN_CASE_ONLY = {"console admin: page, case", "console admin: later page, case", "console admin: export, case"}


def _plan(con: sqlite3.Connection, sql: str, params: Any) -> list[str]:
    return [r[3] for r in con.execute("EXPLAIN QUERY PLAN " + sql, params)]


async def _capture(store: SqlAlchemyCaseStore) -> list[tuple[str, str, Any]]:
    """(label, SQL, parameters) of every SELECT on the three tables the readers send."""
    captured: list[tuple[str, str, Any]] = []
    label = ["?"]

    def on_execute(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        verb = statement.lstrip().upper()
        if verb.startswith(("SELECT", "UPDATE", "DELETE")) and any(f" {t}" in statement for t in TABLES):
            captured.append((label[0], statement, parameters))

    event.listen(store.engine.sync_engine, "before_cursor_execute", on_execute)
    try:
        since30, since7 = NOW - timedelta(days=30), NOW - timedelta(days=7)
        both = frozenset({"bank-a", "bank-b"})
        # The JSON API (`Gate.blocked_dials` / `blocked_summary` → SqlDecisionLog), every filter.
        api: dict[str, dict[str, Any]] = {
            "api: everything": {},
            "api: two creditors": {"creditors": both},
            "api: one creditor": {"creditors": frozenset({"bank-b"})},
            "api: since (dated)": {"since": since7},
            "api: one day (dated)": {"since": NOW - timedelta(days=3), "until": NOW - timedelta(days=2)},
            "api: two creditors, 30 days (dated)": {"creditors": both, "since": since30, "until": NOW},
            "api: one creditor, 30 days (dated)": {"creditors": frozenset({"bank-b"}), "since": since30, "until": NOW},
            "api: agent": {"agent_id": "col-1"},
            "api: agent, two creditors, 30 days (dated)": {"agent_id": "col-1", "creditors": both, "since": since30},
            "api: rule": {"rule_id": "case.paused"},
            "api: rule, one creditor, 7 days (dated)": {"rule_id": "case.paused", "creditors": frozenset({"bank-b"}),
                                                        "since": since7},
            "api: case of one creditor": {"case_id": "B-1", "creditors": frozenset({"bank-b"})},
            "api: case": {"case_id": "B-1"},
            "api: next page": {"after": 1000},
            "api: next page, two creditors, 30 days (dated)": {"after": 1000, "creditors": both, "since": since30},
        }
        for name, kw in api.items():
            args: dict[str, Any] = dict(allowed=False, creditors=None, since=None, until=None, agent_id=None,
                                        rule_id=None, case_id=None, after=None, limit=100)
            label[0] = name
            async with store.read() as uow:
                await uow.decisions.query(**{**args, **kw})
        for name, kw in {
            "api summary: everything": {"creditors": None, "since": None, "until": None},
            "api summary: two creditors, 30 days (dated)": {"creditors": both, "since": since30, "until": NOW},
            "api summary: one creditor, 7 days (dated)": {"creditors": frozenset({"bank-b"}), "since": since7,
                                                          "until": None},
        }.items():
            label[0] = name
            async with store.read() as uow:
                await uow.decisions.blocked_summary(**kw)
        async with store.read() as uow:
            label[0] = "decision by id"
            await uow.decisions.get_many(["d-1", "d-2"])
            label[0] = "audit: chain names"
            await uow.decisions.chain_names()
            label[0] = "audit: iterate a chain"
            async for _ in uow.decisions.iterate("bank-b"):
                pass
            label[0] = "attempts: expiry sweep"
            await uow.attempts.expired(NOW)
            label[0] = "attempts: by id"
            await uow.attempts.get("a-1")
            label[0] = "attempts: pending authorisation"
            await uow.attempts.find_pending("col-1", "+8613800000001", NOW)
            label[0] = "attempts: of a case"
            await uow.attempts.for_case(1)
            label[0] = "attempts: history"
            await uow.attempts.history("+8613800000001", 1, "bank-b", NOW - timedelta(days=30))
            label[0] = "outbox: pending"
            await uow.outbox.pending()
        relay = SqlAlchemyOutboxSource(store)
        label[0] = "outbox: relay unsent"
        await relay.fetch_unsent(100)
        label[0] = "outbox: unsent count"
        await relay.unsent_count()

        # The web console.
        cq = SqlAlchemyConsoleQueries(SimpleNamespace(store=store, auth=None))
        d30 = {"date_from": TODAY - timedelta(days=29), "date_to": TODAY}
        filters = {
            "30 days (dated)": BlockedDialFilter(**d30),
            "creditor, 30 days (dated)": BlockedDialFilter(**d30, creditor="bank-b"),
            "agent, 30 days (dated)": BlockedDialFilter(**d30, agent="col-1"),
            "rule, 30 days (dated)": BlockedDialFilter(**d30, rule_id="case.paused"),
            "case, 30 days (dated)": BlockedDialFilter(**d30, creditor="bank-b", case_id="B-1"),
            "case of a creditor": BlockedDialFilter(creditor="bank-b", case_id="B-1"),
            "case": BlockedDialFilter(case_id="B-1"),
            "all time": BlockedDialFilter(),
            "one day (dated)": BlockedDialFilter(date_from=TODAY - timedelta(days=3), date_to=TODAY - timedelta(days=3)),
            "90 days (dated)": BlockedDialFilter(date_from=TODAY - timedelta(days=89), date_to=TODAY),
            "agent and rule": BlockedDialFilter(agent="col-1", rule_id="case.paused"),
        }
        admin = Principal("adm", "adm", "admin")
        compliance = Principal("comp", "comp", "compliance", both)
        cursor = encode_cursor(NOW - timedelta(days=10), 10**9)
        for who in (admin, compliance):
            for fname, flt in filters.items():
                label[0] = f"console {who.role}: page, {fname}"
                await cq.blocked_dials(who, flt, None, 50)
                label[0] = f"console {who.role}: later page, {fname}"
                await cq.blocked_dials(who, flt, cursor, 50)
                label[0] = f"console {who.role}: summary, {fname}"
                cq._summaries.clear()
                await cq.blocked_summary(who, flt)
                label[0] = f"console {who.role}: export, {fname}"
                async for _ in cq.export_blocked_dials(who, flt):
                    pass
            label[0] = f"console {who.role}: filter options"
            await cq._filter_options(who)
        label[0] = "console: case page"
        await cq.case(admin, "bank-b", "B-1")
        label[0] = "console: decision"
        with pytest.raises(NotFound):
            await cq.decision(admin, "d-1")
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", on_execute)
    # The SQLite writer's own statements (ledger_sqlite): the SIP gate's INVITE without a case
    # id resolves its case through the pending authorisation inside the write.
    # Writes run on the SQLite writer's own connection, out of the engine's sight: their
    # lookups are compiled here from the statements the code runs.
    for name, stmt, values in (
        ("outbox: relay prunes published", Q_PRUNE, {"cutoff": "2026-11-17 10:00:00.000000", "limit": 500}),
        ("outbox: relay marks sent", update(outbox).where(outbox.c.id.in_([1, 2]), outbox.c.published_at.is_(None))
         .values(published_at="2026-11-24 10:00:00.000000"), {}),
        ("attempts: state change", update(attempts).where(attempts.c.id == "a-1").values(state="expired"), {}),
    ):
        compiled = stmt.compile(dialect=sqlite_dialect.dialect(), compile_kwargs={"render_postcompile": True})
        bound = compiled.construct_params(values)
        captured.append((name, str(compiled), tuple(bound[k] for k in compiled.positiontup or ())))
    captured += [
        ("hot: history", hot.HISTORY, {"number": "+8613800000001", "case_pk": 1, "since": "2026-10-25 00:00:00.000000"}),
        ("hot: attempt by id", hot.ATTEMPT_BY_ID, ("a-1",)),
        ("hot: pending authorisation", hot.ATTEMPT_PENDING, ("col-1", "+8613800000001", "2026-11-24 10:00:00.000000")),
        ("hot: agent's active cases holding a number", hot.CASES_WITH_CONTACTS_ACTIVE_FOR_AGENT_NUMBER,
         ("+8613800000001", "col-1")),
    ]
    return captured


@pytest.fixture
async def migrated(tmp_path: Path) -> tuple[Path, list[tuple[str, str, Any]]]:
    path = tmp_path / "plans.db"
    cfg = build_config({"paths": {"data_dir": str(tmp_path)}, "store": {"url": f"sqlite+aiosqlite:///{path}"}})
    async with SqlAlchemyCaseStore(cfg.store) as store:
        await upgrade(store)
        con = sqlite3.connect(path)
        con.execute("INSERT INTO creditors (id, name, created_at) VALUES ('bank-b', 'B', '2026-01-01 00:00:00.000000')")
        con.execute(
            "INSERT INTO cases (creditor, case_id, debtor_name, status, flags, follow_up_status, event_seq, created_at, "
            "updated_at) VALUES ('bank-b', 'B-1', 'x', 'active', '', 'new', 0, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
        )
        con.commit()
        con.close()
        statements = await _capture(store)
    return path, statements


def _labelled_plans(path: Path, statements: list[tuple[str, str, Any]]) -> list[tuple[str, list[str]]]:
    con = sqlite3.connect(path)
    try:
        assert con.execute("SELECT count(*) FROM sqlite_master WHERE name LIKE 'sqlite_stat%'").fetchone() == (0,)
        return [(label, _plan(con, sql, params)) for label, sql, params in statements]
    finally:
        con.close()


def _scans(plan: list[str]) -> list[str]:
    """Plan lines that read a whole table or a whole index of it (no seek)."""
    return [line for line in plan if line.startswith(tuple(f"SCAN {t}" for t in TABLES))]


async def test_every_reader_of_decisions_attempts_and_outbox_seeks_an_index_without_analyze(migrated) -> None:
    path, statements = migrated
    plans = _labelled_plans(path, statements)
    labels = {label for label, _ in plans}
    # Every reader ran and was captured (a reader that stopped sending SQL would hide here).
    assert {"api: everything", "api summary: everything", "audit: iterate a chain", "attempts: expiry sweep",
            "outbox: relay unsent", "outbox: relay prunes published",
            "attempts: state change", "console compliance: export, creditor, 30 days (dated)",
            "console admin: summary, 90 days (dated)", "console: case page", "hot: pending authorisation"} <= labels
    scanning = [
        (label, plan) for label, plan in plans
        if label not in WHOLE_TABLE | ADMIN_CASE_ONLY and _scans(plan)
    ]
    assert scanning == []
    for label, plan in plans:
        if label in WHOLE_TABLE:
            assert all("INDEX" in line for line in _scans(plan)), (label, plan)


async def test_an_admins_case_filter_without_a_creditor_seeks_an_index(migrated) -> None:
    """Migration 0007's index (blocked decisions by case): before it, an admin's case
    filter without a creditor read every blocked decision (a strict xfail until then)."""
    path, statements = migrated
    assert [(label, plan) for label, plan in _labelled_plans(path, statements)
            if label in ADMIN_CASE_ONLY and _scans(plan)] == []


async def test_date_bounded_blocked_dial_queries_seek_on_the_date(migrated) -> None:
    """A date range is the narrowest filter most reviews have: the index seek must use it
    (`ix_decisions_review`: allowed, kind, at), not read every blocked decision and filter
    the date row by row."""
    path, statements = migrated
    dated = [(label, plan) for label, plan in _labelled_plans(path, statements) if "(dated)" in label]
    assert len(dated) > 20
    for label, plan in dated:
        if plan == ["SEARCH decisions"]:  # the console summary's `SELECT max(id)`: the rowid's last
            continue
        seeks = [line for line in plan if line.startswith("SEARCH decisions")]
        assert seeks and all(("at>" in s or "at<" in s or "case_id=" in s) for s in seeks), (label, plan)


async def test_the_pending_authorisation_lookup_seeks_agent_and_number_not_every_live_authorisation(migrated) -> None:
    path, statements = migrated
    plans = dict(_labelled_plans(path, statements))
    for label in ("attempts: pending authorisation", "hot: pending authorisation"):
        attempts = [line for line in plans[label] if "attempts" in line]
        assert attempts and all("agent_id=? AND state=? AND number=?" in line for line in attempts), (label, plans[label])


def _indexes(path: Path, table: str) -> set[str]:
    con = sqlite3.connect(path)
    try:
        return {r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (table,))}
    finally:
        con.close()


async def _downgrade(store: SqlAlchemyCaseStore, revision: str) -> None:
    """Alembic's downgrade to `revision` on the store's own connection."""

    def down(sync_conn: Any) -> None:
        alembic = alembic_config()
        alembic.attributes["connection"] = sync_conn
        command.downgrade(alembic, revision)

    async with store.engine.begin() as conn:
        await conn.run_sync(down)


async def test_the_index_migration_downgrades_to_the_old_indexes_and_upgrades_again(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    cfg = build_config({"paths": {"data_dir": str(tmp_path)}, "store": {"url": f"sqlite+aiosqlite:///{path}"}})
    async with SqlAlchemyCaseStore(cfg.store) as store:
        await upgrade(store)
        now_decisions, now_attempts = _indexes(path, "decisions"), _indexes(path, "attempts")
        assert "ix_decisions_creditor_at" not in now_decisions
        assert "ix_attempts_agent_id_state_number_valid_until" in now_attempts
        await _downgrade(store, "0003_expiry")
        # (Later revisions on this branch are undone too; only 0004's own indexes are asserted.)
        assert "ix_decisions_creditor_at" in _indexes(path, "decisions")
        before_attempts = _indexes(path, "attempts")
        assert "ix_attempts_agent_id_state_number" in before_attempts
        assert "ix_attempts_agent_id_state_number_valid_until" not in before_attempts
        await upgrade(store)
        assert (_indexes(path, "decisions"), _indexes(path, "attempts")) == (now_decisions, now_attempts)


PARTIAL = {  # migration 0006
    "ix_attempts_agent_id_state_number_valid_until": "WHERE state = 'authorised'",
    "ix_attempts_state_valid_until": "WHERE state = 'authorised'",
    "ix_decisions_review": "WHERE allowed IS 0",
}
BLOCKED_CASE = ("ix_decisions_blocked_case_kind_at", "WHERE coalesce(allowed, 1) IS 0")  # migration 0007


def _index_sql(path: Path) -> dict[str, str]:
    con = sqlite3.connect(path)
    try:
        return {r[0]: r[1] for r in con.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
            "AND tbl_name IN ('attempts', 'decisions')")}
    finally:
        con.close()


async def test_the_state_and_review_indexes_are_partial_after_migration_and_in_the_table_definitions(
    tmp_path: Path,
) -> None:
    from sqlalchemy import create_engine

    from adapters.db.tables import metadata

    migrated = tmp_path / "migrated.db"
    cfg = build_config({"paths": {"data_dir": str(tmp_path)}, "store": {"url": f"sqlite+aiosqlite:///{migrated}"}})
    async with SqlAlchemyCaseStore(cfg.store) as store:
        await upgrade(store)
    declared = tmp_path / "declared.db"
    engine = create_engine(f"sqlite:///{declared}")
    metadata.create_all(engine)
    engine.dispose()
    for path in (migrated, declared):
        sql = _index_sql(path)
        for name, where in (*PARTIAL.items(), BLOCKED_CASE):
            assert sql[name].endswith(where), (path.name, sql[name])


async def test_only_authorised_attempts_and_blocked_decisions_are_written_into_the_partial_indexes(migrated) -> None:
    """What migration 0006 is for: a SIP dial's attempt ('dialing') and an allowed
    decision cost no entry in these indexes; the rows their readers look for are there."""
    path, _ = migrated
    con = sqlite3.connect(path)
    try:
        for i, state in enumerate(("authorised", "dialing", "completed")):
            con.execute(
                "INSERT INTO attempts (id, case_pk, creditor, case_id, number, relation, agent_id, channel, state, at, "
                "valid_until, decision_id, connected) VALUES (?, 1, 'bank-b', 'B-1', '+8613800000001', 'self', 'col-1', "
                "'sip', ?, '2026-11-24 10:00:00.000000', '2026-11-24 10:02:00.000000', ?, 0)",
                (f"a-{i}", state, f"d-{i}"),
            )
        for i, allowed in enumerate((1, 0, 1)):
            con.execute(
                "INSERT INTO decisions (chain, seq, decision_id, kind, at, creditor, case_id, agent_id, allowed, rule_id, "
                "attempt_id, record, prev_hash, hash) VALUES ('bank-b', ?, ?, 'dial', '2026-11-24 10:00:00.000000', "
                "'bank-b', 'B-1', 'col-1', ?, 'r', NULL, '{}', '', '')",
                (i + 1, f"d-{i}", allowed),
            )
        con.commit()

        def entries(index: str) -> int:
            # ANALYZE counts each index's entries (a throwaway database: the plan tests
            # above run on their own, without sqlite_stat1).
            con.execute("ANALYZE")
            found = con.execute("SELECT stat FROM sqlite_stat1 WHERE idx = ?", (index,)).fetchone()
            return int(found[0].split()[0]) if found else 0

        assert con.execute("SELECT count(*) FROM attempts").fetchone() == (3,)
        assert con.execute("SELECT count(*) FROM decisions").fetchone() == (3,)
        assert entries("ix_attempts_number_at") == 3  # a full index, for comparison
        assert entries("ix_attempts_state_valid_until") == 1
        assert entries("ix_attempts_agent_id_state_number_valid_until") == 1
        assert entries("ix_decisions_creditor_case_id_at") == 3
        assert entries("ix_decisions_review") == 1
        assert entries(BLOCKED_CASE[0]) == 1
        # An authorised attempt that is used or expires leaves them.
        con.execute("UPDATE attempts SET state = 'expired' WHERE id = 'a-0'")
        con.commit()
        assert entries("ix_attempts_state_valid_until") == 0
    finally:
        con.close()


async def test_the_partial_index_migration_downgrades_to_full_indexes_and_upgrades_again(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    cfg = build_config({"paths": {"data_dir": str(tmp_path)}, "store": {"url": f"sqlite+aiosqlite:///{path}"}})
    async with SqlAlchemyCaseStore(cfg.store) as store:
        await upgrade(store)
        now = _index_sql(path)
        await _downgrade(store, "0005_allowed_at")
        before = _index_sql(path)
        # 0007 goes first, and 2101 (built on it) before it
        assert set(before) == set(now) - {BLOCKED_CASE[0], "ix_attempts_number_group_at", "ix_attempts_case_pk_group_at"}
        for name in PARTIAL:
            assert "WHERE" not in before[name], before[name]
        await upgrade(store)
        assert _index_sql(path) == now
