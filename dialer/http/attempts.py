"""`GET /v1/attempts/{id}`: an attempt's call progress; `GET /v1/pbx`: the PBX link.

The attempt shows the gate's record (state, channel, decision) and, for click-to-dial
through the service's own user agent (`[pbx] mode = "sip_ua"`), every call state with
its timestamp, the end cause (and the rule id when the second decision blocked) and the
recording id. Another creditor's attempt is a 404, like a missing one. Numbers are masked for roles that may not see them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

from dialer.errors import NoSuchAttempt
from dialer.http.deps import Caller, Svc
from dialer.masking import mask_number
from dialer.model import FULL_NUMBER_ROLES

if TYPE_CHECKING:
    from dialer.model import AttemptRecord, Principal
    from dialer.services import Services

router = APIRouter(prefix="/v1", tags=["attempts"])


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


async def _collector_may_open(svc: Services, who: Principal, attempt: AttemptRecord) -> bool:
    """A collector reads the attempts they placed and those of the cases assigned to
    them, as they open only those cases; other roles as their creditors allow."""
    if who.role != "collector" or attempt.agent_id == who.name:
        return True
    async with svc.store.read() as uow:
        case = await uow.cases.get(attempt.creditor, attempt.case_id)
    return case is not None and case.assigned_agent == who.name


@router.get("/attempts/{attempt_id}", summary="An attempt and its call progress (click-to-dial).")
async def get_attempt(attempt_id: str, who: Caller, svc: Svc) -> dict[str, Any]:
    async with svc.store.read() as uow:  # one snapshot: the attempt and its progress agree
        attempt = await uow.attempts.get(attempt_id)
        rows = await uow.attempts.progress(attempt_id) if attempt is not None else []
    if attempt is None or not who.can_see(attempt.creditor) or not await _collector_may_open(svc, who, attempt):
        raise NoSuchAttempt(f"no attempt {attempt_id!r}", details={"attempt_id": attempt_id})
    last = rows[-1] if rows else None
    ended = next((r for r in rows if r["state"] == "ended"), None)
    stops: list[str] = []
    connected_row = next((r for r in rows if r["state"] == "connected"), None)
    if connected_row is not None:
        # a stop recorded on the case while connected does not cut the call; it is shown
        if ended is not None:
            now_flags = set(filter(None, (ended["case_flags"] or "").split(",")))
        else:
            async with svc.store.read() as uow:
                case = await uow.cases.get(attempt.creditor, attempt.case_id)
            now_flags = set(case.flags) if case is not None else set()
        stops = sorted(now_flags - set(filter(None, (connected_row["case_flags"] or "").split(","))))
    return {
        "attempt_id": attempt.attempt_id,
        "creditor": attempt.creditor,
        "case_id": attempt.case_id,
        "agent_id": attempt.agent_id,
        "number": attempt.number if who.role in FULL_NUMBER_ROLES else mask_number(attempt.number),
        "channel": attempt.channel,
        "state": attempt.state,
        "connected": attempt.connected,
        "decision_id": attempt.decision_id,
        "at": _iso(attempt.at),
        "valid_until": _iso(attempt.valid_until),
        "call": None if last is None else {
            "state": last["state"],
            "timestamps": {r["state"]: _iso(r["at"]) for r in rows},
            "cause": ended["cause"] if ended else None,
            "rule_id": ended["rule_id"] if ended else None,
            "detail": ended["detail"] if ended else None,
            "recording_id": ended["recording_id"] if ended else None,
            "stops_during_call": stops,
        },
    }


@router.get("/pbx", summary="The PBX link of click-to-dial (mode, registration, call slots).")
async def pbx_status(who: Caller, svc: Svc) -> dict[str, Any]:
    pbx = svc.pbx
    if pbx is None:
        return {"mode": "none"}
    return pbx.health()
