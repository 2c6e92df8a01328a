"""Click-to-dial, dial checks and call outcomes."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from dialer.errors import DialBlocked
from dialer.http.deps import Caller, Svc
from dialer.usecases import CheckDial, LogOutcome, PromiseInput, RequestDial, outcome_json

router = APIRouter(prefix="/v1", tags=["dials"])


class DialBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    case_id: str = Field(min_length=1, max_length=100)
    number: str = Field(min_length=1, max_length=40)
    agent_id: str = Field(min_length=1, max_length=100)
    creditor: str | None = Field(default=None, description="needed only when the case id exists for two creditors")


class CheckBody(DialBody):
    at: AwareDatetime | None = Field(default=None, description="what-if time (compliance and admin only)")


class PromiseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: Decimal = Field(ge=0)
    date: date


class OutcomeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    disposition: str
    result: str = "none"
    note: str = Field(min_length=1, max_length=4000)
    callback_at: AwareDatetime | None = None
    promise: PromiseBody | None = None


@router.post("/dial-checks", summary="Would this dial be allowed? Nothing is reserved.")
async def dial_check(body: CheckBody, who: Caller, svc: Svc) -> dict[str, Any]:
    result = await svc.gate.check_dial(
        CheckDial(actor=who, case_id=body.case_id, number=body.number, agent_id=body.agent_id,
                  at=body.at, creditor=body.creditor)
    )
    return {"decision_id": result.decision_id, "allowed": result.allowed, "decision": result.decision_json()}


@router.post("/dials", status_code=201, summary="Click-to-dial: decide and reserve at the server clock.")
async def dial(body: DialBody, who: Caller, request: Request) -> Any:
    svc = request.app.state.services  # not the `Svc` dependency: one resolution less on the hottest path
    result = await svc.gate.request_dial(
        RequestDial(actor=who, case_id=body.case_id, number=body.number, agent_id=body.agent_id,
                    channel="api", creditor=body.creditor)
    )
    if not result.allowed:
        raise DialBlocked(result.decision_json(), result.decision_id)
    assert result.attempt is not None
    # Plain JSON values already: answered as is (FastAPI's generic encoding of the
    # returned dict cost more CPU than the decision itself on this hot path).
    return JSONResponse({
        "attempt_id": result.attempt.attempt_id,
        "state": result.attempt.state,
        "state_url": f"/v1/attempts/{result.attempt.attempt_id}",
        "valid_until": result.attempt.valid_until.isoformat(),
        "decision_id": result.decision_id,
        "decision": result.decision_json(),
    }, status_code=201)


@router.post("/attempts/{attempt_id}/outcome", status_code=201, summary="Log a call's outcome (催记); idempotent.")
async def log_outcome(attempt_id: str, body: OutcomeBody, who: Caller, svc: Svc, response: Response) -> dict[str, Any]:
    promise = PromiseInput(amount=str(body.promise.amount), date=body.promise.date) if body.promise else None
    outcome, created, case = await svc.gate.log_outcome(
        LogOutcome(actor=who, attempt_id=attempt_id, disposition=body.disposition, result=body.result,
                   note=body.note, callback_at=body.callback_at, promise=promise)
    )
    if not created:
        response.status_code = 200
    return {
        "outcome": outcome_json(outcome),
        "created": created,
        "case": {
            "case_id": case.case_id,
            "creditor": case.creditor,
            "flags": sorted(case.flags),
            "next_action": {"status": case.follow_up_status,
                            "date": case.next_action_date.isoformat() if case.next_action_date else None},
        },
    }
