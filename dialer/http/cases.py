"""Cases: imports (JSON or CSV), contacts, reading a case, inbound caller lookup."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from dialer.errors import BadRequest, BodyTooLarge, InvalidImport
from dialer.http.deps import Caller, Svc
from dialer.http.inputs import loads_json
from dialer.http.limits import IMPORT_BODY_LIMIT
from dialer.imports import (
    parse_cases_csv,
    parse_cases_payload,
    parse_contact,
    parse_repayments_csv,
    parse_repayments_payload,
)
from dialer.usecases import DATA_ROLES, require_role
from policy import NumberFormatError

router = APIRouter(prefix="/v1", tags=["cases"])


async def _read(request: Request) -> tuple[str, Any]:
    """('json', doc) or ('csv', text) by Content-Type; malformed bodies are a 400."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    if len(raw) > IMPORT_BODY_LIMIT:  # counted as it streamed in (dialer.http.limits); kept as a backstop
        raise BodyTooLarge(IMPORT_BODY_LIMIT, request.method, request.url.path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body is not UTF-8 (byte {exc.start})") from exc
    if ctype in ("text/csv", "application/csv"):
        return "csv", text
    if ctype not in ("application/json", ""):
        raise BadRequest(f"unsupported Content-Type {ctype!r}: use application/json or text/csv")
    return "json", loads_json(text)


@router.post("/cases:import", summary="Upsert cases by (creditor, case_id); refused whole on any error.")
async def import_cases(request: Request, who: Caller, svc: Svc) -> dict[str, Any]:
    require_role(who, DATA_ROLES, "import cases")
    kind, doc = await _read(request)
    region = svc.region_of
    cases = parse_cases_csv(doc, region) if kind == "csv" else parse_cases_payload(doc, region)
    return await svc.gate.import_cases(who, cases)


@router.post("/repayments:import", summary="Record repayments; settled cases close automatically.")
async def import_repayments(request: Request, who: Caller, svc: Svc) -> dict[str, Any]:
    require_role(who, DATA_ROLES, "import repayments")
    kind, doc = await _read(request)
    rows = parse_repayments_csv(doc) if kind == "csv" else parse_repayments_payload(doc)
    return await svc.gate.import_repayments(who, rows)


class ContactBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    number: str = Field(min_length=1, max_length=40)
    relation: str
    name: str | None = None
    tz: str | None = None
    source: str = Field(min_length=1, max_length=40, description="where the number came from, e.g. info_repair")
    creditor: str | None = None


@router.post("/cases/{case_id}/contacts", status_code=201, summary="Add a verified new number (信息修复).")
async def add_contact(case_id: str, body: ContactBody, who: Caller, svc: Svc) -> dict[str, Any]:
    require_role(who, DATA_ROLES, "add contacts")
    errors: list[dict[str, Any]] = []
    raw = body.model_dump(exclude={"creditor"}, exclude_none=True)
    region = svc.region_of(body.creditor) if body.creditor else svc.policies.default.default_region
    contact = parse_contact(raw, region, "", errors, 1, default_source=body.source)
    if contact is None or errors:  # a contact comes back with some fields refused (tz)
        raise InvalidImport(errors)
    case = await svc.gate.add_contact(who, case_id, contact, creditor=body.creditor)
    return {"case_id": case.case_id, "creditor": case.creditor, "contacts": len(case.contacts)}


@router.get("/cases/{case_id}", summary="A case with its (masked) contacts, attempts, decisions, outcomes.")
async def get_case(case_id: str, who: Caller, svc: Svc, creditor: str | None = None) -> dict[str, Any]:
    return await svc.gate.case_view(who, case_id, creditor)


@router.get("/lookup", summary="Inbound caller lookup (来电查询) by number, within your creditors.")
async def lookup(who: Caller, svc: Svc, number: str = Query(min_length=1, max_length=40)) -> dict[str, Any]:
    try:
        items = await svc.gate.lookup(who, number)
    except NumberFormatError as exc:
        raise BadRequest(f"number: {exc.reason}", details={"field": "number"}) from exc
    return {"items": items}
