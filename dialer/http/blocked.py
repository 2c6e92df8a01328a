"""Compliance review of blocked dials: list (JSON or CSV), summary."""

from __future__ import annotations

import csv
import io
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from dialer.csv_cells import safe_cell
from dialer.http.deps import Caller, Svc
from dialer.http.inputs import parse_cursor, parse_when

router = APIRouter(prefix="/v1", tags=["compliance"])

CSV_COLUMNS = ("decision_id", "at", "creditor", "case_id", "agent_id", "user", "channel", "number",
               "rule_id", "reason", "reason_zh", "next_allowed_at", "policy_version")


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
    since, until = parse_when(from_, "from"), parse_when(to, "to")
    items, nxt = await svc.gate.blocked_dials(
        who, since=since, until=until, creditor=creditor, agent_id=agent,
        rule_id=rule_id, case_id=case_id, after=parse_cursor(cursor), limit=limit,
    )
    if format == "csv":
        buf = io.StringIO()
        # BOM first: spreadsheet programs on Chinese Windows then read the file as UTF-8, not GBK.
        buf.write("\ufeff")
        w = csv.writer(buf, lineterminator="\r\n")
        w.writerow(CSV_COLUMNS)
        for r in items:
            d = r.to_api()
            w.writerow([safe_cell(d[c]) for c in CSV_COLUMNS])  # reasons and ids may start with "="
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
    return await svc.gate.blocked_summary(who, since=parse_when(from_, "from"), until=parse_when(to, "to"), creditor=creditor)
