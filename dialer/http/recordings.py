"""Recordings vault over HTTP, and the vault's extension (start-up wiring).

Routes (every error is problem+json; another creditor's recording or case is a 404):

    POST   /v1/recordings?attempt_id=|call_id=&started_at=&duration=   pbx (admin)
           body: the audio, streamed (audio/wav, audio/mpeg, audio/ogg; else 415;
           over [recordings] max_size_mb 413). 201 {recording_id, sha256,
           retain_until, state}; the same source again answers 200 with the same body.
    GET    /v1/recordings?agent=&number=&from=&to=&case_id=&creditor=&state=&limit=
    GET    /v1/cases/{case_id}/recordings[?creditor=]
    GET    /v1/recordings/{id}
    GET    /v1/recordings/{id}/audio?reason=   Range: bytes=… → 206 (reason required)
    GET    /v1/recordings/{id}/access-log
    POST   /v1/recordings/{id}/link                     admin: attach an unmatched one
    POST   /v1/recordings/{id}/legal-hold  {reason}     compliance, supervisor, admin
    DELETE /v1/recordings/{id}/legal-hold
    POST   /v1/cases/{case_id}/legal-hold  {reason, creditor?}
    DELETE /v1/cases/{case_id}/legal-hold[?creditor=]
    POST   /v1/purges  {dry_run?, creditor?}            admin requests (or dry-runs)
    GET    /v1/purges                                   pending requests
    GET    /v1/purges/{id}
    POST   /v1/purges/{id}/approve                      supervisor / compliance, not the requester
    GET    /v1/destruction-register                     with the chain check

Reading metadata: qa, compliance, supervisor (their creditors) and admin; audio:
qa, compliance, supervisor only.

`open_vault(services, build=…, watch=…)` is the vault's extension (started by
`dialer.bootstrap`, which passes the adapters in): it builds the vault from
``[recordings]``, cleans leftovers of interrupted ingests and makes "no vault → no
call" part of the gate's recording check; `run_vault_jobs` (the leader's) sweeps,
watches completeness and runs the drop-folder inbox when configured.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import structlog
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from dialer.errors import AmbiguousCase, ApiError, BadRequest, NoSuchAttempt, NoSuchCase
from dialer.http.deps import Caller, Svc, client_of
from dialer.http.inputs import check_range_header, parse_when
from dialer.model import Principal
from dialer.usecases import require_role
from dialer.audit import register_problems
from dialer.masking import mask_text, redact_on_input
from recordings.errors import RangeNotSatisfiable, VaultError
from recordings.model import (
    ADMIN_ROLES,
    HOLD_ROLES,
    READ_ROLES,
    Actor,
    IngestRequest,
    Link,
    Recording,
    RecordingFilter,
)
from recordings.vault import Vault
from dialer.services import RecordingsInbox, RecordingWatch, Services

if TYPE_CHECKING:
    from recordings.config import RecordingsConfig

R = TypeVar("R")

router = APIRouter(prefix="/v1", tags=["recordings"])
log = structlog.get_logger("dialgate.recordings")

META_ROLES = READ_ROLES | ADMIN_ROLES
MIN_REASON_CHARS = 4  # the console's minimum for an access reason (借阅原因)
INGEST_ROLES = frozenset({"pbx", "admin"})
# Content types PBXs send, to the vault's three.
MEDIA_ALIASES = {
    "audio/wav": "audio/wav", "audio/x-wav": "audio/wav", "audio/wave": "audio/wav", "audio/vnd.wave": "audio/wav",
    "audio/mpeg": "audio/mpeg", "audio/mp3": "audio/mpeg",
    "audio/ogg": "audio/ogg", "audio/opus": "audio/ogg",
}


class VaultProblem(ApiError):
    """A vault error as a problem document (status and type from the vault's tree)."""

    def __init__(self, exc: VaultError) -> None:
        details = {k: v for k, v in exc.details.items() if isinstance(v, (str, int, float, bool, list, type(None)))}
        super().__init__(exc.message, details=details)
        self.status = exc.status
        self.problem_id = exc.error_id
        self.title = type(exc).__name__


def _vault(svc: Services) -> Vault:
    if svc.vault is None:
        raise ApiError("the recordings vault is not running (extension recordings-vault)")
    return svc.vault


def _actor(who: Principal) -> Actor:
    return Actor(user=who.name, role=who.role, creditors=who.scope())


@asynccontextmanager
async def _mapped() -> AsyncIterator[None]:
    try:
        yield
    except VaultError as exc:
        raise VaultProblem(exc) from exc


def recording_json(r: Recording, held_by_case: bool = False) -> dict[str, Any]:
    return {
        "recording_id": r.recording_id,
        "source": {"kind": r.source_kind, "id": r.source_id},
        "creditor": r.creditor,
        "case_id": r.case_id,
        "agent": r.agent,
        "number": r.number_masked,
        "started_at": r.started_at.isoformat(),
        "duration_s": r.duration_s,
        "media_type": r.media_type,
        "size": r.size,
        "sha256": r.sha256,
        "key_id": r.kek_id,
        "retain_until": r.retain_until.isoformat(),
        "state": r.state,
        # Numbers are masked here for every role, in free text as in the number field.
        "legal_hold": (
            {"reason": mask_text(r.hold.reason), "by": r.hold.by, "at": r.hold.at.isoformat()} if r.hold else None
        ),
        "held_by_case": held_by_case,
        "created_at": r.created_at.isoformat(),
        "destroyed_at": r.destroyed_at.isoformat() if r.destroyed_at else None,
    }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (date, datetime)):
        return obj.isoformat()
    return obj


