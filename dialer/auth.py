"""Bearer tokens: high-entropy random strings, stored only as their SHA-256.

A token is shown once (`dialgate users add`, `serve --demo`). A database leak gives
hashes of 256-bit random tokens, which cannot be reversed or guessed; no salt or slow
hash is needed for that (unlike passwords).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections import deque
from pathlib import Path
from typing import Any

import structlog

from dialer.errors import TooManyRequests, Unauthenticated, UnprocessableEntity
from dialer.model import Principal
from dialer.ports import CaseStore, Clock, UnitOfWork
from policy import ROLES

TOKEN_PREFIX = "dg_"
# The policy's roles, plus `monitor`: a scraper's token that reads /readyz and /metrics
# and nothing else (no creditor, no case, no dial), so Prometheus needs no admin token.
USER_ROLES: tuple[str, ...] = (*ROLES, "monitor")
USERS_REVISION_FILE = "users.rev"
log = structlog.get_logger("dialgate.auth")


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def validate_user(name: str, role: str, creditors: frozenset[str]) -> None:
    if not name or len(name) > 100 or any(ch.isspace() for ch in name):
        raise UnprocessableEntity("user name: 1-100 characters, no spaces", details={"field": "name"})
    if role not in USER_ROLES:
        raise UnprocessableEntity(f"role: expected one of {', '.join(USER_ROLES)}", details={"field": "role"})
    if role == "monitor" and creditors:
        raise UnprocessableEntity("role monitor reads only health and metrics: give no --creditor",
                                  details={"field": "creditor"})
    if role not in ("admin", "monitor") and not creditors:
        raise UnprocessableEntity(
            f"role {role} is scoped to creditors: give at least one --creditor", details={"field": "creditor"}
        )


class RefusalLimiter:
    """Refused authentications counted per client: past `limit` within `window_s`, the
    client is answered 429 without its token being looked up, until the window passes.
    Counted in each process (a pool of N workers lets N times as many through)."""

    def __init__(self, limit: int = 20, window_s: float = 60.0, now: Any = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._now = now
        self._refused: dict[str, deque[float]] = {}

    def retry_after(self, client: str) -> int:
        """Seconds until `client` may try again; 0 when it may now."""
        seen = self._refused.get(client)
        if seen is None:
            return 0
        now = self._now()
        while seen and seen[0] <= now - self.window_s:
            seen.popleft()
        if not seen:
            del self._refused[client]
            return 0
        return int(seen[0] + self.window_s - now) + 1 if len(seen) >= self.limit else 0

    def refused(self, client: str) -> bool:
        """Count a refusal; True when it is the one that starts the limit."""
        if len(self._refused) > 10_000:  # a flood of addresses: forget rather than grow
            self._refused.clear()
        seen = self._refused.setdefault(client, deque())
        seen.append(self._now())
        if len(seen) > self.limit:
            seen.popleft()
        return len(seen) == self.limit


class UsersRevision:
    """A file in the data directory replaced on every change to users (`dialgate users
    …`), so every worker's token cache notices the change on its next request: a stat,
    not a query. Missing file: revision None (nothing changed since start)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def current(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    def bump(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, secrets.token_hex(8).encode())
        finally:
            os.close(fd)
        os.replace(tmp, self.path)  # a new inode: a changed revision even within one mtime tick


class UserNotices:
    """Changes to users heard from every instance on the store (PostgreSQL's LISTEN,
    `dialer.ports.UserChanges`): each `changed()` empties the token caches that read it.
    While not `listening` (before the first LISTEN, after a lost connection) a change may
    go unheard, so the cache is not trusted: every token is read from the store."""

    def __init__(self) -> None:
        self.heard = 0
        self.listening = False

    def changed(self) -> None:
        """A change was committed, or listening (re)started and one may have been missed."""
        self.heard += 1
        if not self.listening:
            log.info("auth.notices_listening")
            self.listening = True

    def lost(self) -> None:
        """Listening stopped: a change from now on may go unheard."""
        if self.listening:
            log.info("auth.notices_lost", detail="tokens are read from the store until listening again")
        self.heard += 1
        self.listening = False


class Authenticator:
    """Resolves `Authorization: Bearer …` to a Principal, with a cache.

    The cache keeps the hot path (click-to-dial) off the database. It is emptied when the
    users' revision changes (any `dialgate users` change, in any process on this data
    directory) and, on PostgreSQL, when `notices` hears a change from any instance; a
    disabled user or a rotated token stops at the next request in every worker. With
    `notices` not listening the cache is bypassed. `cache_s` bounds an entry's life when
    the database is changed by other means.

    A refused token is logged (`auth.refused`: client, reason; the request id is bound)
    and counted per client; a client past the limit gets 429 (`RefusalLimiter`).
    """

    def __init__(self, store: CaseStore, cache_s: float = 10.0, revision: UsersRevision | None = None,
                 limiter: RefusalLimiter | None = None, notices: UserNotices | None = None) -> None:
        self.store = store
        self.cache_s = cache_s
        self.revision = revision or UsersRevision(None)
        self.limiter = limiter or RefusalLimiter()
        self.notices = notices
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._seen_revision = self.revision.current()
        self._seen_heard = notices.heard if notices is not None else 0

    async def authenticate(self, authorization: str | None, client: str | None = None) -> Principal:
        who = client or "-"
        # Without a client address (the console's sign-in form, which counts its own
        # refusals in this limiter by its client) nothing is counted: one shared bucket
        # would lock everyone out.
        wait = self.limiter.retry_after(client) if client else 0
        if wait:
            raise TooManyRequests(
                f"认证失败次数过多，请 {wait} 秒后再试 / too many refused tokens from this client; retry in {wait} s",
                retry_after_s=wait,
            )
        try:
            return await self._authenticate(authorization)
        except Unauthenticated as exc:
            starts = self.limiter.refused(client) if client else False
            log.warning("auth.refused", client=who, reason=exc.detail, limited=starts)
            raise

    async def _authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated("missing Authorization: Bearer <token>")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("expected Authorization: Bearer <token>")
        digest = hash_token(token)
        now = time.monotonic()
        revision = self.revision.current()
        notices = self.notices
        if notices is None:
            heard, trusted = 0, True
        else:
            heard, trusted = notices.heard, notices.listening
        if revision != self._seen_revision or heard != self._seen_heard:
            self._cache.clear()
            self._seen_revision, self._seen_heard = revision, heard
        if trusted:
            hit = self._cache.get(digest)
            if hit is not None and hit[1] > now:
                return hit[0]
        async with self.store.read() as uow:
            principal = await uow.users.by_token_hash(digest)
        if principal is None:
            raise Unauthenticated("unknown or revoked token")
        # Kept only if no request saw a change while this one read: what it read may
        # predate that change, and nothing would empty the cache of it again.
        if trusted and revision == self._seen_revision and heard == self._seen_heard:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (principal, now + self.cache_s)
        return principal


async def add_user(store: CaseStore, clock: Clock, name: str, role: str, creditors: frozenset[str]) -> tuple[Principal, str]:
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


class UserAdmin:
    """`dialgate users list | disable | enable | rotate-token | grant | revoke-creditor`.

    Each change is one transaction with its audit entry (`user.disabled`, …), then the
    users' revision is bumped so every worker's token cache drops what it holds: a
    disabled user's token, or a rotated one, stops at its next request. On PostgreSQL
    the transaction also notifies every instance, whatever its data directory
    (`UserNotices`). Console sessions re-read their user on every request, so a
    disabled user is signed out there too; disabling and rotating also end the console
    sessions opened before (a leaked token may have opened one), so they stay ended
    after `enable`."""

    def __init__(self, store: CaseStore, clock: Clock, revision: UsersRevision, actor: str = "cli") -> None:
        self.store = store
        self.clock = clock
        self.revision = revision
        self.actor = actor

    async def list(self) -> list[dict[str, Any]]:
        async with self.store.read() as uow:
            return await uow.users.list_all()

    async def _audit(self, uow: UnitOfWork, action: str, details: dict[str, Any]) -> None:
        await uow.audit.add(at=self.clock.now(), actor=self.actor, action=action, creditor=details.get("creditor"),
                            case_id=None, details=details)

    async def _user(self, uow: UnitOfWork, name: str) -> dict[str, Any]:
        from dialer.errors import NotFound

        user: dict[str, Any] | None = await uow.users.find(name)
        if user is None:
            raise NotFound(f"no user {name!r}", details={"name": name})
        return user

    async def set_disabled(self, name: str, disabled: bool) -> dict[str, Any]:
        # The agent's lock: a decision that read the user enabled commits first (dialer.usecases.dials).
        async with self.store.write((f"agent:{name}",)) as uow:
            user = await self._user(uow, name)
            if user["disabled"] != disabled:
                await uow.users.set_disabled(name, disabled)
                if disabled:  # enabling again must not bring back the sessions open before
                    await uow.users.end_sessions(name, self.clock.now())
                await self._audit(uow, "user.disabled" if disabled else "user.enabled", {"name": name})
            user["disabled"] = disabled
        self.revision.bump()
        return user

    async def rotate_token(self, name: str) -> str:
        """A new token for `name` (shown once); the old one stops at once."""
        token = new_token()
        async with self.store.write() as uow:
            await self._user(uow, name)
            await uow.users.set_token(name, hash_token(token))
            await uow.users.end_sessions(name, self.clock.now())  # one the old token opened, too
            await self._audit(uow, "user.token_rotated", {"name": name})
        self.revision.bump()
        return token

    async def grant(self, name: str, creditor: str) -> dict[str, Any]:
        from dialer.errors import Conflict

        if not creditor or len(creditor) > 64 or any(ch.isspace() for ch in creditor):
            raise UnprocessableEntity("creditor: 1-64 characters, no spaces", details={"field": "creditor"})
        async with self.store.write() as uow:
            user = await self._user(uow, name)
            if user["role"] in ("admin", "monitor"):
                raise UnprocessableEntity(f"{user['role']} has no creditor scope; nothing to grant",
                                          details={"field": "creditor"})
            if creditor in user["creditors"]:
                raise Conflict(f"user {name!r} already has creditor {creditor!r}", details={"creditor": creditor})
            await uow.users.grant(name, creditor)
            await self._audit(uow, "user.creditor_granted", {"name": name, "creditor": creditor})
            user["creditors"] = sorted([*user["creditors"], creditor])
        self.revision.bump()
        return user

    async def revoke_creditor(self, name: str, creditor: str) -> dict[str, Any]:
        from dialer.errors import NotFound

        async with self.store.write((f"agent:{name}",)) as uow:  # as set_disabled
            user = await self._user(uow, name)
            if not await uow.users.revoke(name, creditor):
                raise NotFound(f"user {name!r} has no creditor {creditor!r}", details={"creditor": creditor})
            await self._audit(uow, "user.creditor_revoked", {"name": name, "creditor": creditor})
            user["creditors"] = [c for c in user["creditors"] if c != creditor]
        self.revision.bump()
        return user
