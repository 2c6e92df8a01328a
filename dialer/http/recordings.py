"""Recordings out: metadata by agent, number, date and case, the overdue ones, the
decrypted audio, and who listened (every error is problem+json; another creditor's
recording or case is a 404).

    GET    /v1/recordings?agent=&number=&from=&to=&case_id=&creditor=&state=&limit=
    GET    /v1/recordings/missing?from=&to=&creditor=
    GET    /v1/cases/{case_id}/recordings[?creditor=]
    GET    /v1/recordings/{id}
    GET    /v1/recordings/{id}/audio?reason=   Range: bytes=… → 206 (reason required)
    GET    /v1/recordings/{id}/access-log

Reading metadata: qa, compliance, supervisor (their creditors) and admin; audio:
qa, compliance, supervisor only.

Uploads and links are in `recording_uploads`, legal holds, purges and the destruction
register in `recording_retention`; the vault's start-up and background jobs in
`dialer.vault_extension`.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import asdict
from datetime import timedelta
from typing import Any

import structlog
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from dialer.errors import BadRequest, NoSuchCase
from dialer.http.deps import Caller, Svc, client_of
from dialer.http.inputs import check_range_header
from dialer.http.vault_access import (
    META_ROLES, VaultProblem, actor_of, case_creditor, jsonable, mapped, recording_json, vault_of, when,
)
from dialer.masking import mask_text, redact_on_input
from dialer.usecases import require_role
from recordings.errors import RangeNotSatisfiable, VaultError
from recordings.model import READ_ROLES, Recording, RecordingFilter
from recordings.vault import Vault

router = APIRouter(prefix="/v1", tags=["recordings"])
log = structlog.get_logger("dialgate.recordings")

MIN_REASON_CHARS = 4  # the console's minimum for an access reason (借阅原因)


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
    vault = vault_of(svc)
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
        started_from=when(from_, "from"),
        started_to=when(to, "to"),
        state=state,
        include_destroyed=state == "destroyed",
        limit=limit,
    )
    async with mapped():
        recs = await vault.list(actor_of(who), flt, number=e164)
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
    since = when(from_, "from") or now - timedelta(days=7)
    until = when(to, "to") or now + timedelta(minutes=1)
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


@router.get("/cases/{case_id}/recordings", summary="Every recording of a case.")
async def case_recordings(case_id: str, who: Caller, svc: Svc, creditor: str | None = Query(None, max_length=64)) -> dict[str, Any]:
    require_role(who, META_ROLES, "list recordings")
    vault = vault_of(svc)
    cred = await case_creditor(svc, who, case_id, creditor)
    async with mapped():
        recs = await vault.list(actor_of(who), RecordingFilter(creditors=frozenset({cred}), case_id=case_id, limit=None))
        hold = await vault.case_hold(cred, case_id, actor_of(who))
    return {
        "creditor": cred,
        "case_id": case_id,
        "legal_hold": ({"reason": mask_text(hold.reason), "by": hold.by, "at": hold.at.isoformat()} if hold else None),
        "recordings": [recording_json(r, hold is not None) for r in recs],
    }


@router.get("/recordings/{recording_id}", summary="One recording's metadata.")
async def get_recording(recording_id: str, who: Caller, svc: Svc) -> dict[str, Any]:
    require_role(who, META_ROLES, "read recordings")
    vault = vault_of(svc)
    async with mapped():
        r = await vault.get(recording_id, actor_of(who))
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
    vault = vault_of(svc)
    client = client_of(request.scope, svc)
    check_range_header(request.headers.get("range"))
    if reason is not None and 0 < len(reason.strip()) < MIN_REASON_CHARS:  # as the console asks
        from recordings.errors import ReasonRequired

        raise VaultProblem(ReasonRequired(
            f"调阅原因至少 {MIN_REASON_CHARS} 个字 / the reason for access needs at least {MIN_REASON_CHARS} characters"))
    try:
        stream = await vault.open_audio(
            recording_id, actor_of(who), reason=redact_on_input(reason), byte_range=request.headers.get("range"),
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
    async with mapped():
        entries = await vault_of(svc).access_log(recording_id, actor_of(who))
    return {"recording_id": recording_id,
            "entries": [jsonable({**asdict(e), "reason": mask_text(e.reason)}) for e in entries]}