def _when(value: str | None, name: str) -> datetime | None:
    return parse_when(value, name)


async def _link_for_attempt(svc: Services, who: Principal, attempt_id: str) -> tuple[Link, datetime | None]:
    """The case, agent and number of an attempt; an unknown attempt gives no link."""
    async with svc.store.read() as uow:
        att = await uow.attempts.get(attempt_id)
    if att is None:
        return Link(), None
    if not who.can_see(att.creditor):
        raise NoSuchAttempt(f"no attempt {attempt_id}")
    return Link(creditor=att.creditor, case_id=att.case_id, agent=att.agent_id, number=att.number), att.at


# -- ingest ------------------------------------------------------------------------------


@router.post("/recordings", status_code=201, summary="Upload one call's audio (streamed body); idempotent by source id.")
async def ingest_recording(
    request: Request,
    who: Caller,
    svc: Svc,
    attempt_id: str | None = Query(None, max_length=200),
    call_id: str | None = Query(None, max_length=200, description="SIP Call-ID when no attempt id is known"),
    started_at: str | None = Query(None, description="call start, ISO 8601 with offset (default: the attempt's time)"),
    duration: float | None = Query(None, ge=0, description="seconds"),
) -> Any:
    require_role(who, INGEST_ROLES, "upload recordings")
    vault = _vault(svc)
    if (attempt_id is None) == (call_id is None):
        raise BadRequest("须给出 attempt_id 或 call_id 之一 / give exactly one of attempt_id, call_id")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    media_type = MEDIA_ALIASES.get(ctype)
    if media_type is None:
        raise VaultProblem(
            _unsupported(f"不支持的音频类型 / unsupported Content-Type {ctype or '(none)'!r}; "
                         "send audio/wav, audio/mpeg or audio/ogg")
        )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > vault.max_size:
        from recordings.errors import RecordingTooLarge

        raise VaultProblem(RecordingTooLarge(f"录音超过上限 / recording exceeds {vault.max_size} bytes", limit=vault.max_size))
    link, attempt_at = (await _link_for_attempt(svc, who, attempt_id)) if attempt_id else (Link(), None)
    start = _when(started_at, "started_at") or attempt_at
    if start is None:
        raise BadRequest("started_at: 未知呼叫须给出开始时间 / required when the call is not a known attempt")
    req = IngestRequest(
        source_kind="attempt" if attempt_id else "call",
        source_id=attempt_id or call_id or "",
        started_at=start,
        media_type=media_type,
        duration_s=duration,
        link=link,
        attempt_at=attempt_at,
    )
    idle = svc.recordings_config
    async with _mapped():
        result = await vault.ingest(
            req, _idle_limited(request, idle.upload_idle_timeout_s if idle else 60.0), _actor(who)
        )
    r = result.recording
    log.info("recording.sealed" if result.created else "recording.duplicate", recording_id=r.recording_id,
             source_kind=r.source_kind, creditor=r.creditor, case_id=r.case_id, size=r.size, state=r.state)
    body = {"recording_id": r.recording_id, "sha256": r.sha256, "retain_until": r.retain_until.isoformat(),
            "state": r.state}
    return JSONResponse(body, status_code=201 if result.created else 200)


