"""Request-scoped dependencies: the services container and the caller.

Both run on every request, so they stay cheap: coroutines (a plain `def` dependency
would be sent to a worker thread by FastAPI, a thread hop per request), and the
`Authorization` header is read from the ASGI scope rather than declared as a FastAPI
`Header()` parameter (whose per-request validation cost more than the cached token
check itself). The bearer scheme still shows in the OpenAPI document (`bearer`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Annotated, Any

import structlog
from fastapi import Depends, Request

from dialer.http.limits import PRINCIPAL_KEY
from dialer.model import Principal
from dialer.services import Services

_bind = structlog.contextvars.bind_contextvars
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


async def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def authorization_header(scope: Any) -> str | None:
    """The request's `Authorization` header (latin-1, as Starlette decodes headers)."""
    for key, value in scope["headers"]:
        if key == b"authorization":
            text: str = value.decode("latin-1")
            return text
    return None


def client_of(scope: Any, svc: Services | None = None) -> str | None:
    """The caller's address: the peer's, or — only when the peer is one of `[http]
    trusted_proxies` — the nearest address in `X-Forwarded-For` that is not a trusted
    proxy (anyone else can write that header)."""
    peer = scope.get("client")
    host: str | None = peer[0] if peer else None
    trusted = svc.config.http.trusted_proxies if svc is not None else ()
    if host is None or not trusted or not _in(host, trusted):
        return host
    forwarded = b",".join(v for k, v in scope["headers"] if k == b"x-forwarded-for").decode("latin-1")
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        if not _in(hop, trusted):
            return hop[:64]
        host = hop
    return host


def _in(address: str, networks: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


async def principal(request: Request) -> Principal:
    scope = request.scope
    who = scope.get(PRINCIPAL_KEY)  # checked before the body was read (dialer.http.limits)
    if who is None:
        svc: Services = request.app.state.services
        who = await svc.auth.authenticate(authorization_header(scope), client=client_of(scope, svc))
    _bind(user=who.name, role=who.role)
    principal: Principal = who
    return principal


Caller = Annotated[Principal, Depends(principal)]
Svc = Annotated[Services, Depends(services)]
