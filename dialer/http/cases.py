"""Cases: imports (JSON or CSV), contacts, reading a case, inbound caller lookup."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from dialer.errors import ApiError, BadRequest, InvalidImport
from dialer.http.deps import Caller, Svc
from dialer.http.inputs import Text
from dialer.http.imports import submit
from dialer.imports import parse_contact
from dialer.usecases import DATA_ROLES, require_role
from policy import NumberFormatError

if TYPE_CHECKING:
    from dialer.model import Principal
    from dialer.services import Services

router = APIRouter(prefix="/v1", tags=["cases"])


async def _legacy(svc: Services, who: Principal, request: Request, kind: str) -> dict[str, Any]:
    """The job run to its end; a refusal reads exactly as before jobs existed (no job id)."""
    try:
        job, _ = await submit(svc, who, request, kind, None, wait=True)
    except ApiError as exc:
        exc.details.pop("import_id", None)
        raise
    return job


@router.post("/cases:import", summary="Upsert cases by (creditor, case_id); refused whole on any error. "
             "Answers once every row is applied (see also POST /v1/imports).")
async def import_cases(request: Request, response: Response, who: Caller, svc: Svc) -> dict[str, Any]:
    require_role(who, DATA_ROLES, "import cases")
    job = await _legacy(svc, who, request, "cases")
    response.headers["X-Import-Id"] = job["import_id"]  # the body keeps its shape for existing clients
    s = job["summary"]
    return {"created": s.get("created", 0), "updated": s.get("updated", 0), "total": job["rows_total"]}


@router.post("/repayments:import", summary="Record repayments; settled cases close automatically.")
async def import_repayments(request: Request, response: Response, who: Caller, svc: Svc) -> dict[str, Any]:
    require_role(who, DATA_ROLES, "import repayments")
    job = await _legacy(svc, who, request, "repayments")
    response.headers["X-Import-Id"] = job["import_id"]
    s = job["summary"]
    return {"recorded": s.get("recorded", 0), "closed": s.get("closed", 0)}


class ContactBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    number: Text = Field(min_length=1, max_length=40)
    relation: Text
    name: Text | None = None
    tz: Text | None = None
    source: Text = Field(min_length=1, max_length=40, description="where the number came from, e.g. info_repair")
    creditor: Text | None = None


@router.post("/cases/{case_id}/contacts", status_code=201, summary="Add a verified new number (信息修复).")
async def add_contact(case_id: str, body: ContactBody, who: Caller, svc: Svc) -> dict[str, Any]:
    require_role(who, DATA_ROLES, "add contacts")
    errors: list[dict[str, Any]] = []
    raw = body.model_dump(exclude={"creditor"}, exclude_none=True)
    region = svc.region_of(body.creditor) if body.creditor else svc.policies.default.default_region
    contact = parse_contact(raw, region, "", errors, 1, default_source=body.source)
    if contact is None or errors:  # a contact comes back with some fields refused (tz)
        raise InvalidImport(errors)
    # Without the creditor the number was read in the default region; the case's creditor may read it otherwise.
    written = None if body.creditor else (body.number, region)
    case = await svc.gate.add_contact(who, case_id, contact, creditor=body.creditor, written=written)
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
