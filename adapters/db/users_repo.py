"""Users and the access audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db import tables as t
from dialer.model import (
    Principal,
)
from adapters.db.cases_repo import SqlCaseRepository
from adapters.db.users_notify import NOTIFY
from dialer.chain import canonical_json

log = structlog.get_logger("dialgate.store")

class SqlUserRepository:
    """`notify`: PostgreSQL, where a change a token cache holds is announced to every
    instance in the change's own transaction (adapters/db/users_notify.py)."""

    def __init__(self, conn: AsyncConnection, notify: bool = False) -> None:
        self.conn = conn
        self.notify = notify

    async def _changed(self, name: str) -> None:
        if self.notify:
            await self.conn.execute(NOTIFY, {"name": name})

    async def _principal(self, where: Any) -> Principal | None:
        u = (await self.conn.execute(select(t.users).where(where, t.users.c.disabled.is_(False)))).mappings().first()
        if u is None:
            return None
        creds = await self.conn.execute(
            select(t.user_creditors.c.creditor).where(t.user_creditors.c.user_id == u["id"])
        )
        return Principal(user_id=u["id"], name=u["name"], role=u["role"], creditors=frozenset(r[0] for r in creds))

    async def by_token_hash(self, token_hash: str) -> Principal | None:
        return await self._principal(t.users.c.token_hash == token_hash)

    async def by_name(self, name: str) -> Principal | None:
        return await self._principal(t.users.c.name == name)

    async def add(self, name: str, role: str, creditors: frozenset[str], token_hash: str, now: datetime) -> Principal:
        cases = SqlCaseRepository(self.conn)
        for c in sorted(creditors):
            await cases.ensure_creditor(c)
        res = await self.conn.execute(
            insert(t.users).values(name=name, role=role, token_hash=token_hash, disabled=False, created_at=now)
        )
        key = res.inserted_primary_key
        assert key is not None  # an INSERT's result always carries it
        uid = key[0]
        for c in sorted(creditors):
            await self.conn.execute(insert(t.user_creditors).values(user_id=uid, creditor=c))
        return Principal(user_id=uid, name=name, role=role, creditors=frozenset(creditors))

    async def grant(self, name: str, creditor: str) -> None:
        """Scope an existing user to one more creditor."""
        await SqlCaseRepository(self.conn).ensure_creditor(creditor)
        uid = (await self.conn.execute(select(t.users.c.id).where(t.users.c.name == name))).scalar_one()
        await self.conn.execute(insert(t.user_creditors).values(user_id=uid, creditor=creditor))
        await self._changed(name)

    async def set_token(self, name: str, token_hash: str) -> None:
        await self.conn.execute(update(t.users).where(t.users.c.name == name).values(token_hash=token_hash))
        await self._changed(name)

    async def set_disabled(self, name: str, disabled: bool) -> bool:
        res = await self.conn.execute(update(t.users).where(t.users.c.name == name).values(disabled=disabled))
        await self._changed(name)
        return bool(res.rowcount)

    async def end_sessions(self, name: str, before: datetime) -> None:
        """Console sessions `name` signed in before `before` no longer sign them in."""
        c = t.console_session_cutoffs
        res = await self.conn.execute(update(c).where(c.c.user_name == name).values(not_before=before))
        if not res.rowcount:
            await self.conn.execute(insert(c).values(user_name=name, not_before=before))

    async def revoke(self, name: str, creditor: str) -> bool:
        """Take one creditor out of a user's scope; False when it was not in it."""
        uid = select(t.users.c.id).where(t.users.c.name == name).scalar_subquery()
        res = await self.conn.execute(
            t.user_creditors.delete().where(t.user_creditors.c.user_id == uid, t.user_creditors.c.creditor == creditor)
        )
        await self._changed(name)
        return bool(res.rowcount)

    async def list_all(self) -> list[dict[str, Any]]:
        """Every user, enabled or not, with their creditors (no token hashes)."""
        users = (await self.conn.execute(select(
            t.users.c.id, t.users.c.name, t.users.c.role, t.users.c.disabled, t.users.c.created_at,
        ).order_by(t.users.c.name))).mappings().all()
        creds: dict[int, list[str]] = {}
        for uid, c in await self.conn.execute(select(t.user_creditors.c.user_id, t.user_creditors.c.creditor)):
            creds.setdefault(uid, []).append(c)
        return [{"name": u["name"], "role": u["role"], "creditors": sorted(creds.get(u["id"], [])),
                 "disabled": bool(u["disabled"]), "created_at": u["created_at"]} for u in users]

    async def find(self, name: str) -> dict[str, Any] | None:
        """A user by name whether disabled or not (the CLI's view)."""
        u = (await self.conn.execute(select(t.users.c.id, t.users.c.name, t.users.c.role, t.users.c.disabled,
                                            t.users.c.created_at).where(t.users.c.name == name))).mappings().first()
        if u is None:
            return None
        creds = [r[0] for r in await self.conn.execute(
            select(t.user_creditors.c.creditor).where(t.user_creditors.c.user_id == u["id"]))]
        return {"name": u["name"], "role": u["role"], "creditors": sorted(creds), "disabled": bool(u["disabled"]),
                "created_at": u["created_at"]}


class SqlAuditLog:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(
        self,
        *,
        at: datetime,
        actor: str,
        action: str,
        creditor: str | None,
        case_id: str | None,
        details: dict[str, Any],
    ) -> None:
        await self.conn.execute(
            insert(t.audit_log).values(
                at=at, actor=actor, action=action, creditor=creditor, case_id=case_id, details=canonical_json(details)
            )
        )

