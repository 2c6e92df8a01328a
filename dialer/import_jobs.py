"""Import jobs: a file is validated whole, then applied in short batches that never stall
the gate.

    submit   read limits → decode (UTF-8 / GB18030) → parse and check every row (in a
             worker thread) → refused whole with every error, or staged as an
             `import_rows` row each → state "applying"
    apply    batches of `[imports] batch_rows` rows, each ONE short write transaction:
             apply the rows (`apply_cases`: the store's batch upsert, whose rules are
             `dialer.case_merge`; `apply_repayments`), drop them from staging and
             advance `rows_done`. Between two batches the store's write lock is
             free, so decisions keep flowing.

Where batches run: files of up to `sync_bytes` are applied here, on the service's own
store, and answered when done; larger ones by a child process (`python -m
dialer.import_worker`) with a store of its own, so neither their CPU nor their I/O is on
the event loop (SQLite: the processes take turns on the database's writer lock, as the
HTTP workers do). An in-memory database cannot be shared with a child: applied here.

Why resumable: a batch and the advance of `rows_done` commit together, so a crash or
kill between batches loses nothing and repeats nothing; on start the service rolls
every job left "applying" forward from `rows_done`. A job left "validating" had its file
only in memory: it is marked failed (nothing was applied) and must be sent again.
"""

from __future__ import annotations

import asyncio
import json
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Mapping, Sequence

import structlog

from dialer.errors import (
    ApiError,
    BadRequest,
    ConfigError,
    Forbidden,
    InvalidImport,
    NotFound,
    PayloadTooLarge,
    StoreUnavailable,
)
from dialer.ids import new_id
from dialer.imports import (
    case_from_json,
    case_to_json,
    decode_upload,
    loads_json,
    parse_cases_csv,
    parse_cases_payload,
    parse_repayments_csv,
    parse_repayments_payload,
    repayment_from_json,
    repayment_to_json,
)
from dialer.case_merge import REPAYMENT_CLOSURE, REPAYMENT_REASON, repayment_closes
from dialer.model import IMPORT_KINDS, CaseInput, ChangeSource, ImportJob, Principal
from dialer.ports import CaseStore, Clock, UnitOfWork

if TYPE_CHECKING:
    from dialer.services import Services

log = structlog.get_logger("dialgate.imports")

DATA_ROLES = frozenset({"data", "admin"})
_STAGE_CHUNK = 2_000  # staged rows per write transaction: one executemany, short enough not to hold dials back


@dataclass(frozen=True, slots=True)
class ImportLimits:
    """`[imports]` in config.toml."""

    max_bytes: int = 20 * 1024 * 1024  # a body over it is refused with 413 (Content-Length: before reading)
    max_rows: int = 200_000  # cases (CSV: rows) or repayments per file
    sync_bytes: int = 256 * 1024  # POST /v1/imports answers bodies up to this when applied (200), others 202
    batch_rows: int = 500  # at most this many rows per apply transaction …
    batch_ms: int = 20  # … and no longer than this: how long the gate may wait for the write lock
    runner: str = "process"  # "process": large files applied by a child process; "inline": by the service


def load_import_limits(table: Mapping[str, Any], source: str = "config") -> ImportLimits:
    """The `[imports]` table; an unknown key or a bad value is refused with its key path."""
    defaults = ImportLimits()
    values: dict[str, Any] = {}
    known = {f.name for f in fields(ImportLimits)}
    for key, value in table.items():
        where = f"{source}: imports.{key}"
        if key not in known:
            raise ConfigError(f"{where}: unknown key")
        if key == "runner":
            if value not in ("process", "inline"):
                raise ConfigError(f"{where}: expected \"process\" or \"inline\", got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where}: expected a whole number >= 1, got {value!r}")
        values[key] = value
    return ImportLimits(**{**{f.name: getattr(defaults, f.name) for f in fields(ImportLimits)}, **values})


@dataclass(frozen=True, slots=True)
class Upload:
    """An import request's body and what its headers said."""

    kind: str
    body: bytes
    content_type: str  # "text/csv" or "application/json" ("" = JSON)
    encoding: str | None = None  # declared (charset= or ?encoding=); None: detected
    file_name: str | None = None


