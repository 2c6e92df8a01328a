"""Request-scoped dependencies: the services container and the caller.

Both run on every request, so they stay cheap: coroutines (a plain `def` dependency
would be sent to a worker thread by FastAPI, a thread hop per request), and the
`Authorization` header is read from the ASGI scope rather than declared as a FastAPI
`Header()` parameter (whose per-request validation cost more than the cached token
check itself). The bearer scheme still shows in the OpenAPI document (`bearer`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import structlog
from fastapi import Depends, Request

from dialer.model import Principal

if TYPE_CHECKING:
    from dialer.app import Services

_bind = structlog.contextvars.bind_contextvars

async def services(request: Request) -> "Services":
    return request.app.state.services


def authorization_header(scope: Any) -> str | None:
    """The request's `Authorization` header (latin-1, as Starlette decodes headers)."""
    for key, value in scope["headers"]:
        if key == b"authorization":
            return value.decode("latin-1")
    return None


async def principal(request: Request) -> Principal:
    svc: Services = request.app.state.services
    who = await svc.auth.authenticate(authorization_header(request.scope))
    _bind(user=who.name, role=who.role)
    return who


Caller = Annotated[Principal, Depends(principal)]
Svc = Annotated[Any, Depends(services)]
