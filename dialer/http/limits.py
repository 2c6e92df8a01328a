"""Limits before reading: what a request may send, checked before its body is read.

Every request that carries a body (a `Content-Length` above zero, a chunked
`Transfer-Encoding`, or any POST, PUT, PATCH or DELETE) crosses `guard_body` before any route sees it:

1. on the API (everything outside the console), the bearer token is checked, so a body
   from a caller without a valid token is never read or parsed (`401`);
2. its declared `Content-Length` is compared with its route's limit (`body_limit`), so an
   oversized body is answered `413` without reading a byte of it;
3. the body is counted while it streams in, so a chunked body, which declares no
   length, is cut at its limit too (`413`).

Early answers carry `Connection: close`: the server then stops reading the unread body
instead of receiving and discarding it. The console checks its own session cookie and
CSRF token (its forms are small and limited here). The recordings upload is
authenticated here too; its route compares the declared length with `[recordings]
max_size_mb` and the vault counts the stream as it writes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from dialer.errors import ApiError, BadRequest, BodyTooLarge, StoreUnavailable
from dialer.http.peers import client_of
from dialer.http.problems import instance_of_scope

if TYPE_CHECKING:
    from dialer.services import Services

JSON_BODY_LIMIT = 64 * 1024  # a dial, an outcome (note ≤ 4,000 characters) or a hold fits many times over
IMPORT_BODY_LIMIT = 20 * 1024 * 1024  # one import file of cases or repayments
FORM_BODY_LIMIT = 64 * 1024  # the console's forms
# Methods whose requests may carry a body even when no header says so (an ASGI server
# may hand one over without Content-Length): checked as if they did.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
IMPORT_PATHS = frozenset({"/v1/cases:import", "/v1/repayments:import", "/v1/imports"})
RECORDINGS_UPLOAD = "/v1/recordings"
log = structlog.get_logger("dialgate.http")
# The scope key where the caller authenticated here waits for `dialer.http.deps.principal`.
PRINCIPAL_KEY = "dialgate.principal"
TOO_LARGE_KEY = "dialgate.body_too_large"  # set once a streamed body passed its limit


def body_limit(method: str, path: str, services: Services | None) -> int:
    """The most bytes a request to `method path` may send."""
    if path in IMPORT_PATHS:
        # The import jobs' own limit ([imports] max_bytes) once they are running.
        jobs = services.imports if services is not None else None
        return jobs.limits.max_bytes if jobs is not None else IMPORT_BODY_LIMIT
    if path.startswith("/console"):
        return FORM_BODY_LIMIT
    return JSON_BODY_LIMIT


def declared_body(scope: Any) -> tuple[bool, int | None, str | None, str | None]:
    """(has a body, Content-Length, Authorization, a malformed length's text) from the headers."""
    length: int | None = None
    chunked = False
    auth = None
    bad = None
    for key, value in scope["headers"]:
        if key == b"content-length":
            text = value.decode("latin-1").strip()
            # A length of more than 18 digits cannot be honest and must not become a huge int.
            if not (text.isascii() and text.isdigit()) or len(text) > 18:  # latin-1 has "²", a digit int() refuses
                bad = text[:40]
            else:
                length = int(text)
        elif key == b"transfer-encoding":
            chunked = True
        elif key == b"authorization":
            auth = value.decode("latin-1")
    has_body = chunked or bad is not None or (length or 0) > 0 or scope["method"] in BODY_METHODS
    return has_body, length, auth, bad


def nul_in_address(scope: Any) -> ApiError | None:
    """A 400 naming the NUL character when the path or query carries one (``%00``), else
    None. No identifier holds one, and PostgreSQL refuses it in any text value: refused
    here, both engines answer alike and the store never sees it."""
    if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
        return BadRequest("地址含有 NUL 字符 (%00) / the address contains a NUL character (%00)",
                          details={"field": "path" if "\x00" in scope["path"] else "query"})
    return None


async def guard_body(scope: Any, receive: Any, send: Any) -> Any | None:
    """The `receive` the app should use for this request, or None when it was answered
    here (413, 400, 401, 429 or 503) without reading the body."""
    has_body, length, auth, bad = declared_body(scope)
    if not has_body:
        return receive
    method, path = scope["method"], scope["path"]
    app = scope.get("app")
    svc = getattr(getattr(app, "state", None), "services", None)
    limit = body_limit(method, path, svc)
    if bad is not None:
        await _answer(scope, receive, send, BadRequest(
            f"Content-Length 不是字节数 / Content-Length {bad!r} is not a byte count",
            details={"field": "Content-Length"},
        ))
        return None
    if svc is not None and not path.startswith("/console"):
        try:
            scope[PRINCIPAL_KEY] = await svc.auth.authenticate(auth, client=client_of(scope, svc))
        except (ApiError, StoreUnavailable) as exc:
            await _answer(scope, receive, send, exc)
            return None
    if path == RECORDINGS_UPLOAD and method == "POST":
        # The upload route compares Content-Length with [recordings] max_size_mb itself,
        # answering the vault's recording-too-large, and the vault counts as it writes.
        return receive
    if length is not None and length > limit:
        await _answer(scope, receive, send, BodyTooLarge(limit, method, path))
        return None
    return _counted(scope, receive, limit, method, path)


def _counted(scope: Any, receive: Any, limit: int, method: str, path: str) -> Any:
    seen = 0

    async def counted() -> Any:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                # Whoever reads the body may turn this into an answer of its own (FastAPI
                # makes any body error a 400); RequestContext answers 413 from the mark.
                exc = BodyTooLarge(limit, method, path)
                scope[TOO_LARGE_KEY] = exc
                raise exc
        return message

    return counted


async def _answer(scope: Any, receive: Any, send: Any, exc: Exception) -> None:
    """A problem+json answer for `exc`, given before the body is read; the connection is
    closed after it so the unread body is not received."""
    from dialer.http.problems import problem_response, store_unavailable_body

    if isinstance(exc, ApiError):
        headers = {"Connection": "close"}
        if exc.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        headers.update(getattr(exc, "headers", None) or {})
        response = problem_response(exc.to_problem(instance_of_scope(scope)), exc.status, headers)
    else:
        log.error("store.unavailable", error=str(exc), path=instance_of_scope(scope))
        response = problem_response(store_unavailable_body(scope), 503, {"Retry-After": "5", "Connection": "close"})
    await response(scope, receive, send)
