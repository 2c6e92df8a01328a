"""Request-scoped dependencies: the services container and the caller."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import structlog
from fastapi import Depends, Header, Request

from dialer.model import Principal

if TYPE_CHECKING:
    from dialer.app import Services


def services(request: Request) -> "Services":
    return request.app.state.services


async def principal(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    svc: Services = request.app.state.services
    who = await svc.auth.authenticate(authorization)
    structlog.contextvars.bind_contextvars(user=who.name, role=who.role)
    return who


Caller = Annotated[Principal, Depends(principal)]
Svc = Annotated[Any, Depends(services)]
