"""Request-scoped dependencies: the services container and the caller.

Both run on every request, so they stay cheap: coroutines (a plain `def` dependency
would be sent to a worker thread by FastAPI, a thread hop per request), and the
`Authorization` header is read from the ASGI scope rather than declared as a FastAPI
`Header()` parameter (whose per-request validation cost more than the cached token
check itself). The bearer scheme still shows in the OpenAPI document (`bearer`).
"""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import Depends, Request

from dialer.http.limits import PRINCIPAL_KEY
from dialer.http.peers import authorization_header, client_of
from dialer.model import Principal
from dialer.services import Services

_bind = structlog.contextvars.bind_contextvars


async def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def principal(request: Request) -> Principal:
    scope = request.scope
    who = scope.get(PRINCIPAL_KEY)  # checked before the body was read (dialer.http.limits)
    if who is None:
        svc: Services = request.app.state.services
        who = await svc.auth.authenticate(authorization_header(scope), client=client_of(scope, svc))
    _bind(user=who.name, role=who.role)
    principal: Principal = who
    return principal


__all__ = ["Caller", "Svc", "authorization_header", "client_of", "principal", "services"]

Caller = Annotated[Principal, Depends(principal)]
Svc = Annotated[Services, Depends(services)]
