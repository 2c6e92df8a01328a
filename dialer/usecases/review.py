"""Compliance's review of blocked dials."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dialer.model import DecisionRecord, Principal
from dialer.usecases.base import GateBase
from dialer.usecases.commands import REVIEW_ROLES, _narrow, require_role


class ReviewUseCases(GateBase):
    async def blocked_dials(
        self,
        actor: Principal,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        creditor: str | None = None,
        agent_id: str | None = None,
        rule_id: str | None = None,
        case_id: str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> tuple[list[DecisionRecord], int | None]:
        require_role(actor, REVIEW_ROLES, "review blocked dials")
        scope = _narrow(actor, creditor)
        async with self.store.read() as uow:
            rows, nxt = await uow.decisions.query(
                allowed=False, creditors=scope, since=since, until=until, agent_id=agent_id,
                rule_id=rule_id, case_id=case_id, after=after, limit=limit,
            )
        return [r for _, r in rows], nxt

    async def blocked_summary(
        self, actor: Principal, *, since: datetime | None, until: datetime | None, creditor: str | None
    ) -> dict[str, Any]:
        require_role(actor, REVIEW_ROLES, "review blocked dials")
        scope = _narrow(actor, creditor)
        async with self.store.read() as uow:
            return await uow.decisions.blocked_summary(
                creditors=scope, since=since, until=until, tz=self.policies.default.timezone
            )
