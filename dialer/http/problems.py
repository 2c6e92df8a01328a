"""RFC 9457 problem+json for every error the API returns."""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from dialer.errors import PROBLEM_BASE, ApiError, StoreRefusedValue, StoreUnavailable

PROBLEM_JSON = "application/problem+json"
log = structlog.get_logger("dialgate.http")


def instance_of(request: Request) -> str:
    """The problem's `instance`: the request path as `request.url.path` gives it, without
    building the whole URL (this runs for every blocked dial)."""
    return instance_of_scope(request.scope)


class FastJSONResponse(JSONResponse):
    """JSON encoded with orjson: UTF-8, compact, same values as `JSONResponse`. A dial's
    answer carries the whole decision with its checks in two languages, which the json
    module encodes an order of magnitude slower than orjson."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def instance_of_scope(scope: Any) -> str:
    path: str = scope["path"]
    return path.replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")


def store_unavailable_body(scope: Any) -> dict[str, Any]:
    return {
        "type": PROBLEM_BASE + "store-unavailable",
        "title": "Case store unavailable",
        "status": 503,
        "detail": "the case store is unavailable; nothing was changed",
        "instance": instance_of_scope(scope),
    }


def problem_response(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return FastJSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        headers.update(exc.headers)
        return problem_response(exc.to_problem(instance_of(request)), exc.status, headers)

    @app.exception_handler(StoreUnavailable)
    async def _store(request: Request, exc: StoreUnavailable) -> JSONResponse:
        log.error("store.unavailable", error=str(exc), path=instance_of(request))
        return problem_response(store_unavailable_body(request.scope), 503, {"Retry-After": "5"})

    @app.exception_handler(StoreRefusedValue)
    async def _refused(request: Request, exc: StoreRefusedValue) -> JSONResponse:
        log.warning("store.refused_value", error=str(exc), path=instance_of(request))
        body = {
            "type": PROBLEM_BASE + "bad-request",
            "title": "Bad request",
            "status": 400,
            "detail": "a value in the request is out of range; nothing was changed",
            "instance": instance_of(request),
        }
        return problem_response(body, 400)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        bad_json = False
        for e in exc.errors():
            if e.get("type") in ("json_invalid", "model_attributes_type") or (
                e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",)
            ):
                bad_json = True
            loc = [str(p) for p in e.get("loc", ()) if p != "body"]
            errors.append({"field": ".".join(loc), "error": e.get("msg", "invalid")})
        if bad_json:
            body = {
                "type": PROBLEM_BASE + "bad-request",
                "title": "Bad request",
                "status": 400,
                "detail": "the body is not a JSON object of the expected shape",
                "instance": instance_of(request),
                "details": {"errors": errors},
            }
            return problem_response(body, 400)
        body = {
            "type": PROBLEM_BASE + "validation-failed",
            "title": "Validation failed",
            "status": 422,
            "detail": "; ".join(f"{e['field']}: {e['error']}" for e in errors),
            "instance": instance_of(request),
            "details": {"errors": errors},
        }
        return problem_response(body, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = {400: "bad-request", 404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + slug,
            "title": str(exc.detail),
            "status": exc.status_code,
            "detail": str(exc.detail),
            "instance": instance_of(request),
        }
        if exc.status_code == 400:  # FastAPI's only 400: a body it could not parse (e.g. nested too deep)
            body["details"] = {"field": "body"}
        return problem_response(body, exc.status_code)
