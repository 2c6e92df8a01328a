"""An import file checked whole before anything of it is applied, then staged.

    validate            decode (UTF-8 / GB18030), parse and check every row: CPU only,
                        run in a worker thread; raises the file's errors
    validate_and_stage  validate, check that repayments name known cases, stage the rows
                        in short transactions and mark the job "applying"; or mark it
                        refused with every error

`dialer.import_jobs` runs these for a job; `dialer.import_apply` applies what was staged.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import orjson
import structlog

from dialer.errors import ApiError, BadRequest, InvalidImport
from dialer.import_apply import spelling_errors
from dialer.imports import (
    case_to_json,
    decode_upload,
    loads_json,
    parse_cases_csv,
    parse_cases_payload,
    parse_repayments_csv,
    parse_repayments_payload,
    repayment_from_json,
    repayment_to_json,
)
from dialer.model import Principal
from dialer.ports import CaseStore, Clock

log = structlog.get_logger("dialgate.imports")

_STAGE_CHUNK = 2_000  # staged rows per write transaction: one executemany, short enough not to hold dials back


@dataclass(frozen=True, slots=True)
class Upload:
    """An import request's body and what its headers said."""

    kind: str
    body: bytes
    content_type: str  # "text/csv" or "application/json" ("" = JSON)
    encoding: str | None = None  # declared (charset= or ?encoding=); None: detected
    file_name: str | None = None


def validate(upload: Upload, actor: Principal, region_of: Callable[[str], str], max_rows: int) -> tuple[list[str], str]:
    """(staged rows as JSON texts, encoding) of a valid file; raises the file's errors.
    CPU only (no store, no clock): the service runs it in a worker thread."""
    text, encoding = decode_upload(upload.body, upload.encoding)
    csv_body = upload.content_type in ("text/csv", "application/csv")
    if not csv_body and upload.content_type not in ("application/json", ""):
        raise BadRequest(f"unsupported Content-Type {upload.content_type!r}: use application/json or text/csv")
    doc: Any = text
    if not csv_body:
        doc = loads_json(text)
    if upload.kind == "cases":
        cases = parse_cases_csv(doc, region_of, max_rows) if csv_body else parse_cases_payload(doc, region_of, max_rows)
        outside = [
            {"row": i + 1, "field": "creditor", "error": f"creditor {c.creditor!r} is outside your scope"}
            for i, c in enumerate(cases)
            if not actor.can_see(c.creditor)
        ]
        if outside:
            raise InvalidImport(outside)
        return [case_to_json(c) for c in cases], encoding
    rows = parse_repayments_csv(doc, max_rows) if csv_body else parse_repayments_payload(doc, max_rows)
    return [repayment_to_json(r) for r in rows], encoding


async def _check_repayment_cases(store: CaseStore, actor: Principal, staged: Sequence[str]) -> None:
    """Unknown cases (or another creditor's) refuse the whole file, before anything is applied."""
    errors = []
    for start in range(0, len(staged), 500):
        async with store.read() as uow:
            for i, text in enumerate(staged[start:start + 500], start=start + 1):
                r = repayment_from_json(text)
                visible = actor.can_see(r["creditor"])
                if not visible or await uow.cases.get(r["creditor"], r["case_id"]) is None:
                    errors.append({"row": i, "field": "case_id",
                                   "error": f"no case {r['case_id']!r} for creditor {r['creditor']!r}"})
    if errors:
        raise InvalidImport(errors)


async def _check_case_spellings(store: CaseStore, staged: Sequence[str]) -> None:
    """A row naming a stored case in another letter case refuses the whole file, before
    anything is applied (`import_apply.spelling_errors`)."""
    rows = []
    for i, text in enumerate(staged, start=1):
        doc = orjson.loads(text)
        rows.append((i, doc["creditor"], doc["case_id"]))
    async with store.read() as uow:
        errors = await spelling_errors(uow, rows)
    if errors:
        raise InvalidImport(errors)


def _problem_errors(exc: ApiError) -> list[dict[str, Any]]:
    """A refusal as the job's error list; a whole-file problem is row 0 with its status."""
    if isinstance(exc, InvalidImport):
        return list(exc.errors)
    return [{"row": 0, "field": "", "error": exc.detail, "status": exc.status,
             **({"details": exc.details} if exc.details else {})}]


async def validate_and_stage(
    store: CaseStore, clock: Clock, import_id: str, upload: Upload, actor: Principal,
    region_of: Callable[[str], str], max_rows: int, *, in_thread: bool = True,
) -> ApiError | None:
    """Validate the file (in a worker thread when `in_thread`) and stage its rows, then
    mark the job applying; or mark it refused and return the error. Staging is in chunks
    of short transactions; until the job says "applying" none of its rows is applied."""
    try:
        if in_thread:
            staged, encoding = await asyncio.to_thread(validate, upload, actor, region_of, max_rows)
        else:
            staged, encoding = validate(upload, actor, region_of, max_rows)
        if upload.kind == "repayments":
            await _check_repayment_cases(store, actor, staged)
        else:
            await _check_case_spellings(store, staged)
    except ApiError as exc:
        async with store.write() as uow:
            await uow.imports.finish(import_id, "refused", clock.now(), errors=_problem_errors(exc))
        log.info("import.refused", import_id=import_id, kind=upload.kind, error=exc.detail)
        return exc
    for start in range(0, len(staged), _STAGE_CHUNK):
        async with store.write() as uow:
            await uow.imports.stage(import_id, start + 1, staged[start:start + _STAGE_CHUNK])
    async with store.write() as uow:
        await uow.imports.finish(import_id, "applying", clock.now(), rows_total=len(staged), encoding=encoding)
    log.info("import.validated", import_id=import_id, kind=upload.kind, rows=len(staged), encoding=encoding)
    return None
