"""Bearer tokens: high-entropy random strings, stored only as their SHA-256.

A token is shown once (`dialgate users add`, `serve --demo`). A database leak gives
hashes of 256-bit random tokens, which cannot be reversed or guessed; no salt or slow
hash is needed for that (unlike passwords).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

from dialer.errors import Unauthenticated, UnprocessableEntity
from dialer.model import Principal
from dialer.ports import CaseStore
from policy import ROLES

TOKEN_PREFIX = "dg_"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def validate_user(name: str, role: str, creditors: frozenset[str]) -> None:
    if not name or len(name) > 100 or any(ch.isspace() for ch in name):
        raise UnprocessableEntity("user name: 1-100 characters, no spaces", details={"field": "name"})
    if role not in ROLES:
        raise UnprocessableEntity(f"role: expected one of {', '.join(ROLES)}", details={"field": "role"})
    if role != "admin" and not creditors:
        raise UnprocessableEntity(
            f"role {role} is scoped to creditors: give at least one --creditor", details={"field": "creditor"}
        )


class Authenticator:
    """Resolves `Authorization: Bearer …` to a Principal, with a short cache.

    The cache keeps the hot path (click-to-dial) off the database; a disabled or
    re-issued token stops working after at most `cache_s` seconds.
    """

    def __init__(self, store: CaseStore, cache_s: float = 10.0) -> None:
        self.store = store
        self.cache_s = cache_s
        self._cache: dict[str, tuple[Principal, float]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated("missing Authorization: Bearer <token>")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("expected Authorization: Bearer <token>")
        digest = hash_token(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        async with self.store.read() as uow:
            principal = await uow.users.by_token_hash(digest)
        if principal is None:
            raise Unauthenticated("unknown or revoked token")
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (principal, now + self.cache_s)
        return principal


async def add_user(store: CaseStore, clock: Any, name: str, role: str, creditors: frozenset[str]) -> tuple[Principal, str]:
    """Create a user; returns (principal, token). The token is not stored."""
    validate_user(name, role, creditors)
    token = new_token()
    async with store.write() as uow:
        if await uow.users.by_name(name) is not None:
            from dialer.errors import Conflict

            raise Conflict(f"user {name!r} exists", details={"name": name})
        principal = await uow.users.add(name, role, creditors, hash_token(token), clock.now())
        await uow.audit.add(
            at=clock.now(), actor="cli", action="user.added", creditor=None, case_id=None,
            details={"name": name, "role": role, "creditors": sorted(creditors)},
        )
    return principal, token
