"""Import jobs over HTTP: `POST /v1/imports?kind=cases|repayments`, `GET /v1/imports/{id}`.

Limits are checked before the body is read: a declared `Content-Length` over
`[imports] max_bytes` is answered 413 at once, and a body that turns out larger stops
being read at the limit. The body's encoding is `charset=` in `Content-Type`, or
`?encoding=`, or detected (UTF-8 with or without BOM, else GB18030/GBK).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from dialer.errors import BadRequest, PayloadTooLarge
from dialer.http.deps import Caller, Svc
from dialer.import_jobs import ImportJobs, ImportLimits, load_import_limits
from dialer.import_validation import Upload
from dialer.model import Principal
from dialer.services import Services

router = APIRouter(prefix="/v1", tags=["imports"])

JOIN_ON_LOOP_BYTES = 1024 * 1024  # larger bodies are joined on a thread


def import_jobs(svc: Services) -> ImportJobs:
    """The service's import jobs (its extension), or ones applying in this process for
    wirings without that extension."""
    jobs = svc.imports
    if jobs is None:
        jobs = ImportJobs(svc.store, svc.clock, svc.region_of, load_import_limits(svc.config.section("imports")))
    return jobs


async def read_upload(request: Request, kind: str, limits: ImportLimits, encoding: str | None) -> Upload:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
        if size > limits.max_bytes:
            raise PayloadTooLarge(
                f"the body is {size} bytes; at most {limits.max_bytes} per import ([imports] max_bytes)",
                details={"bytes": size, "max_bytes": limits.max_bytes},
            )
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limits.max_bytes:
            raise PayloadTooLarge(
                f"the body is over {limits.max_bytes} bytes, the most per import ([imports] max_bytes)",
                details={"max_bytes": limits.max_bytes},
            )
        chunks.append(chunk)
    ctype_header = request.headers.get("content-type", "")
    ctype, _, params = ctype_header.partition(";")
    charset = None
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "charset" and value:
            charset = value.strip().strip('"')
    file_name = request.headers.get("x-file-name")
    # Joining a commissioned file's megabytes takes the loop for tens of milliseconds:
    # on a thread, so dials go on being decided while an import arrives.
    body = b"".join(chunks) if total <= JOIN_ON_LOOP_BYTES else await asyncio.to_thread(b"".join, chunks)
    return Upload(
        kind=kind, body=body, content_type=ctype.strip().lower(), encoding=encoding or charset,
        file_name=file_name[:200] if file_name else None,
    )


async def submit(svc: Services, who: Principal, request: Request, kind: str, encoding: str | None,
                 *, wait: bool) -> tuple[dict[str, Any], bool]:
    jobs = import_jobs(svc)
    upload = await read_upload(request, kind, jobs.limits, encoding)
    job, finished = await jobs.submit(who, upload, wait=wait)
    return job.to_dict(), finished


@router.post(
    "/imports",
    summary="Import a file of cases or repayments: validated whole, then applied in batches. "
    "Small files answer 200 when applied; larger ones 202 with the import id.",
    responses={202: {"description": "accepted; follow GET /v1/imports/{import_id}"}},
)
async def post_import(
    request: Request,
    who: Caller,
    svc: Svc,
    kind: str = Query(pattern="^(cases|repayments)$"),
    encoding: str | None = Query(default=None, max_length=20, description="utf-8 or gb18030 (gbk); default: detected"),
) -> Any:
    doc, finished = await submit(svc, who, request, kind, encoding, wait=False)
    if finished:
        return doc
    return JSONResponse(doc, status_code=202, headers={"Location": f"/v1/imports/{doc['import_id']}"})


@router.get("/imports/{import_id}", summary="An import's state, rows total and done, errors.")
async def get_import(import_id: str, who: Caller, svc: Svc) -> dict[str, Any]:
    job = await import_jobs(svc).get(who, import_id)
    return job.to_dict()
