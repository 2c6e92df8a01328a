"""Recordings in: a PBX's upload of one call's audio, and an admin's link of an
unmatched recording to its attempt.

    POST   /v1/recordings?attempt_id=|call_id=&started_at=&duration=   pbx (admin)
           body: the audio, streamed (audio/wav, audio/mpeg, audio/ogg; else 415;
           over [recordings] max_size_mb 413). 201 {recording_id, sha256,
           retain_until, state}; the same source again answers 200 with the same body.
    POST   /v1/recordings/{id}/link                     admin: attach an unmatched one
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import structlog
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from dialer.errors import ApiError, BadRequest, NoSuchAttempt
from dialer.http.deps import Caller, Svc
from dialer.http.inputs import Text
from dialer.http.vault_access import VaultProblem, actor_of, link_for_attempt, mapped, recording_json, vault_of, when
from dialer.usecases import require_role
from recordings.errors import VaultError
from recordings.model import ADMIN_ROLES, IngestRequest, Link

router = APIRouter(prefix="/v1", tags=["recordings"])
log = structlog.get_logger("dialgate.recordings")

INGEST_ROLES = frozenset({"pbx", "admin"})
# Content types PBXs send, to the vault's three.
MEDIA_ALIASES = {
    "audio/wav": "audio/wav", "audio/x-wav": "audio/wav", "audio/wave": "audio/wav", "audio/vnd.wave": "audio/wav",
    "audio/mpeg": "audio/mpeg", "audio/mp3": "audio/mpeg",
    "audio/ogg": "audio/ogg", "audio/opus": "audio/ogg",
}


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
    vault = vault_of(svc)
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
    link, attempt_at = (await link_for_attempt(svc, who, attempt_id)) if attempt_id else (Link(), None)
    start = when(started_at, "started_at") or attempt_at
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
    async with mapped():
        result = await vault.ingest(
            req, _idle_limited(request, idle.upload_idle_timeout_s if idle else 60.0), actor_of(who)
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


# -- linking ----------------------------------------------------------------------------


class LinkBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attempt_id: Text = Field(min_length=1, max_length=200)


@router.post("/recordings/{recording_id}/link", summary="Attach an unmatched recording to its attempt (admin).")
async def link_recording(recording_id: str, body: LinkBody, who: Caller, svc: Svc) -> dict[str, Any]:
    require_role(who, ADMIN_ROLES, "link recordings")
    link, _ = await link_for_attempt(svc, who, body.attempt_id)
    if link.creditor is None:
        raise NoSuchAttempt(f"no attempt {body.attempt_id}")
    async with mapped():
        r = await vault_of(svc).link(recording_id, actor_of(who), link)
    return recording_json(r)