def validate(upload: Upload, actor: Principal, region_of: Callable[[str], str], max_rows: int) -> tuple[list[str], str]:
    """(staged rows as JSON texts, encoding) of a valid file; raises the file's errors.
    CPU only (no store, no clock): the service runs it in a worker thread."""
    text, encoding = decode_upload(upload.body, upload.encoding)
    csv_body = upload.content_type in ("text/csv", "application/csv")
    if not csv_body and upload.content_type not in ("application/json", ""):
        raise BadRequest(f"unsupported Content-Type {upload.content_type!r}: use application/json or text/csv")
    doc: Any = text
    if not csv_body:
        doc = loads_json(text)
    if upload.kind == "cases":
        cases = parse_cases_csv(doc, region_of, max_rows) if csv_body else parse_cases_payload(doc, region_of, max_rows)
        outside = [
            {"row": i + 1, "field": "creditor", "error": f"creditor {c.creditor!r} is outside your scope"}
            for i, c in enumerate(cases)
            if not actor.can_see(c.creditor)
        ]
        if outside:
            raise InvalidImport(outside)
        return [case_to_json(c) for c in cases], encoding
    rows = parse_repayments_csv(doc, max_rows) if csv_body else parse_repayments_payload(doc, max_rows)
    return [repayment_to_json(r) for r in rows], encoding


async def _check_repayment_cases(store: CaseStore, actor: Principal, staged: Sequence[str]) -> None:
    """Unknown cases (or another creditor's) refuse the whole file, before anything is applied."""
    errors = []
    for start in range(0, len(staged), 500):
        async with store.read() as uow:
            for i, text in enumerate(staged[start:start + 500], start=start + 1):
                r = repayment_from_json(text)
                visible = actor.can_see(r["creditor"])
                if not visible or await uow.cases.get(r["creditor"], r["case_id"]) is None:
                    errors.append({"row": i, "field": "case_id",
                                   "error": f"no case {r['case_id']!r} for creditor {r['creditor']!r}"})
    if errors:
        raise InvalidImport(errors)


def _problem_errors(exc: ApiError) -> list[dict[str, Any]]:
    """A refusal as the job's error list; a whole-file problem is row 0 with its status."""
    if isinstance(exc, InvalidImport):
        return list(exc.errors)
    return [{"row": 0, "field": "", "error": exc.detail, "status": exc.status,
             **({"details": exc.details} if exc.details else {})}]


async def apply_job(store: CaseStore, clock: Clock, import_id: str, batch_rows: int, batch_ms: int = 20,
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
    while True:
        if not ahead:
            async with store.read() as uow:
                job = await uow.imports.get(import_id)
                if job is None:
                    raise NotFound(f"no import {import_id!r}")
                if job.state != "applying":
                    return job
                staged = await uow.imports.next_rows(import_id, job.rows_done, max(4 * batch_rows, 1_000))
            ahead = _parse_rows(job.kind, staged)
        batch = ahead[:limit]
        started = loop.time()
        async with store.write(_lock_keys(batch)) as w:
            job = await w.imports.lock(import_id)
            assert job is not None
            if job.state != "applying":
                return job
            if batch and batch[0][0] <= job.rows_done:  # another runner applied them meanwhile
                ahead = []
                continue
            now = clock.now()
            if not batch:
                await _finish(w, job, now)
            else:
                summary = dict(job.summary)
                first = loop.time()
                if job.kind == "cases":
                    await apply_cases(w, batch, now, _source(job, "import"), summary)
                else:
                    await apply_repayments(w, batch, now, _source(job, "repayment", REPAYMENT_REASON), summary)
                per_row = (loop.time() - first) / len(batch)
                fits = int(batch_ms / 1000 / max(per_row, 1e-6) * 0.8)
                limit = max(1, min(batch_rows, 2 * len(batch), fits))
                await w.imports.advance(import_id, batch[-1][0], summary, now)
        del ahead[:len(batch)]
        if pause:
            await asyncio.sleep(max(0.001, (loop.time() - started) / 4))
        else:
            # In-process runs share the event loop with the gate: let queued work in first.
            await asyncio.sleep(0)


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
    summary: dict[str, int],
) -> None:
    """Case file rows `(row number, case)` through the store's batch upsert (the rules
    that keep stops and closures: `dialer.case_merge`); the source and the row's number
    say where each change came from (the case history records them). Every import,
    synchronous or a job's batch, applies its rows here."""
    for rec, is_new in await uow.cases.upsert_many(rows, now, source):
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