class UploadStalled(ApiError):
    status, problem_id, title = 408, "upload-stalled", "Upload stalled"


async def _idle_limited(request: Request, idle_s: float) -> AsyncIterator[bytes]:
    """The request body, piece by piece; a sender silent for `idle_s` is dropped
    (the vault then removes the partial temporary: nothing is stored)."""
    pieces = request.stream().__aiter__()
    while True:
        try:
            async with asyncio.timeout(idle_s):
                piece = await pieces.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError as exc:
            raise UploadStalled(
                f"上传中断超过 {idle_s:g} 秒 / no data for {idle_s:g} s; nothing was stored",
                details={"idle_timeout_s": idle_s},
            ) from exc
        yield piece


def _unsupported(message: str) -> VaultError:
    from recordings.errors import UnsupportedMediaType

    return UnsupportedMediaType(message)


# -- lookup --------------------------------------------------------------------------------


@router.get("/recordings", summary="Recording metadata by agent, number, date, case.")
async def list_recordings(
    who: Caller,
    svc: Svc,
    agent: str | None = Query(None, max_length=100),
    number: str | None = Query(None, max_length=40),
    from_: str | None = Query(None, alias="from"),
    to: str | None = Query(None),
    case_id: str | None = Query(None, max_length=100),
    creditor: str | None = Query(None, max_length=64),
    state: str | None = Query(None, pattern="^(stored|unmatched|destroyed)$"),
    limit: int = Query(200, ge=1, le=1000),
) -> dict[str, Any]:
    require_role(who, META_ROLES, "list recordings")
    vault = _vault(svc)
    e164 = None
    if number:
        from policy import NumberFormatError, normalize_number

        region = svc.region_of(creditor) if creditor else svc.policies.default.default_region
        try:
            e164 = normalize_number(number, region)
        except NumberFormatError as exc:
            raise BadRequest(f"number: {exc}") from exc
    flt = RecordingFilter(
        creditors=frozenset({creditor}) if creditor else None,
        case_id=case_id,
        agent=agent,
        started_from=_when(from_, "from"),
        started_to=_when(to, "to"),
        state=state,
        include_destroyed=state == "destroyed",
        limit=limit,
    )
    async with _mapped():
        recs = await vault.list(_actor(who), flt, number=e164)
    held: dict[tuple[str | None, str | None], bool] = {}
    out = []
    for r in recs:
        key = (r.creditor, r.case_id)
        if key not in held:  # one lookup per case, not per recording
            held[key] = await _case_held(vault, r)
        out.append(recording_json(r, held[key]))
    return {"recordings": out}


