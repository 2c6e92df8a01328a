"""Compliance review of blocked dials: list (JSON or CSV), summary."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, time, timezone
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from dialer.errors import BadRequest
from dialer.http.deps import Caller, Svc

router = APIRouter(prefix="/v1", tags=["compliance"])

CSV_COLUMNS = ("decision_id", "at", "creditor", "case_id", "agent_id", "user", "channel", "number",
               "rule_id", "reason", "reason_zh", "next_allowed_at", "policy_version")


def _when(value: str | None, field: str) -> datetime | None:
    if not value:
        return None
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(0), tzinfo=timezone.utc)
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadRequest(f"{field}: expected an ISO date or date-time", details={"field": field}) from exc
    if dt.tzinfo is None:
        raise BadRequest(f"{field}: give a time zone offset (e.g. +08:00)", details={"field": field})
    return dt


def _cursor(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise BadRequest("cursor: not a cursor this API returned", details={"field": "cursor"}) from exc


@router.get("/blocked-dials", summary="Blocked decisions, newest last, paginated; ?format=csv")
async def blocked_dials(
    who: Caller,
    svc: Svc,
    from_: str | None = Query(default=None, alias="from"),
    to: str | None = None,
    creditor: str | None = None,
    agent: str | None = None,
    rule_id: str | None = None,
    case_id: str | None = None,
    cursor: str | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
    format: str = Query(default="json", pattern="^(json|csv)$"),
) -> Any:
    since, until = _when(from_, "from"), _when(to, "to")
    items, nxt = await svc.gate.blocked_dials(
        who, since=since, until=until, creditor=creditor, agent_id=agent,
        rule_id=rule_id, case_id=case_id, after=_cursor(cursor), limit=limit,
    )
    if format == "csv":
        buf = io.StringIO()
        # BOM first: spreadsheet programs on Chinese Windows then read the file as UTF-8, not GBK.
        buf.write("\ufeff")
        w = csv.writer(buf, lineterminator="\r\n")
        w.writerow(CSV_COLUMNS)
        for r in items:
            d = r.to_api()
            w.writerow([d[c] if c != "number" else d["number"] for c in CSV_COLUMNS])
        # Built from the parsed dates only, so nothing the caller typed reaches the header.
        name = f"blocked-dials-{since.date() if since else 'all'}-{until.date() if until else 'all'}.csv"
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        if nxt is not None:
            headers["X-Next-Cursor"] = str(nxt)
        return Response(buf.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)
    return {"items": [r.to_api() for r in items], "next": str(nxt) if nxt is not None else None}


@router.get("/blocked-dials/summary", summary="Blocked dials counted by rule, agent and day")
async def blocked_summary(
    who: Caller,
    svc: Svc,
    from_: str | None = Query(default=None, alias="from"),
    to: str | None = None,
    creditor: str | None = None,
) -> dict[str, Any]:
    return await svc.gate.blocked_summary(who, since=_when(from_, "from"), until=_when(to, "to"), creditor=creditor)
