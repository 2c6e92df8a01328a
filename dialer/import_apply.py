"""Staged or validated rows applied to the store: a job's short batches (`apply_job`),
the rows themselves (`apply_cases`, `apply_repayments`: every import applies its rows
there), and the small imports applied in one transaction.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Mapping, Sequence

import structlog

from dialer.case_merge import REPAYMENT_CLOSURE, REPAYMENT_REASON, repayment_closes
from dialer.errors import InvalidImport, NotFound
from dialer.ids import new_id
from dialer.imports import case_from_json, case_key, repayment_from_json, spelling_error
from dialer.model import CaseInput, ChangeSource, ImportJob, Principal
from dialer.ports import CaseStore, Clock, UnitOfWork

log = structlog.get_logger("dialgate.imports")


async def apply_job(store: CaseStore, clock: Clock, import_id: str, batch_rows: int, batch_ms: int = 5,
                    *, pause: bool = False) -> ImportJob:
    """Apply a job's staged rows from `rows_done` on, one short transaction per batch;
    returns the finished job. A batch holds at most `batch_rows` rows, and as many as
    the previous batch's time per row fits in `batch_ms` milliseconds. Safe to run
    twice at once: each batch re-reads `rows_done` under the write lock (PostgreSQL:
    the job's row lock) and applies only what follows.

    `pause` (another process than the gate's): after each batch, wait a quarter of its
    duration before taking the lock again. The database's writer lock is not a queue:
    a writer that comes straight back can take it before the gate's waiting thread is
    scheduled, and starve it for batch after batch."""
    loop = asyncio.get_running_loop()
    if not getattr(store, "serialised_writes", True):
        # PostgreSQL has no single write lock for the gate to wait on, only the cases a
        # batch locks: longer batches there, and no pause, spread each batch's fixed cost
        # (its job row, its commit) over more rows.
        batch_ms, pause = max(batch_ms, 250), False
    # Rows fetched per batch follow the time a row took in the last one, so a batch
    # holds the write lock about `batch_ms` (and, on PostgreSQL, locks only the cases
    # it has time for). It starts small and at most doubles, so one fast batch does not
    # size the next beyond what the store keeps up with.
    limit = min(batch_rows, 50)
    # Staged rows are read and parsed ahead, several batches at a time, outside the
    # write lock: the lock is held for the writes only, and a batch costs no read.
    ahead: list[tuple[int, Any]] = []
    # A job's cases are decided outside the write lock too (`plan_upsert`, from a read of
    # their cases); each write re-reads its batch's cases and uses the plan only if
    # nothing changed meanwhile. A process of its own decides a read-ahead at a time (one
    # read for several batches); the gate's process a batch at a time, so deciding never
    # holds its event loop for longer than a batch.
    planned: Any = None
    while True:
        if not ahead:
            now = clock.now()
            async with store.read() as uow:
                job = await uow.imports.get(import_id)
                if job is None:
                    raise NotFound(f"no import {import_id!r}")
                if job.state != "applying":
                    return job
                staged = await uow.imports.next_rows(import_id, job.rows_done, max(4 * batch_rows, 1_000))
            ahead = _parse_rows(job.kind, staged)
            planned = None
            if pause and ahead and job.kind == "cases":
                async with store.read() as r:
                    planned = await r.cases.plan_upsert(ahead, now, _source(job, "import"))
        batch = ahead[:limit]
        plan = planned
        assert job is not None
        if plan is None:
            now = clock.now()
            if batch and job.kind == "cases":
                async with store.read() as r:
                    plan = await r.cases.plan_upsert(batch, now, _source(job, "import"))
        started = loop.time()
        async with store.write(_lock_keys(batch)) as w:
            job = await w.imports.lock(import_id)
            assert job is not None
            if job.state != "applying":
                return job
            if batch and batch[0][0] <= job.rows_done:  # another runner applied them meanwhile
                ahead = []
                continue
            if not batch:
                await _finish(w, job, now)
            else:
                summary = dict(job.summary)
                first = loop.time()
                # In runs, so that a gate waiting for the write lock waits for one run, not
                # the batch: after each run the batch ends early if another process waits.
                step = -(-len(batch) // _RUNS) if pause else len(batch)
                applied = 0
                while applied < len(batch):
                    run = batch[applied:applied + step]
                    if job.kind == "cases":
                        await apply_cases(w, run, now, _source(job, "import"), summary, plan)
                    else:
                        await apply_repayments(w, run, now, _source(job, "repayment", REPAYMENT_REASON), summary)
                    applied += len(run)
                    if applied < len(batch) and store.writer_wanted():
                        break
                per_row = (loop.time() - first) / applied
                fits = int(batch_ms / 1000 / max(per_row, 1e-6) * 0.8)
                limit = max(1, min(batch_rows, 2 * len(batch), fits))
                await w.imports.advance(import_id, batch[applied - 1][0], summary, now)
                batch = batch[:applied]
        del ahead[:len(batch)]
        if pause:
            await asyncio.sleep(max(0.001, (loop.time() - started) / 4))
        else:
            # In-process runs share the event loop with the gate: let queued work in first.
            await asyncio.sleep(0)


# Runs per batch in a process of its own: a gate that asks for the write lock waits for
# about a run (`batch_ms / _RUNS`); each run costs its own statements.
_RUNS = 4


def _parse_rows(kind: str, rows: Sequence[tuple[int, str]]) -> list[tuple[int, Any]]:
    """The staged rows as cases or repayments."""
    if kind == "cases":
        return [(seq, case_from_json(text)) for seq, text in rows]
    return [(seq, repayment_from_json(text)) for seq, text in rows]


def _lock_keys(rows: Sequence[tuple[int, Any]]) -> tuple[str, ...]:
    return tuple(f"case:{r.case_id if isinstance(r, CaseInput) else r['case_id']}" for _, r in rows)


def _source(job: ImportJob, kind: str, reason: str | None = None) -> ChangeSource:
    # Imports are a data-staff action (admins may run them too; the job keeps the name).
    return ChangeSource(kind=kind, actor=job.actor, role="data", ref=job.import_id, reason=reason)


def _count(summary: dict[str, int], key: str) -> None:
    summary[key] = summary.get(key, 0) + 1


async def apply_cases(
    uow: UnitOfWork, rows: Sequence[tuple[int, CaseInput]], now: datetime, source: ChangeSource,
    summary: dict[str, int], plan: Any = None,
) -> None:
    """Case file rows `(row number, case)` through the store's batch upsert (the rules
    that keep stops and closures: `dialer.case_merge`); the source and the row's number
    say where each change came from (the case history records them). Every import,
    synchronous or a job's batch, applies its rows here. `plan`: the rows' `plan_upsert`."""
    for rec, is_new in await uow.cases.upsert_many(rows, now, source, plan):
        _count(summary, "created" if is_new else "updated")
        await uow.outbox.add(
            "case.updated", creditor=rec.creditor, case_pk=rec.pk, case_id=rec.case_id, occurred_at=now,
            payload={"status": rec.status, "flags": sorted(rec.flags), "imported": True,
                     "assigned_agent": rec.assigned_agent, "contacts": len(rec.contacts)},
        )


async def apply_repayments(
    uow: UnitOfWork, rows: Sequence[tuple[int, Mapping[str, Any]]], now: datetime, source: ChangeSource,
    summary: dict[str, int],
) -> None:
    """Repayment rows `(row number, repayment)`: each recorded; a settled one closes its
    case and holds the closure against later case files (`case_merge.repayment_closes`).
    `source`: the repayment's change source (kind "repayment"). Every repayment import
    applies its rows here."""
    for row, r in rows:
        case = await uow.cases.get(r["creditor"], r["case_id"])
        if case is None:  # checked when validated; cases are not deleted
            _count(summary, "missing")
            continue
        await uow.cases.record_repayment(case.creditor, case.case_id, r.get("amount"), r.get("paid_on"),
                                         bool(r["settled"]), source.actor, now)
        _count(summary, "recorded")
        if repayment_closes(bool(r["settled"]), case.status, case.status_hold):
            await uow.cases.update(case.pk, now, source=source.at_row(row), **REPAYMENT_CLOSURE)
            if case.status != "settled":
                _count(summary, "closed")
            await uow.outbox.add(
                "case.updated", creditor=case.creditor, case_pk=case.pk, case_id=case.case_id,
                occurred_at=now, payload={"status": "settled", "reason": "repayment", "follow_up_status": "closed"},
            )


_SPELLING_CHUNK = 10_000  # case ids per statement (below both engines' bind limits): each scans the creditor's cases


async def spelling_errors(uow: UnitOfWork, rows: Sequence[tuple[int, str, str]]) -> list[dict[str, Any]]:
    """The errors of file rows `(row, creditor, case id)` naming a stored case in another
    letter case ("c-1" for "C-1"): imported, such a row would be a second case beside
    the stored one, with none of its closure, stops, marks or calls."""
    by_creditor: dict[str, dict[str, list[tuple[int, str]]]] = {}
    for row, creditor, case_id in rows:
        by_creditor.setdefault(creditor, {}).setdefault(case_key(case_id), []).append((row, case_id))
    errors: list[dict[str, Any]] = []
    for creditor, named in by_creditor.items():
        keys = sorted(named)
        for start in range(0, len(keys), _SPELLING_CHUNK):
            for stored in await uow.cases.spellings(creditor, keys[start:start + _SPELLING_CHUNK]):
                errors.extend({"row": row, "field": "case_id", "error": spelling_error(case_id, stored)}
                              for row, case_id in named.get(case_key(stored), ()) if case_id != stored)
    return sorted(errors, key=lambda e: e["row"])


async def import_cases_at_once(store: CaseStore, actor: Principal, cases: Sequence[CaseInput],
                               now: datetime) -> dict[str, Any]:
    """Validated cases applied in one transaction (all or nothing), by `apply_cases`."""
    outside = [
        {"row": i + 1, "field": "creditor", "error": f"creditor {c.creditor!r} is outside your scope"}
        for i, c in enumerate(cases)
        if not actor.can_see(c.creditor)
    ]
    if outside:
        raise InvalidImport(outside)
    import_id = new_id()
    source = ChangeSource(kind="import", actor=actor.name, role=actor.role, ref=import_id)
    summary: dict[str, int] = {}
    async with store.write(tuple(f"case:{c.case_id}" for c in cases)) as uow:
        misspelt = await spelling_errors(uow, [(i, c.creditor, c.case_id) for i, c in enumerate(cases, start=1)])
        if misspelt:
            raise InvalidImport(misspelt)
        await apply_cases(uow, list(enumerate(cases, start=1)), now, source, summary)
        created, updated = summary.get("created", 0), summary.get("updated", 0)
        await uow.audit.add(
            at=now, actor=actor.name, action="cases.imported", creditor=None, case_id=None,
            details={"import_id": import_id, "created": created, "updated": updated,
                     "case_ids": [c.case_id for c in cases][:1000]},
        )
    return {"import_id": import_id, "created": created, "updated": updated, "total": len(cases)}


async def import_repayments_at_once(store: CaseStore, actor: Principal, rows: Sequence[Mapping[str, Any]],
                                    now: datetime) -> dict[str, Any]:
    """Repayments applied in one transaction by `apply_repayments`; unknown cases (or
    another creditor's) refuse the whole file."""
    import_id = new_id()
    source = ChangeSource(kind="repayment", actor=actor.name, role=actor.role, ref=import_id,
                          reason=REPAYMENT_REASON)
    summary: dict[str, int] = {}
    async with store.write(tuple(f"case:{r['case_id']}" for r in rows)) as uow:
        errors = []
        for i, r in enumerate(rows):
            if not actor.can_see(r["creditor"]) or await uow.cases.get(r["creditor"], r["case_id"]) is None:
                errors.append({"row": i + 1, "field": "case_id",
                               "error": f"no case {r['case_id']!r} for creditor {r['creditor']!r}"})
        if errors:
            raise InvalidImport(errors)
        await apply_repayments(uow, list(enumerate(rows, start=1)), now, source, summary)
        await uow.audit.add(
            at=now, actor=actor.name, action="repayments.imported", creditor=None, case_id=None,
            details={"import_id": import_id, "rows": len(rows), "closed": summary.get("closed", 0)},
        )
    return {"recorded": len(rows), "closed": summary.get("closed", 0)}


async def _finish(uow: UnitOfWork, job: ImportJob, now: datetime) -> None:
    await uow.imports.finish(job.import_id, "done", now)
    action = "cases.imported" if job.kind == "cases" else "repayments.imported"
    await uow.audit.add(
        at=now, actor=job.actor, action=action, creditor=None, case_id=None,
        details={"import_id": job.import_id, "rows": job.rows_total, **job.summary},
    )
    log.info("import.done", import_id=job.import_id, kind=job.kind, rows=job.rows_total, **job.summary)