@router.get(
    "/recordings/missing",
    summary="Connected calls whose recording is overdue (every call must be recorded), with counts per day.",
)
async def missing_recordings(
    who: Caller,
    svc: Svc,
    from_: str | None = Query(None, alias="from"),
    to: str | None = Query(None),
    creditor: str | None = Query(None, max_length=64),
) -> dict[str, Any]:
    require_role(who, META_ROLES, "list missing recordings")
    watch = svc.recording_watch
    if watch is None:
        raise BadRequest("录音完整性检查未启用 / [recordings] expect_within is off: completeness is not watched")
    now = svc.clock.now()
    since = _when(from_, "from") or now - timedelta(days=7)
    until = _when(to, "to") or now + timedelta(minutes=1)
    scope = who.scope()
    if creditor is not None:
        if scope is not None and creditor not in scope:
            raise NoSuchCase(f"no creditor {creditor}")  # another creditor's data does not exist for this user
        scope = frozenset({creditor})
    rows = await watch.missing(scope, since, until)
    by_day: dict[tuple[str, str], int] = {}
    for r in rows:
        day = r["dialed_at"].astimezone(svc.policies.for_creditor(r["creditor"]).zone).date().isoformat()
        by_day[(day, r["creditor"])] = by_day.get((day, r["creditor"]), 0) + 1
    return {
        "missing": [
            {**r, "dialed_at": r["dialed_at"].isoformat(), "due_at": r["due_at"].isoformat()} for r in rows
        ],
        "by_day": [{"day": d, "creditor": c, "count": n} for (d, c), n in sorted(by_day.items())],
    }


async def _case_held(vault: Vault, r: Recording) -> bool:
    return r.creditor is not None and r.case_id is not None and await vault.repo.case_hold(r.creditor, r.case_id) is not None


async def _case_creditor(svc: Services, who: Principal, case_id: str, creditor: str | None) -> str:
    async with svc.store.read() as uow:
        found = await uow.cases.find(case_id, who.scope())
    if creditor is not None:
        found = [c for c in found if c.creditor == creditor]
    if not found:
        raise NoSuchCase(f"no case {case_id}")
    if len(found) > 1:
        raise AmbiguousCase(
            f"case {case_id} exists for several creditors; add ?creditor=",
            details={"creditors": sorted(c.creditor for c in found)},
        )
    return found[0].creditor


@router.get("/cases/{case_id}/recordings", summary="Every recording of a case.")
async def case_recordings(case_id: str, who: Caller, svc: Svc, creditor: str | None = Query(None, max_length=64)) -> dict[str, Any]:
    require_role(who, META_ROLES, "list recordings")
    vault = _vault(svc)
    cred = await _case_creditor(svc, who, case_id, creditor)
    async with _mapped():
        recs = await vault.list(_actor(who), RecordingFilter(creditors=frozenset({cred}), case_id=case_id, limit=None))
        hold = await vault.case_hold(cred, case_id, _actor(who))
    return {
        "creditor": cred,
        "case_id": case_id,
        "legal_hold": ({"reason": mask_text(hold.reason), "by": hold.by, "at": hold.at.isoformat()} if hold else None),
        "recordings": [recording_json(r, hold is not None) for r in recs],
    }


@router.get("/recordings/{recording_id}", summary="One recording's metadata.")
async def get_recording(recording_id: str, who: Caller, svc: Svc) -> dict[str, Any]:
    require_role(who, META_ROLES, "read recordings")
    vault = _vault(svc)
    async with _mapped():
        r = await vault.get(recording_id, _actor(who))
    return recording_json(r, await _case_held(vault, r))


# -- audio -----------------------------------------------------------------------------


