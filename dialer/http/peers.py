"""Who is calling, read from the ASGI scope: the `Authorization` header and the client's
address (the peer, or what a trusted proxy forwarded)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dialer.services import Services

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