async def validate_and_stage(
    store: CaseStore, clock: Clock, import_id: str, upload: Upload, actor: Principal,
    region_of: Callable[[str], str], max_rows: int, *, in_thread: bool = True,
) -> ApiError | None:
    """Validate the file (in a worker thread when `in_thread`) and stage its rows, then
    mark the job applying; or mark it refused and return the error. Staging is in chunks
    of short transactions; until the job says "applying" none of its rows is applied."""
    try:
        if in_thread:
            staged, encoding = await asyncio.to_thread(validate, upload, actor, region_of, max_rows)
        else:
            staged, encoding = validate(upload, actor, region_of, max_rows)
        if upload.kind == "repayments":
            await _check_repayment_cases(store, actor, staged)
    except ApiError as exc:
        async with store.write() as uow:
            await uow.imports.finish(import_id, "refused", clock.now(), errors=_problem_errors(exc))
        log.info("import.refused", import_id=import_id, kind=upload.kind, error=exc.detail)
        return exc
    for start in range(0, len(staged), _STAGE_CHUNK):
        async with store.write() as uow:
            await uow.imports.stage(import_id, start + 1, staged[start:start + _STAGE_CHUNK])
    async with store.write() as uow:
        await uow.imports.finish(import_id, "applying", clock.now(), rows_total=len(staged), encoding=encoding)
    log.info("import.validated", import_id=import_id, kind=upload.kind, rows=len(staged), encoding=encoding)
    return None