@router.get("/recordings/{recording_id}/audio", summary="Decrypted audio; HTTP Range supported; reason required (借阅原因).")
async def recording_audio(
    recording_id: str,
    request: Request,
    who: Caller,
    svc: Svc,
    reason: str | None = Query(None, max_length=500, description="why you listen (借阅原因); written in the access log"),
) -> Any:
    require_role(who, READ_ROLES, "listen to recordings")
    vault = _vault(svc)
    client = client_of(request.scope, svc)
    check_range_header(request.headers.get("range"))
    if reason is not None and 0 < len(reason.strip()) < MIN_REASON_CHARS:  # as the console asks
        from recordings.errors import ReasonRequired

        raise VaultProblem(ReasonRequired(
            f"调阅原因至少 {MIN_REASON_CHARS} 个字 / the reason for access needs at least {MIN_REASON_CHARS} characters"))
    try:
        stream = await vault.open_audio(
            recording_id, _actor(who), reason=redact_on_input(reason), byte_range=request.headers.get("range"),
            client=client
        )
    except RangeNotSatisfiable as exc:
        size = exc.details.get("size")
        problem = VaultProblem(exc).to_problem(request.url.path)
        return JSONResponse(problem, status_code=416, media_type="application/problem+json",
                            headers={"Content-Range": f"bytes */{size}"} if size is not None else None)
    except VaultError as exc:
        raise VaultProblem(exc) from exc
    # Decrypt the first chunk before the status line goes out, so a tampered or
    # truncated blob is a clean problem+json 500 rather than a cut stream.
    chunks = iter(stream.chunks)
    try:
        first = await asyncio.to_thread(next, chunks, b"")
    except VaultError as exc:
        stream.close()
        log.error("recording.integrity_failed", recording_id=recording_id, error=exc.message)
        raise VaultProblem(exc) from exc
    stream.chunks = itertools.chain([first], chunks)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(stream.length),
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }
    status = 200
    if stream.partial:
        status = 206
        headers["Content-Range"] = f"bytes {stream.start}-{stream.end}/{stream.total}"
    log.info("recording.accessed", recording_id=recording_id, start=stream.start, end=stream.end)
    return StreamingResponse(_guarded(stream), status_code=status, media_type=stream.recording.media_type, headers=headers)


def _guarded(stream: Any) -> Any:
    """Stream chunks; an integrity failure mid-stream is logged and cuts the response."""
    try:
        yield from stream.chunks
    except VaultError as exc:
        log.error("recording.integrity_failed", recording_id=stream.recording.recording_id, error=exc.message)
        raise
    finally:
        stream.close()


@router.get("/recordings/{recording_id}/access-log", summary="Who listened, when, why, which bytes, from where.")
async def access_log(recording_id: str, who: Caller, svc: Svc) -> dict[str, Any]:
    require_role(who, META_ROLES, "read the access log")
    async with _mapped():
        entries = await _vault(svc).access_log(recording_id, _actor(who))
    return {"recording_id": recording_id,
            "entries": [_jsonable({**asdict(e), "reason": mask_text(e.reason)}) for e in entries]}


# -- linking and holds -----------------------------------------------------------------


class LinkBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attempt_id: str = Field(min_length=1, max_length=200)


@router.post("/recordings/{recording_id}/link", summary="Attach an unmatched recording to its attempt (admin).")
async def link_recording(recording_id: str, body: LinkBody, who: Caller, svc: Svc) -> dict[str, Any]:
    require_role(who, ADMIN_ROLES, "link recordings")
    link, _ = await _link_for_attempt(svc, who, body.attempt_id)
    if link.creditor is None:
        raise NoSuchAttempt(f"no attempt {body.attempt_id}")
    async with _mapped():
        r = await _vault(svc).link(recording_id, _actor(who), link)
    return recording_json(r)


class HoldBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(max_length=500, description="complaint or lawsuit reference (投诉/诉讼)")
    creditor: str | None = Field(None, max_length=64)


@router.post("/recordings/{recording_id}/legal-hold", summary="Hold one recording: never purged while held.")
async def hold_recording(recording_id: str, body: HoldBody, who: Caller, svc: Svc) -> dict[str, Any]:
    require_role(who, HOLD_ROLES, "place legal holds")
    async with _mapped():
        r = await _vault(svc).place_hold(recording_id, _actor(who), redact_on_input(body.reason) or "")
    log.info("recording.held", recording_id=recording_id)
    return recording_json(r)


