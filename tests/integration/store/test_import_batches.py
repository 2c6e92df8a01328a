"""The same files leave the same cases, contacts and history whether their rows are
applied one per transaction or in batches (the import job's path), on SQLite (the
writer's driver statements and the Core statements) and on PostgreSQL: including a
re-import after a dispute set by a call, and a repayment closure followed by a stale
file."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from dialer.bootstrap import open_services
from dialer.services import Services
from dialer.audit import verify
from dialer.clock import FixedClock
from dialer.config import build_config
from dialer.evidence import DEFAULT_KEY_FILE
from dialer.import_apply import apply_cases, apply_job, apply_repayments
from dialer.import_validation import Upload, validate_and_stage
from dialer.imports import parse_cases_payload, parse_repayments_payload
from dialer.model import ChangeSource, ContactRecord, ImportJob, Principal

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
DATA = Principal(1, "data-b", "data", frozenset({"bank-b"}))
OUTCOME = ChangeSource(kind="outcome", actor="col-b", role="collector", ref="attempt-1")
API = ChangeSource(kind="api", actor="sup-b", role="supervisor", ref="POST /v1/cases/B-7/pause", reason="bank asked")
TABLES = {
    "cases": "*", "contacts": "*", "repayments": "creditor, case_id, amount, paid_on, settled, imported_by",
    "case_history": "*",
}


def case(i: int, **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "case_id": f"B-{i}", "creditor": "bank-b", "debtor_name": "赵六", "status": "active",
        "commission_start": "2026-11-01", "commission_end": "2027-01-31", "assigned_agent": f"col-{i % 3}",
        "amount_due": "500.00", "overdue_days": 30,
        "contacts": [{"number": f"1380000{i:04d}", "relation": "self"},
                     {"number": f"1390000{i:04d}", "relation": "family"}],
    }
    doc.update(fields)
    return doc


FILE_A = [case(i) for i in range(1, 13)] + [case(13, status="paused"), case(14, flags=["litigation"])]
# The bank's next file: every balance changed, flags empty and every case active as
# always, B-2's family number replaced, B-9 reopened with a reason, five new cases.
FILE_B = (
    [case(i, amount_due=f"{400 + i}.00") for i in range(1, 13) if i not in (2, 9)]
    + [case(2, contacts=[{"number": "13800000002", "relation": "self"},
                         {"number": "13700000002", "relation": "work"}])]
    + [case(9, reopen="银行撤销还款 / the bank reversed the payment")]
    + [case(13), case(14)]
    + [case(i) for i in range(20, 25)]
)
REPAYMENTS = [
    {"creditor": "bank-b", "case_id": "B-5", "amount": "500.00", "paid_on": "2026-11-23", "settled": True},
    {"creditor": "bank-b", "case_id": "B-8", "amount": "100.00", "paid_on": "2026-11-23", "settled": False},
    {"creditor": "bank-b", "case_id": "B-9", "amount": "500.00", "paid_on": "2026-11-23", "settled": True},
]


async def _job(svc: Services, import_id: str, kind: str, doc: dict[str, Any], *, child: bool = False) -> None:
    """Through the import job: validated, staged, applied in batches of 4 rows (`child`:
    as the import's child process applies them, its cases decided a read-ahead at a time)."""
    import orjson

    job = ImportJob(import_id, kind, "validating", DATA.name, ("bank-b",), 0, 0, NOW, NOW)
    async with svc.store.write() as uow:
        await uow.imports.create(job)
    error = await validate_and_stage(svc.store, svc.clock, import_id,
                                     Upload(kind, orjson.dumps(doc), "application/json"), DATA, svc.region_of, 1_000)
    assert error is None, error
    done = await apply_job(svc.store, svc.clock, import_id, 4, 1_000, pause=child)
    assert done.state == "done", done


async def _rows(svc: Services, import_id: str, kind: str, doc: dict[str, Any]) -> None:
    """Row by row: each row its own transaction, with the job's change source."""
    if kind == "cases":
        rows: list[Any] = parse_cases_payload(doc, svc.region_of)
        source = ChangeSource(kind="import", actor=DATA.name, role="data", ref=import_id)
    else:
        rows = parse_repayments_payload(doc)
        source = ChangeSource(kind="repayment", actor=DATA.name, role="data", ref=import_id,
                              reason="settled by repayment")
    for i, r in enumerate(rows, start=1):
        async with svc.store.write() as uow:
            if kind == "cases":
                rec, _ = await uow.cases.upsert(r, NOW, source=source.at_row(i))
                assert rec.case_id == r.case_id
            else:
                await apply_repayments(uow, [(i, r)], NOW, source, {})


async def _child_job(svc: Services, import_id: str, kind: str, doc: dict[str, Any]) -> None:
    await _job(svc, import_id, kind, doc, child=True)


async def _scenario(svc: Services, batched: bool | str) -> None:
    apply = _child_job if batched == "child" else _job if batched else _rows
    await apply(svc, "file-a", "cases", {"cases": FILE_A})
    # What calls and people did before the next file.
    async with svc.store.write() as uow:
        b3, b4, b6, b7 = [await uow.cases.get("bank-b", f"B-{i}") for i in (3, 4, 6, 7)]
        await uow.cases.update(b3.pk, NOW, source=OUTCOME, add_flags={"dispute"})  # type: ignore[union-attr]
        await uow.cases.update(b4.pk, NOW, source=OUTCOME, add_flags={"complaint_risk"})  # type: ignore[union-attr]
        await uow.cases.update_contact(b4.pk, "+8613900000004", now=NOW, source=OUTCOME,  # type: ignore[union-attr]
                                       do_not_call=True)
        await uow.cases.add_contact(b6.pk, ContactRecord("+8613600000006", "family", source="info_repair",  # type: ignore[union-attr]
                                                         added_at=NOW), source=API)
        await uow.cases.update(b7.pk, NOW, source=API, status="paused", status_hold="pause",  # type: ignore[union-attr]
                               follow_up_status="paused", next_action_date=None)
    await apply(svc, "repay-1", "repayments", {"repayments": REPAYMENTS})
    await apply(svc, "file-b", "cases", {"cases": FILE_B})


async def _dump(svc: Services) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    async with svc.store.read() as uow:
        for table, cols in TABLES.items():
            rows = await uow.conn.execute(text(f"SELECT {cols} FROM {table} ORDER BY id"))
            out[table] = [tuple(r) for r in rows]
    return out


async def _run(data_dir: Path, url: str, batched: bool | str,
               commits: list[int] | None = None) -> tuple[dict[str, list[tuple[Any, ...]]], bool]:
    cfg = build_config({"paths": {"data_dir": str(data_dir)}, "store": {"url": url}})
    async with open_services(cfg, FixedClock(NOW)) as svc:
        if commits is not None:
            svc.store.on_commit(lambda: commits.append(1))
        await _scenario(svc, batched)
        report = await verify(svc.store)
        assert report.ok, report.to_dict()
        return await _dump(svc), svc.store._writer is not None  # noqa: SLF001 - which path ran is the point


def _same(a: dict[str, list[tuple[Any, ...]]], b: dict[str, list[tuple[Any, ...]]]) -> None:
    for table in TABLES:
        for x, y in zip(a[table], b[table]):
            assert x == y, (table, [(p, q) for p, q in zip(x, y) if p != q])
        assert len(a[table]) == len(b[table]), table


def _the_rules_held(dump: dict[str, list[tuple[Any, ...]]]) -> None:
    """What the files must not undo, read from the rows (cases: id, creditor, case_id, …)."""
    cases = {r[2]: r for r in dump["cases"]}
    assert len(cases) == 19
    assert "dispute" in cases["B-3"][8] and "complaint_risk" in cases["B-4"][8]  # flags
    assert cases["B-5"][4] == "settled" and cases["B-7"][4] == "paused"  # status: held against FILE_B
    assert cases["B-9"][4] == "active"  # reopened, with its reason
    assert cases["B-14"][8] == ""  # the bank lifted its own flag
    # case_history: id, case_pk, creditor, case_id, seq, at, actor, role, source, source_ref, source_row, field
    entries = {(r[3], r[9], r[10], r[11]) for r in dump["case_history"]}
    assert {("B-1", "file-a", 1, "case"), ("B-14", "file-a", 14, "case"), ("B-24", "file-b", 19, "case")} <= entries
    assert ("B-5", "file-b", 4, "status") in entries  # the stale file's refusal is on the record
    assert ("B-2", "file-b", 11, "contact 139****0002") in entries  # the replaced number's removal


async def test_rows_applied_one_by_one_or_in_batches_leave_the_same_rows_on_sqlite(tmp_path: Path) -> None:
    db = "sqlite+aiosqlite:///{}/dialgate.db"
    one, hot = await _run(tmp_path / "rows", db.format(tmp_path / "rows"), batched=False)
    (tmp_path / "batches" / DEFAULT_KEY_FILE).parent.mkdir(parents=True)
    shutil.copy2(tmp_path / "rows" / DEFAULT_KEY_FILE, tmp_path / "batches" / DEFAULT_KEY_FILE)
    many, _ = await _run(tmp_path / "batches", db.format(tmp_path / "batches"), batched=True)
    assert hot, "the SQLite file's writer was not used"
    _the_rules_held(one)
    _same(one, many)


async def test_batches_decided_a_read_ahead_at_a_time_leave_the_same_rows_as_rows_one_by_one(tmp_path: Path) -> None:
    db = "sqlite+aiosqlite:///{}/dialgate.db"
    one, _ = await _run(tmp_path / "rows", db.format(tmp_path / "rows"), batched=False)
    (tmp_path / "child" / DEFAULT_KEY_FILE).parent.mkdir(parents=True)
    shutil.copy2(tmp_path / "rows" / DEFAULT_KEY_FILE, tmp_path / "child" / DEFAULT_KEY_FILE)
    ahead, _ = await _run(tmp_path / "child", db.format(tmp_path / "child"), batched="child")
    _the_rules_held(ahead)
    _same(one, ahead)


@contextmanager
def _a_process_waiting_for_the_write_lock(data_dir: Path) -> Iterator[None]:
    """What a gate waiting for the database's write lock holds (`WriterFileLock`)."""
    fd = os.open(data_dir / "dialgate.db.writer-lock-want", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


async def test_a_childs_batches_end_after_a_run_while_a_gate_waits_and_leave_the_same_rows(tmp_path: Path) -> None:
    db = "sqlite+aiosqlite:///{}/dialgate.db"
    alone: list[int] = []
    one, _ = await _run(tmp_path / "alone", db.format(tmp_path / "alone"), batched="child", commits=alone)
    (tmp_path / "waited" / DEFAULT_KEY_FILE).parent.mkdir(parents=True)
    shutil.copy2(tmp_path / "alone" / DEFAULT_KEY_FILE, tmp_path / "waited" / DEFAULT_KEY_FILE)
    waited: list[int] = []
    with _a_process_waiting_for_the_write_lock(tmp_path / "waited"):
        cut, _ = await _run(tmp_path / "waited", db.format(tmp_path / "waited"), batched="child", commits=waited)
    _the_rules_held(cut)
    _same(one, cut)
    # Batches of 4 rows, in runs of one: a batch ends after its first run while someone
    # waits. Files of 14, 3 and 19 rows: 4 + 1 + 5 batches alone, 14 + 3 + 19 waited on.
    assert len(waited) - len(alone) == (14 + 3 + 19) - (4 + 1 + 5)


async def test_the_writers_driver_statements_leave_the_same_rows_as_the_core_statements(tmp_path: Path) -> None:
    raw, hot = await _run(tmp_path / "file", f"sqlite+aiosqlite:///{tmp_path / 'file'}/dialgate.db", batched=True)
    (tmp_path / "memory" / DEFAULT_KEY_FILE).parent.mkdir(parents=True)
    shutil.copy2(tmp_path / "file" / DEFAULT_KEY_FILE, tmp_path / "memory" / DEFAULT_KEY_FILE)
    core, core_hot = await _run(tmp_path / "memory", "sqlite+aiosqlite://", batched=True)
    assert hot and not core_hot
    _the_rules_held(raw)
    _same(raw, core)


@pytest.mark.postgres
async def test_rows_applied_one_by_one_or_in_batches_leave_the_same_rows_on_postgresql(
    tmp_path: Path, pg_url: str,
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    one, _ = await _run(tmp_path / "rows", pg_url, batched=False)
    engine = create_async_engine(pg_url)
    async with engine.begin() as conn:  # the same empty database for the second run
        await conn.execute(text("TRUNCATE cases, contacts, case_history, repayments, import_jobs, import_rows, "
                                "outbox, audit_log, creditors CASCADE"))
    await engine.dispose()
    (tmp_path / "batches" / DEFAULT_KEY_FILE).parent.mkdir(parents=True)
    shutil.copy2(tmp_path / "rows" / DEFAULT_KEY_FILE, tmp_path / "batches" / DEFAULT_KEY_FILE)
    many, _ = await _run(tmp_path / "batches", pg_url, batched=True)
    _the_rules_held(one)
    ids = {t: [r[0] for r in one[t]] for t in ("cases", "contacts", "case_history")}
    # Sequences go on after TRUNCATE: compare the rows with their ids and references renumbered.
    _same(_renumbered(one, ids), _renumbered(many, {t: [r[0] for r in many[t]] for t in ids}))


def _renumbered(dump: dict[str, list[tuple[Any, ...]]], ids: dict[str, list[Any]]) -> dict[str, list[tuple[Any, ...]]]:
    case_no = {pk: n for n, pk in enumerate(ids["cases"])}
    out = dict(dump)
    out["cases"] = [(case_no[r[0]], *r[1:]) for r in dump["cases"]]
    out["contacts"] = [(n, case_no[r[1]], *r[2:]) for n, r in enumerate(dump["contacts"])]
    out["case_history"] = [(n, case_no[r[1]], *r[2:]) for n, r in enumerate(dump["case_history"])]
    return out


@contextmanager
def _counting_plans() -> Iterator[list[int]]:
    """While inside: how many times a batch's rows were decided (`_plan` calls), in [0]."""
    from adapters.db.cases_repo import SqlCaseRepository

    original = SqlCaseRepository._plan  # noqa: SLF001 - counting decisions is the point
    decided = [0]

    def counting(self: SqlCaseRepository, *args: Any, **kwargs: Any) -> Any:
        decided[0] += 1
        return original(self, *args, **kwargs)

    SqlCaseRepository._plan = counting  # type: ignore[method-assign]  # noqa: SLF001
    try:
        yield decided
    finally:
        SqlCaseRepository._plan = original  # type: ignore[method-assign]  # noqa: SLF001


async def _stale_plan(data_dir: Path, url: str) -> tuple[dict[str, list[tuple[Any, ...]]], int]:
    """B-3 imported; a batch re-importing it planned (in a read unit); then a call's
    dispute lands on B-3; then the batch is written with that plan. Returns the rows
    and how many times the rows were decided."""
    cfg = build_config({"paths": {"data_dir": str(data_dir)}, "store": {"url": url}})
    async with open_services(cfg, FixedClock(NOW)) as svc:
        await _job(svc, "file-a", "cases", {"cases": FILE_A[:4]})
        rows = list(enumerate(parse_cases_payload({"cases": [case(3, amount_due="1.00"), case(30)]}, svc.region_of),
                              start=1))
        source = ChangeSource(kind="import", actor=DATA.name, role="data", ref="file-b")
        with _counting_plans() as decided:
            async with svc.store.read() as r:
                plan = await r.cases.plan_upsert(rows, NOW, source)
            assert plan is not None and decided[0] == 1
            async with svc.store.write() as uow:
                b3 = await uow.cases.get("bank-b", "B-3")
                await uow.cases.update(b3.pk, NOW, source=OUTCOME, add_flags={"dispute"})  # type: ignore[union-attr]
            async with svc.store.write() as uow:
                written = await uow.cases.upsert_many(rows, NOW, source, plan)
        assert [(rec.case_id, created) for rec, created in written] == [("B-3", False), ("B-30", True)]
        report = await verify(svc.store)
        assert report.ok, report.to_dict()
        return await _dump(svc), decided[0]


def _dispute_kept(dump: dict[str, list[tuple[Any, ...]]]) -> None:
    cases = {r[2]: r for r in dump["cases"]}
    assert "dispute" in cases["B-3"][8] and cases["B-3"][9] == "1.00"  # flags kept, the file's balance written
    assert "B-30" in cases


async def test_a_batch_planned_before_a_dispute_is_decided_again_and_keeps_the_stop_on_sqlite(tmp_path: Path) -> None:
    dump, decided = await _stale_plan(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/dialgate.db")
    _dispute_kept(dump)
    assert decided == 2, "the stale plan was written as it was"


async def test_a_batch_planned_on_unchanged_cases_is_written_as_planned(tmp_path: Path) -> None:
    cfg = build_config({"paths": {"data_dir": str(tmp_path)}, "store": {"url": f"sqlite+aiosqlite:///{tmp_path}/d.db"}})
    async with open_services(cfg, FixedClock(NOW)) as svc:
        with _counting_plans() as decided:
            await _job(svc, "file-a", "cases", {"cases": FILE_A})  # 14 rows, batches of 4: 4 batches
            await _job(svc, "file-b", "cases", {"cases": FILE_B})  # 19 rows: 5 batches, all existing or new
        report = await verify(svc.store)
        assert report.ok, report.to_dict()
        assert decided[0] == 4 + 5, "a batch was decided again under the write lock although nothing changed"


@pytest.mark.postgres
async def test_a_batch_planned_before_a_dispute_is_decided_again_and_keeps_the_stop_on_postgresql(
    tmp_path: Path, pg_url: str,
) -> None:
    dump, decided = await _stale_plan(tmp_path, pg_url)
    _dispute_kept(dump)
    assert decided == 2, "the stale plan was written as it was"


async def test_a_read_ahead_plan_is_written_batch_by_batch_and_only_a_changed_batch_is_decided_again(
    tmp_path: Path,
) -> None:
    cfg = build_config({"paths": {"data_dir": str(tmp_path)}, "store": {"url": f"sqlite+aiosqlite:///{tmp_path}/d.db"}})
    async with open_services(cfg, FixedClock(NOW)) as svc:
        await _job(svc, "file-a", "cases", {"cases": FILE_A[:6]})
        rows = list(enumerate(parse_cases_payload(
            {"cases": [case(i, amount_due="2.00") for i in (1, 2, 3, 4)] + [case(40)]}, svc.region_of), start=1))
        source = ChangeSource(kind="import", actor=DATA.name, role="data", ref="file-b")
        with _counting_plans() as decided:
            async with svc.store.read() as r:
                plan = await r.cases.plan_upsert(rows, NOW, source)
            async with svc.store.write() as uow:  # B-1, B-2: as planned
                await uow.cases.upsert_many(rows[:2], NOW, source, plan)
            assert decided[0] == 1
            async with svc.store.write() as uow:  # a call's outcome on B-4, after the plan was read
                b4 = await uow.cases.get("bank-b", "B-4")
                await uow.cases.update(b4.pk, NOW, source=OUTCOME, add_flags={"complaint_risk"})  # type: ignore[union-attr]
            async with svc.store.write() as uow:  # B-3, B-4, B-40: B-4 changed, decided again
                await uow.cases.upsert_many(rows[2:], NOW, source, plan)
            assert decided[0] == 2
        report = await verify(svc.store)
        assert report.ok, report.to_dict()
        cases = {r[2]: r for r in (await _dump(svc))["cases"]}
    assert [cases[f"B-{i}"][9] for i in (1, 2, 3, 4)] == ["2.00"] * 4 and "B-40" in cases
    assert "complaint_risk" in cases["B-4"][8]


async def test_a_store_whose_commits_skip_their_own_flush_flushes_the_wal_when_it_closes(tmp_path: Path) -> None:
    cfg = build_config({"paths": {"data_dir": str(tmp_path)},
                        "store": {"url": f"sqlite+aiosqlite:///{tmp_path}/d.db", "sqlite_synchronous": "NORMAL"}})
    flushed: list[str] = []
    async with open_services(cfg, FixedClock(NOW)) as svc:
        writer = svc.store._writer  # noqa: SLF001 - the flush at close is the point
        assert writer is not None and not writer.durable_by_fsync
        original = writer.sync_wal

        def spy() -> None:
            flushed.append(writer.wal_path)
            original()

        writer.sync_wal = spy  # type: ignore[method-assign]
        await _job(svc, "file-a", "cases", {"cases": FILE_A[:3]}, child=True)
        assert flushed == [], "a NORMAL commit waited for its own flush"
    assert flushed == [writer.wal_path]
