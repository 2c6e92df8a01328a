"""Keeping and destroying recordings: legal holds on a recording or a whole case,
purges under dual control, and the destruction register.

    POST   /v1/recordings/{id}/legal-hold  {reason}     compliance, supervisor, admin
    DELETE /v1/recordings/{id}/legal-hold?reason=
    POST   /v1/cases/{case_id}/legal-hold  {reason, creditor?}
    DELETE /v1/cases/{case_id}/legal-hold?reason=[&creditor=]
    (each placed or released hold is an audit-log entry: who, when, why)
    POST   /v1/purges  {dry_run?, creditor?}            admin requests (or dry-runs)
    GET    /v1/purges                                   pending requests
    GET    /v1/purges/{id}
    POST   /v1/purges/{id}/approve                      supervisor / compliance, not the requester
    GET    /v1/destruction-register                     with the chain check
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import structlog
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from dialer.audit import register_problems
from dialer.http.deps import Caller, Svc
from dialer.http.inputs import Text
from dialer.http.vault_access import actor_of, case_creditor, jsonable, mapped, recording_json, vault_of
from dialer.masking import mask_text, redact_on_input
from dialer.usecases import require_role
from recordings.model import HOLD_ROLES

router = APIRouter(prefix="/v1", tags=["recordings"])
log = structlog.get_logger("dialgate.recordings")


# -- holds ------------------------------------------------------------------------------


class HoldBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Text = Field(max_length=500, description="complaint or lawsuit reference (投诉/诉讼)")
    creditor: Text | None = Field(None, max_length=64)


ReleaseReason = Query(None, max_length=500, description="why the hold may go now (结案、撤诉); required")


async def _on_record(svc: Any, who: Any, action: str, creditor: str | None, case_id: str | None,
                     **details: Any) -> None:
    """A hold placed or released, in the audit log: evidence kept or let go is someone's
    decision, and the regulator asks whose and why."""
    async with svc.store.write() as uow:
        await uow.audit.add(at=svc.clock.now(), actor=who.name, action=action, creditor=creditor, case_id=case_id,
                            details=details)


@router.post("/recordings/{recording_id}/legal-hold", summary="Hold one recording: never purged while held.")
async def hold_recording(recording_id: str, body: HoldBody, who: Caller, svc: Svc) -> dict[str, Any]:
    require_role(who, HOLD_ROLES, "place legal holds")
    reason = redact_on_input(body.reason) or ""
    async with mapped():
        r = await vault_of(svc).place_hold(recording_id, actor_of(who), reason)
    await _on_record(svc, who, "recording.hold_placed", r.creditor, r.case_id, recording_id=recording_id,
                     reason=reason.strip())
    log.info("recording.held", recording_id=recording_id)
    return recording_json(r)


@router.delete("/recordings/{recording_id}/legal-hold", summary="Release a recording's hold (with the reason).")
async def release_recording(recording_id: str, who: Caller, svc: Svc, reason: str | None = ReleaseReason) -> dict[str, Any]:
    require_role(who, HOLD_ROLES, "release legal holds")
    why = redact_on_input(reason) or ""
    async with mapped():
        r = await vault_of(svc).release_hold(recording_id, actor_of(who), why)
    await _on_record(svc, who, "recording.hold_released", r.creditor, r.case_id, recording_id=recording_id,
                     reason=why.strip())
    log.info("recording.hold_released", recording_id=recording_id)
    return recording_json(r)


@router.post("/cases/{case_id}/legal-hold", summary="Hold every recording of a case, present and future.")
async def hold_case(case_id: str, body: HoldBody, who: Caller, svc: Svc) -> dict[str, Any]:
    require_role(who, HOLD_ROLES, "place legal holds")
    cred = await case_creditor(svc, who, case_id, body.creditor)
    reason = redact_on_input(body.reason) or ""
    async with mapped():
        hold = await vault_of(svc).place_case_hold(cred, case_id, actor_of(who), reason)
    await _on_record(svc, who, "case.recordings_hold_placed", cred, case_id, reason=reason.strip())
    log.info("case.recordings_held", creditor=cred, case_id=case_id)
    return {"creditor": cred, "case_id": case_id,
            "legal_hold": {"reason": mask_text(hold.reason), "by": hold.by, "at": hold.at.isoformat()}}


@router.delete("/cases/{case_id}/legal-hold", summary="Release a case's hold (with the reason).")
async def release_case(case_id: str, who: Caller, svc: Svc, creditor: str | None = Query(None, max_length=64),
                       reason: str | None = ReleaseReason) -> dict[str, Any]:
    require_role(who, HOLD_ROLES, "release legal holds")
    cred = await case_creditor(svc, who, case_id, creditor)
    why = redact_on_input(reason) or ""
    async with mapped():
        released = await vault_of(svc).release_case_hold(cred, case_id, actor_of(who), why)
    if released:
        await _on_record(svc, who, "case.recordings_hold_released", cred, case_id, reason=why.strip())
    return {"creditor": cred, "case_id": case_id, "released": released}


# -- purge and register ------------------------------------------------------------------


class PurgeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dry_run: bool = False
    creditor: Text | None = Field(None, max_length=64)


def _purge_json(p: Any) -> dict[str, Any]:
    doc: dict[str, Any] = jsonable(asdict(p))
    return doc


@router.post("/purges", status_code=201, summary="Request destruction of what is due (admin); dry_run only lists it.")
async def request_purge(body: PurgeBody, who: Caller, svc: Svc) -> Any:
    async with mapped():
        plan = await vault_of(svc).request_purge(actor_of(who), creditor=body.creditor, dry_run=body.dry_run)
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
    async with mapped():
        purges = await vault_of(svc).pending_purges(actor_of(who))
    return {"purges": [_purge_json(p) for p in purges]}


@router.get("/purges/{purge_id}", summary="A purge request and its outcome.")
async def get_purge(purge_id: str, who: Caller, svc: Svc) -> dict[str, Any]:
    async with mapped():
        return _purge_json(await vault_of(svc).get_purge(purge_id, actor_of(who)))


@router.post("/purges/{purge_id}/approve", summary="Approve (a different person: supervisor or compliance); destroys.")
async def approve_purge(purge_id: str, who: Caller, svc: Svc) -> dict[str, Any]:
    async with mapped():
        done = await vault_of(svc).approve_purge(purge_id, actor_of(who))
    log.info("purge.approved", purge_id=purge_id, destroyed=len(done.destroyed), skipped=len(done.skipped))
    return _purge_json(done)


@router.get("/destruction-register", summary="The hash-chained destruction register (销毁登记表).")
async def destruction_register(who: Caller, svc: Svc) -> dict[str, Any]:
    vault = vault_of(svc)
    async with mapped():
        entries = await vault.destruction_register(actor_of(who))
        problems = await register_problems(vault.repo, svc.store.evidence)
    return {
        # The whole register (keyed chain, head, one entry per destroyed recording),
        # whatever part of it this caller may read.
        "chain_ok": problems == [],
        "entries": [jsonable(asdict(e)) for e in entries],
    }

