"""The worklist: cases due today or overdue, and new cases with their first-call deadline."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Query

from dialer.http.deps import Caller, Svc
from dialer.worklist import MAX_ITEMS, Worklist

router = APIRouter(prefix="/v1", tags=["cases"])


@router.get("/worklist", summary="Cases to call: overdue first calls, then overdue, then due today (most urgent first).")
async def worklist(
    who: Caller, svc: Svc,
    agent: str | None = Query(None, max_length=100, description="one agent's cases (supervisors); collectors: own"),
    creditor: str | None = Query(None, max_length=64),
    due: date | None = Query(None, description="list what is due by this day (default: today, creditor's zone)"),
    limit: int = Query(200, ge=1, le=MAX_ITEMS),
) -> dict[str, Any]:
    return await Worklist(svc.gate).items(who, agent=agent, creditor=creditor, due=due, limit=limit)