@router.delete("/recordings/{recording_id}/legal-hold", summary="Release a recording's hold.")
async def release_recording(recording_id: str, who: Caller, svc: Svc) -> dict[str, Any]:
    require_role(who, HOLD_ROLES, "release legal holds")
    async with _mapped():
        r = await _vault(svc).release_hold(recording_id, _actor(who))
    log.info("recording.hold_released", recording_id=recording_id)
    return recording_json(r)


@router.post("/cases/{case_id}/legal-hold", summary="Hold every recording of a case, present and future.")
async def hold_case(case_id: str, body: HoldBody, who: Caller, svc: Svc) -> dict[str, Any]:
    require_role(who, HOLD_ROLES, "place legal holds")
    cred = await _case_creditor(svc, who, case_id, body.creditor)
    async with _mapped():
        hold = await _vault(svc).place_case_hold(cred, case_id, _actor(who), redact_on_input(body.reason) or "")
    log.info("case.recordings_held", creditor=cred, case_id=case_id)
    return {"creditor": cred, "case_id": case_id,
            "legal_hold": {"reason": mask_text(hold.reason), "by": hold.by, "at": hold.at.isoformat()}}


@router.delete("/cases/{case_id}/legal-hold", summary="Release a case's hold.")
async def release_case(case_id: str, who: Caller, svc: Svc, creditor: str | None = Query(None, max_length=64)) -> dict[str, Any]:
    require_role(who, HOLD_ROLES, "release legal holds")
    cred = await _case_creditor(svc, who, case_id, creditor)
    async with _mapped():
        released = await _vault(svc).release_case_hold(cred, case_id, _actor(who))
    return {"creditor": cred, "case_id": case_id, "released": released}


# -- purge and register ------------------------------------------------------------------


class PurgeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dry_run: bool = False
    creditor: str | None = Field(None, max_length=64)


def _purge_json(p: Any) -> dict[str, Any]:
    doc: dict[str, Any] = _jsonable(asdict(p))
    return doc


@router.post("/purges", status_code=201, summary="Request destruction of what is due (admin); dry_run only lists it.")
async def request_purge(body: PurgeBody, who: Caller, svc: Svc) -> Any:
    async with _mapped():
        plan = await _vault(svc).request_purge(_actor(who), creditor=body.creditor, dry_run=body.dry_run)
    out = {
        "as_of": plan.as_of.isoformat(),
        "dry_run": body.dry_run,
        "due": [recording_json(r) for r in plan.due],
        "held": [recording_json(r) for r in plan.held],
        "purge": _purge_json(plan.request) if plan.request else None,
    }
    if plan.request:
        log.info("purge.requested", purge_id=plan.request.purge_id, count=len(plan.due))
    return JSONResponse(out, status_code=200 if body.dry_run else 201)


@router.get("/purges", summary="Purge requests waiting for their second person.")
async def pending_purges(who: Caller, svc: Svc) -> dict[str, Any]:
    async with _mapped():
        purges = await _vault(svc).pending_purges(_actor(who))
    return {"purges": [_purge_json(p) for p in purges]}


@router.get("/purges/{purge_id}", summary="A purge request and its outcome.")
async def get_purge(purge_id: str, who: Caller, svc: Svc) -> dict[str, Any]:
    async with _mapped():
        return _purge_json(await _vault(svc).get_purge(purge_id, _actor(who)))


@router.post("/purges/{purge_id}/approve", summary="Approve (a different person: supervisor or compliance); destroys.")
async def approve_purge(purge_id: str, who: Caller, svc: Svc) -> dict[str, Any]:
    async with _mapped():
        done = await _vault(svc).approve_purge(purge_id, _actor(who))
    log.info("purge.approved", purge_id=purge_id, destroyed=len(done.destroyed), skipped=len(done.skipped))
    return _purge_json(done)


