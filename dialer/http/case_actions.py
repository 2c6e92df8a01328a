"""Creditor actions on a case, lifting a stop, reopening, and the case history."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from dialer.case_actions import MAX_REASON, CaseAction, CaseActions
from dialer.http.deps import Caller, Svc
from dialer.http.inputs import INT64_MAX, Day, Text

if TYPE_CHECKING:
    from dialer.model import Principal
    from dialer.services import Services

router = APIRouter(prefix="/v1", tags=["cases"])


class ReasonBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Text = Field(min_length=1, max_length=MAX_REASON, description="why; goes on the case history")
    creditor: Text | None = Field(default=None, description="needed only when the case id exists for two creditors")


class ExtendBody(ReasonBody):
    # Bounded as the import bounds it: a year-9999 end was stored though no file could set it.
    commission_end: Day = Field(description="the new end of the commission (延长委托), after the current one")


async def _run(svc: Services, who: Principal, case_id: str, action: str, body: ReasonBody, **kw: Any) -> dict[str, Any]:
    return await CaseActions(svc.gate).run(
        CaseAction(actor=who, case_id=case_id, action=action, reason=body.reason, creditor=body.creditor, **kw)
    )


@router.post("/cases/{case_id}/pause", summary="Pause collection (暂停催收) on the creditor's instruction.")
async def pause(case_id: str, body: ReasonBody, who: Caller, svc: Svc) -> dict[str, Any]:
    return await _run(svc, who, case_id, "pause", body)


@router.post("/cases/{case_id}/resume", summary="Resume a paused case (恢复催收): follow-up 待跟进 from today.")
async def resume(case_id: str, body: ReasonBody, who: Caller, svc: Svc) -> dict[str, Any]:
    return await _run(svc, who, case_id, "resume", body)


@router.post("/cases/{case_id}/withdraw", summary="Withdraw the case (撤案) on the creditor's instruction.")
async def withdraw(case_id: str, body: ReasonBody, who: Caller, svc: Svc) -> dict[str, Any]:
    return await _run(svc, who, case_id, "withdraw", body)


@router.post("/cases/{case_id}/commission", summary="Extend the commission period (延长委托期).")
async def extend(case_id: str, body: ExtendBody, who: Caller, svc: Svc) -> dict[str, Any]:
    return await _run(svc, who, case_id, "extend", body, commission_end=body.commission_end)


@router.post("/cases/{case_id}/reopen", summary="Reopen a case closed by a repayment, a pause or a withdrawal.")
async def reopen(case_id: str, body: ReasonBody, who: Caller, svc: Svc) -> dict[str, Any]:
    return await _run(svc, who, case_id, "reopen", body)


@router.post("/cases/{case_id}/flags/{flag}/lift",
             summary="Lift a stop an outcome or a person set (supervisor or compliance, with a reason).")
async def lift_flag(case_id: str, flag: str, body: ReasonBody, who: Caller, svc: Svc) -> dict[str, Any]:
    return await _run(svc, who, case_id, "lift", body, flag=flag)


@router.get("/cases/{case_id}/history", summary="Every change to the case, oldest first (hash-chained).")
async def history(
    case_id: str, who: Caller, svc: Svc, creditor: str | None = None,
    # A seq the store can bind: a larger one overflowed the driver as a 500.
    after: int = Query(0, ge=0, le=INT64_MAX), limit: int = Query(500, ge=1, le=1000),
) -> dict[str, Any]:
    return await CaseActions(svc.gate).history(who, case_id, creditor, after, limit)