class ImportJobs:
    """The import use cases over a store, and the child processes that validate and
    apply large files. Use as `async with` (its tasks and children end with it)."""

    def __init__(
        self,
        store: CaseStore,
        clock: Clock,
        region_of: Callable[[str], str],
        limits: ImportLimits,
        *,
        worker_spec: Callable[[], dict[str, Any] | None] | None = None,
        spool: Path | None = None,
        beside_the_gate: bool = False,
    ) -> None:
        """`beside_the_gate`: this process is not the gate's (the CLI): batches applied
        here pause between them like a child's, so a running service gets the lock."""
        self.store = store
        self.clock = clock
        self.region_of = region_of
        self.limits = limits
        # What a child needs to open the same store and read the same policy; None
        # (or `[imports] runner = "inline"`): everything runs in this process.
        self.worker_spec = worker_spec if limits.runner == "process" else None
        self.spool = spool  # where a large upload waits for its child (removed once staged)
        self.pause = beside_the_gate
        self._tasks: set[asyncio.Task[Any]] = set()
        self._procs: set[asyncio.subprocess.Process] = set()

    async def __aenter__(self) -> "ImportJobs":
        return self

    async def __aexit__(self, *exc: object) -> None:
        for proc in list(self._procs):
            if proc.returncode is None:
                proc.terminate()  # its running batch rolls back; the job resumes on the next start
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass

    # -- submitting ----------------------------------------------------------------
    async def submit(self, actor: Principal, upload: Upload, *, wait: bool = False) -> tuple[ImportJob, bool]:
        """(job, finished). Small bodies (or `wait`) are validated and applied before this
        returns, and a refused file raises its errors; larger ones run on and the job
        says how far they got."""
        if actor.role not in DATA_ROLES:
            raise Forbidden(f"role {actor.role!r} may not import {upload.kind}",
                            details={"role": actor.role, "allowed_roles": sorted(DATA_ROLES)})
        if upload.kind not in IMPORT_KINDS:
            raise BadRequest(f"kind must be one of {', '.join(IMPORT_KINDS)}", details={"kind": upload.kind})
        now = self.clock.now()
        job = ImportJob(
            import_id=new_id(), kind=upload.kind, state="validating", actor=actor.name,
            creditors=tuple(sorted(actor.creditors)), rows_total=0, rows_done=0, created_at=now, updated_at=now,
            file_name=upload.file_name, encoding=upload.encoding,
        )
        small = len(upload.body) <= self.limits.sync_bytes
        spec = None if small else self._spec()
        if spec is not None:
            assert self.spool is not None
            self.spool.mkdir(mode=0o700, parents=True, exist_ok=True)
            body = self.spool / f"{job.import_id}.body"
            await asyncio.to_thread(body.write_bytes, upload.body)  # up to max_bytes: not on the loop
        async with self.store.write() as uow:
            await uow.imports.create(job)
        if spec is not None:
            spec["upload"] = {"path": str(body), "kind": upload.kind, "content_type": upload.content_type,
                              "encoding": upload.encoding, "file_name": upload.file_name}
            spec["actor"] = {"user_id": actor.user_id, "name": actor.name, "role": actor.role,
                             "creditors": sorted(actor.creditors)}
            task = self._spawn_task(self._in_child(spec, job.import_id), job.import_id)
            if not wait:
                return job, False
            done = await asyncio.shield(task)
            if done.state == "refused":
                raise _refusal(done)
            return done, True
        if not small and not wait:
            self._spawn_task(self._inline(actor, job, upload), job.import_id)
            return job, False
        error = await validate_and_stage(self.store, self.clock, job.import_id, upload, actor, self.region_of,
                                         self.limits.max_rows)
        if error is not None:
            error.details = {**error.details, "import_id": job.import_id}
            raise error
        return await self._apply_here(job.import_id), True

    async def _inline(self, actor: Principal, job: ImportJob, upload: Upload) -> ImportJob:
        error = await validate_and_stage(self.store, self.clock, job.import_id, upload, actor, self.region_of,
                                         self.limits.max_rows)
        if error is None:
            return await self._apply_here(job.import_id)
        return job

    def _spec(self) -> dict[str, Any] | None:
        if self.worker_spec is None or self.spool is None:
            return None
        spec = self.worker_spec()
        if spec is None:
            return None
        return {**spec, "batch_rows": self.limits.batch_rows, "batch_ms": self.limits.batch_ms,
                "max_rows": self.limits.max_rows}

    # -- applying ------------------------------------------------------------------
    async def _apply_here(self, import_id: str) -> ImportJob:
        try:
            return await apply_job(self.store, self.clock, import_id, self.limits.batch_rows, self.limits.batch_ms,
                                   pause=self.pause)
        except StoreUnavailable as exc:
            async with self.store.write() as uow:
                await uow.imports.finish(import_id, "failed", self.clock.now(),
                                         errors=[{"row": 0, "field": "", "error": f"store error: {exc}"}])
                job = await uow.imports.get(import_id)
            assert job is not None
            return job

    async def _in_child(self, spec: dict[str, Any], import_id: str) -> ImportJob:
        """Run the job in a child process to its end; a child that dies is started again
        (it resumes from the last batch) up to three times, then the job fails."""
        for attempt in range(3):
            rc = await self._child({**spec, "import_id": import_id})
            async with self.store.read() as uow:
                job = await uow.imports.get(import_id)
            assert job is not None
            if job.state not in ("validating", "applying"):
                return job
            log.warning("import.worker_exited", import_id=import_id, returncode=rc, attempt=attempt + 1)
            await asyncio.sleep(0.5 * (attempt + 1))
        async with self.store.write() as uow:
            await uow.imports.finish(import_id, "failed", self.clock.now(), errors=[{
                "row": 0, "field": "", "error": "the import worker kept failing; the rows applied so far stay applied",
            }])
            job = await uow.imports.get(import_id)
        assert job is not None
        return job

    async def _child(self, spec: dict[str, Any]) -> int:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dialer.import_worker", stdin=asyncio.subprocess.PIPE,
        )
        self._procs.add(proc)
        try:
            await proc.communicate(json.dumps(spec).encode())
            return proc.returncode if proc.returncode is not None else -1
        finally:
            self._procs.discard(proc)
            if proc.returncode is None:
                proc.terminate()

    def _spawn_task(self, coro: Any, import_id: str) -> "asyncio.Task[ImportJob]":
        task = asyncio.create_task(coro, name=f"import-{import_id}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("import.task_failed", task=task.get_name(), error=repr(task.exception()))

    async def resume(self) -> list[str]:
        """On start: roll forward every job left applying, and every job left validating
        whose upload is still spooled; a job left validating without it failed (nothing
        of it was applied: send the file again)."""
        async with self.store.read() as uow:
            jobs = await uow.imports.unfinished()
        resumed = []
        for job in jobs:
            spec = self._spec()
            body = self.spool / f"{job.import_id}.body" if self.spool is not None else None
            if job.state == "validating" and (spec is None or body is None or not body.exists()):
                async with self.store.write() as uow:
                    await uow.imports.finish(job.import_id, "failed", self.clock.now(), errors=[{
                        "row": 0, "field": "",
                        "error": "the service stopped while the file was being validated; nothing was applied: "
                                 "send it again",
                    }])
                continue
            log.info("import.resumed", import_id=job.import_id, state=job.state, rows_done=job.rows_done,
                     rows_total=job.rows_total)
            if spec is None:
                self._spawn_task(self._apply_here(job.import_id), job.import_id)
            else:
                if job.state == "validating":
                    spec["upload"] = {"path": str(body), "kind": job.kind, "content_type": None,
                                      "encoding": job.encoding, "file_name": job.file_name}
                self._spawn_task(self._in_child(spec, job.import_id), job.import_id)
            resumed.append(job.import_id)
        return resumed

    # -- reading -------------------------------------------------------------------
    async def get(self, actor: Principal, import_id: str) -> ImportJob:
        """The job, to its submitter, an admin, or a data user who sees all its creditors."""
        if actor.role not in DATA_ROLES:
            raise Forbidden(f"role {actor.role!r} may not read imports",
                            details={"role": actor.role, "allowed_roles": sorted(DATA_ROLES)})
        async with self.store.read() as uow:
            job = await uow.imports.get(import_id)
        visible = job is not None and (
            actor.unscoped or job.actor == actor.name or (job.creditors and set(job.creditors) <= actor.creditors)
        )
        if job is None or not visible:
            raise NotFound(f"no import {import_id!r}", details={"import_id": import_id})
        return job


def _refusal(job: ImportJob) -> ApiError:
    """The refused job's errors as the error a synchronous import raises."""
    errors = list(job.errors)
    if len(errors) == 1 and errors[0].get("row") == 0:
        e = errors[0]
        exc: ApiError = BadRequest(e["error"], details=dict(e.get("details") or {}))
        if e.get("status") == 413:
            exc = PayloadTooLarge(e["error"], details=dict(e.get("details") or {}))
    else:
        exc = InvalidImport(errors)
    exc.details = {**exc.details, "import_id": job.import_id}
    return exc


async def run_in_child(spec: dict[str, Any], store: CaseStore, clock: Clock) -> ImportJob:
    """The child's side of `ImportJobs._in_child`: validate and stage the spooled upload
    (when the job is still validating), then apply in batches with pauses."""
    import_id = spec["import_id"]
    async with store.read() as uow:
        job = await uow.imports.get(import_id)
    if job is None:
        raise NotFound(f"no import {import_id!r}")
    if job.state == "validating":
        up = spec["upload"]
        path = Path(up["path"])
        upload = Upload(kind=up["kind"], body=path.read_bytes(), content_type=up["content_type"] or _sniff(path),
                        encoding=up["encoding"], file_name=up["file_name"])
        a = spec["actor"]
        actor = Principal(a["user_id"], a["name"], a["role"], frozenset(a["creditors"]))
        regions = spec["regions"]

        def region_of(creditor: str) -> str:
            region: str = regions["creditors"].get(creditor, regions["default"])
            return region

        await validate_and_stage(store, clock, import_id, upload, actor, region_of, int(spec["max_rows"]),
                                 in_thread=False)
        path.unlink(missing_ok=True)
    return await apply_job(store, clock, import_id, int(spec["batch_rows"]), int(spec["batch_ms"]), pause=True)


def _sniff(path: Path) -> str:
    """A resumed upload's type (its request headers are gone): JSON starts with `{`."""
    with path.open("rb") as f:
        head = f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    return "application/json" if head.startswith(b"{") else "text/csv"


@asynccontextmanager
async def open_import_jobs(services: Services) -> AsyncIterator[None]:
    """Extension: `services.imports`; the primary rolls interrupted jobs forward."""
    limits = load_import_limits(services.config.section("imports"), services.config.source)
    store = services.store
    config = services.config

    policies = services.policies

    def worker_spec() -> dict[str, Any] | None:
        url = config.store.url
        if url in ("sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:"):
            return None  # a child cannot open this process's memory
        return {
            "store": {f.name: getattr(config.store, f.name) for f in fields(config.store)},
            "events": bool(store.events),  # the child keeps outbox events exactly when this store does
            "regions": {"default": policies.default.default_region,
                        "creditors": {c: p.default_region for c, p in policies.creditors.items()}},
        }

    jobs = ImportJobs(store, services.clock, services.region_of, limits, worker_spec=worker_spec,
                      spool=config.paths.data_dir / "imports")
    async with jobs:
        services.imports = jobs
        if services.role == "primary":
            await jobs.resume()
        try:
            yield
        finally:
            services.imports = None