@router.get("/destruction-register", summary="The hash-chained destruction register (销毁登记表).")
async def destruction_register(who: Caller, svc: Svc) -> dict[str, Any]:
    vault = _vault(svc)
    async with _mapped():
        entries = await vault.destruction_register(_actor(who))
        problems = await register_problems(vault.repo, svc.store.evidence)
    return {
        # The whole register (keyed chain, head, one entry per destroyed recording),
        # whatever part of it this caller may read.
        "chain_ok": problems == [],
        "entries": [_jsonable(asdict(e)) for e in entries],
    }


# -- the extension -------------------------------------------------------------------------


class VaultRecordingCheck:
    """The gate's recording check, extended: no working vault means no call.

    The vault works when its data directory is writable with room to spare (or, on
    S3, its bucket answers) and a key exists for unmatched recordings (so any
    recording can at least be kept)."""

    MIN_FREE = 256 * 1024 * 1024

    def __init__(self, vault: Vault, data_dir: Any, before: Any) -> None:
        self.vault = vault
        self.data_dir = data_dir
        self.before = before

    async def available(self) -> bool:
        def check() -> bool:
            if self.vault.blobs.remote:
                try:
                    self.vault.blobs.check()
                except VaultError:
                    return False
            elif not os.access(self.data_dir, os.W_OK):
                return False
            elif shutil.disk_usage(self.data_dir).free < self.MIN_FREE:
                return False
            try:
                self.vault.keys.active_id("_unmatched")
            except Exception:  # noqa: BLE001 - a key module that fails in any way: no recording, so no call
                return False
            return True

        if not await asyncio.to_thread(check):
            return False
        return await self.before.available() if self.before is not None else True


@asynccontextmanager
async def open_vault(
    services: Services, *, build: Callable[[RecordingsConfig], Vault], watch: Callable[[], RecordingWatch],
) -> AsyncIterator[Vault]:
    """Extension: the vault `build` makes from `[recordings]`, for the app's lifetime;
    `watch` reads which connected calls lack their recording (`expect_within`)."""
    from recordings.config import parse_recordings_config

    try:
        rcfg = parse_recordings_config(dict(_thaw(services.config.section("recordings"))), services.config.paths.data_dir)
    except VaultError as exc:
        from dialer.errors import ConfigError

        raise ConfigError(f"{services.config.source}: {exc.message}") from exc
    try:
        vault = build(rcfg)
        if vault.blobs.remote:
            # A bucket without the Object Lock asked for is refused here, not found later.
            await asyncio.to_thread(vault.blobs.check)
    except VaultError as exc:
        from dialer.errors import ConfigError

        raise ConfigError(f"{services.config.source}: {exc.message}") from exc
    await vault.anchor_register()
    if rcfg.keys != "env":
        # Unknown calls must always be keepable; a KMS answers off the loop.
        await asyncio.to_thread(vault.keys.create, "_unmatched")
    primary = services.role == "primary"
    # Recovery, the sweep and the inbox run once per data dir: in the primary worker.
    cleaned = await vault.recover(orphan_grace=timedelta(minutes=5)) if primary else {}
    _count_cleaned(cleaned)
    log.info(
        "vault.started",
        store=vault.blobs.location,
        keys=rcfg.keys,
        **cleaned,
    )
    services.vault = vault
    services.recordings_config = rcfg
    services.attach_recordings(VaultRecordingCheck(vault, rcfg.data_dir, services.gate.recordings))
    if rcfg.expect_within is not None:
        services.recording_watch = watch()  # read by every instance
    yield vault


