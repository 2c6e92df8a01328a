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

The checks and staging are in `dialer.import_validation`, the batches in
`dialer.import_apply`; this module runs them as jobs.
"""

from __future__ import annotations

import asyncio
import json
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Mapping

import structlog

from dialer.errors import (
    ApiError,
    BadRequest,
    ConfigError,
    Forbidden,
    InvalidImport,
    NotFound,
    PayloadTooLarge,
    StoreRefusedValue,
    StoreUnavailable,
)
from dialer.ids import new_id
from dialer.import_apply import apply_job
from dialer.import_validation import Upload, validate_and_stage
from dialer.model import IMPORT_KINDS, ImportJob, Principal
from dialer.ports import CaseStore, Clock

if TYPE_CHECKING:
    from dialer.services import Services

_REAP_S = 10.0  # a terminated child only rolls back its batch before it exits

log = structlog.get_logger("dialgate.imports")

DATA_ROLES = frozenset({"data", "admin"})


@dataclass(frozen=True, slots=True)
class ImportLimits:
    """`[imports]` in config.toml."""

    max_bytes: int = 20 * 1024 * 1024  # a body over it is refused with 413 (Content-Length: before reading)
    max_rows: int = 200_000  # cases (CSV: rows) or repayments per file
    sync_bytes: int = 256 * 1024  # POST /v1/imports answers bodies up to this when applied (200), others 202
    batch_rows: int = 500  # at most this many rows per apply transaction …
    batch_ms: int = 5  # … and no longer than this: how long the gate may wait for the write lock
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
        procs = [proc for proc in self._procs if proc.returncode is None]
        for proc in procs:
            proc.terminate()  # its running batch rolls back; the job resumes on the next start
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
        for proc in procs:
            await _reap(proc)

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
        try:
            error = await validate_and_stage(self.store, self.clock, job.import_id, upload, actor, self.region_of,
                                             self.limits.max_rows)
        except StoreRefusedValue as exc:
            await self._failed(job.import_id, f"the store refused a value: {exc}; nothing was applied")
            raise
        if error is not None:
            error.details = {**error.details, "import_id": job.import_id}
            raise error
        return await self._apply_here(job.import_id, refusal_raises=True), True

    async def _inline(self, actor: Principal, job: ImportJob, upload: Upload) -> ImportJob:
        try:
            error = await validate_and_stage(self.store, self.clock, job.import_id, upload, actor, self.region_of,
                                             self.limits.max_rows)
        except StoreRefusedValue as exc:
            return await self._failed(job.import_id, f"the store refused a value: {exc}; nothing was applied")
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
    async def _apply_here(self, import_id: str, *, refusal_raises: bool = False) -> ImportJob:
        """Apply a job here to its end. A job that cannot go on ends "failed", never left
        reading "applying"; `refusal_raises`: a value the store refused is also raised,
        for the caller waiting to answer with it."""
        try:
            return await apply_job(self.store, self.clock, import_id, self.limits.batch_rows, self.limits.batch_ms,
                                   pause=self.pause)
        except StoreUnavailable as exc:
            return await self._failed(import_id, f"store error: {exc}")
        except StoreRefusedValue as exc:
            job = await self._failed(import_id,
                                     f"the store refused a value: {exc}; the rows applied so far stay applied")
            if refusal_raises:
                raise
            return job

    async def _failed(self, import_id: str, error: str) -> ImportJob:
        """End the job "failed" with `error`; the job as it now reads."""
        async with self.store.write() as uow:
            await uow.imports.finish(import_id, "failed", self.clock.now(),
                                     errors=[{"row": 0, "field": "", "error": error}])
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
        return await self._failed(import_id, "the import worker kept failing; the rows applied so far stay applied")

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
                await self._failed(job.import_id, "the service stopped while the file was being validated; "
                                                  "nothing was applied: send it again")
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


async def run_in_child(spec: dict[str, Any], store: CaseStore, clock: Clock,
                       applying: Callable[[], Any] | None = None) -> ImportJob:
    """The child's side of `ImportJobs._in_child`: validate and stage the spooled upload
    (when the job is still validating), then apply in batches with pauses; on the store
    `applying()` opens, if given (an async context manager yielding a `CaseStore`)."""
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
    if applying is None:
        return await apply_job(store, clock, import_id, int(spec["batch_rows"]), int(spec["batch_ms"]), pause=True)
    async with applying() as batches:
        job = await apply_job(batches, clock, import_id, int(spec["batch_rows"]), int(spec["batch_ms"]), pause=True)
    return job


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Wait for a terminated child, so its pipes close with it rather than at collection;
    one still running after `_REAP_S` is killed."""
    try:
        await asyncio.wait_for(proc.wait(), _REAP_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()


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