@asynccontextmanager
async def run_vault_jobs(
    services: Services, *, inbox: Callable[[Vault, RecordingsConfig], RecordingsInbox],
) -> AsyncIterator[None]:
    """Extension entered by the leader only: the sweep, the completeness watch and the
    drop-folder inbox (`inbox` builds it), once across every instance on the store."""
    vault, rcfg = services.vault, services.recordings_config
    if vault is None or rcfg is None:
        yield
        return
    stop = asyncio.Event()
    tasks = [asyncio.create_task(_sweep(vault, stop), name="recordings-sweep")]
    watch = services.recording_watch
    if watch is not None and rcfg.expect_within is not None:
        tasks.append(
            asyncio.create_task(
                _watch_completeness(watch, services.clock.now, rcfg.expect_within, stop),
                name="recordings-completeness",
            )
        )
    if rcfg.inbox is not None:
        services.recordings_inbox = running = inbox(vault, rcfg)
        tasks.append(asyncio.create_task(_run_inbox(running, stop), name="recordings-inbox"))
    try:
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
        finally:
            services.recordings_inbox = None


def _thaw(v: Any) -> Any:
    if hasattr(v, "items"):
        return {k: _thaw(x) for k, x in v.items()}
    return v


class AttemptResolver(Generic[R]):
    """Which attempt a recorder's file belongs to, as `make` (the inbox's own type) says it."""

    def __init__(self, services: Services, make: Callable[[Link, datetime], R]) -> None:
        self.services = services
        self.make = make

    async def resolve(self, source_kind: str, source_id: str) -> R | None:
        if source_kind != "attempt":
            return None
        async with self.services.store.read() as uow:
            att = await uow.attempts.get(source_id)
        if att is None:
            return None
        return self.make(Link(att.creditor, att.case_id, att.agent_id, att.number), att.at)


def _count_cleaned(cleaned: dict[str, int]) -> None:
    from dialer.metrics import VAULT_CLEANED

    for kind, n in cleaned.items():
        if n:
            VAULT_CLEANED.labels(kind).inc(n)


async def _sweep(vault: Vault, stop: asyncio.Event, every_s: float = 900.0) -> None:
    """Leftovers of ingests that died while the service ran (temporaries, orphan
    blobs) older than five minutes, every quarter of an hour."""
    while True:
        try:
            await asyncio.wait_for(stop.wait(), timeout=every_s)
            return
        except TimeoutError:
            pass
        try:
            cleaned = await vault.recover(orphan_grace=timedelta(minutes=5))
            _count_cleaned(cleaned)
            if any(cleaned.values()):
                log.info("vault.swept", **cleaned)
        except Exception as exc:  # noqa: BLE001 - keep sweeping
            log.warning("vault.sweep_failed", error=str(exc))


async def _watch_completeness(watch: Any, now: Any, expect_within: timedelta, stop: asyncio.Event) -> None:
    """Every connected call must be recorded: alert on each one whose recording did
    not arrive within `expect_within` of the call's end (checked a few times per
    period, at least every minute)."""
    from dialer.metrics import RECORDINGS_MISSING

    every_s = min(60.0, max(1.0, expect_within.total_seconds() / 4))
    while True:
        try:
            for alert in await watch.sweep(now(), expect_within):
                RECORDINGS_MISSING.labels(alert["creditor"]).inc()
                log.warning(
                    "recording.missing", attempt_id=alert["attempt_id"], creditor=alert["creditor"],
                    case_id=alert["case_id"], agent_id=alert["agent"], number=alert["number"],
                )
        except Exception as exc:  # noqa: BLE001 - the watch must keep running
            log.warning("recording.watch_failed", error=type(exc).__name__)
        try:
            await asyncio.wait_for(stop.wait(), timeout=every_s)
            return
        except TimeoutError:
            pass


async def _run_inbox(inbox: Any, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            for outcome in await inbox.scan():
                log.info("inbox.taken", file=outcome.file, result=outcome.result, recording_id=outcome.recording_id)
        except Exception as exc:  # noqa: BLE001 - the folder must keep being watched
            log.warning("inbox.failed", error=str(exc))
        try:
            await asyncio.wait_for(stop.wait(), timeout=5.0)
        except TimeoutError:
            pass
