"""The transactional outbox."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Sequence

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db import tables as t
from dialer.ids import new_id
from dialer.model import (
    OutboxEvent,
)
from adapters.db.cases_repo import SqlCaseRepository
from adapters.db.queries import I_OUTBOX
from dialer.chain import canonical_json

log = structlog.get_logger("dialgate.store")

class SqlOutbox:
    def __init__(self, conn: AsyncConnection, cases: SqlCaseRepository, *, keep: bool = True) -> None:
        self.conn = conn
        self.keep = keep  # False: no event bus is configured (see SqlAlchemyCaseStore)
        self._cases = cases  # numbers each case's events (the unit's own repository)

    async def add(
        self,
        type: str,
        *,
        creditor: str,
        case_pk: int | None,
        case_id: str | None,
        occurred_at: datetime,
        payload: dict[str, Any],
    ) -> str:
        event_id = new_id()
        if not self.keep:
            return event_id
        case_seq = await self._cases.next_event_seq(case_pk) if case_pk is not None else None
        body = {
            "event_id": event_id,
            "type": type,
            "occurred_at": occurred_at.isoformat(),
            "creditor": creditor,
            "case_id": case_id,
            "case_seq": case_seq,
            **payload,
        }
        await self._insert(event_id, type, creditor, case_id, case_seq, occurred_at, canonical_json(body))
        return event_id

    async def _insert(
        self, event_id: str, type: str, creditor: str, case_id: str | None, case_seq: int | None,
        occurred_at: datetime, payload: str,
    ) -> None:
        await self.conn.execute(
            I_OUTBOX,
            dict(
                event_id=event_id,
                type=type,
                creditor=creditor,
                case_id=case_id,
                case_seq=case_seq,
                occurred_at=occurred_at,
                payload=payload,
                published_at=None,
            ),
        )

    async def pending(self, limit: int = 100) -> list[OutboxEvent]:
        o = t.outbox.c
        rows = await self.conn.execute(
            select(t.outbox).where(o.published_at.is_(None)).order_by(o.id).limit(limit)
        )
        return [
            OutboxEvent(
                id=r.id,
                event_id=r.event_id,
                type=r.type,
                creditor=r.creditor,
                case_id=r.case_id,
                case_seq=r.case_seq,
                occurred_at=r.occurred_at,
                payload=json.loads(r.payload),
            )
            for r in rows
        ]

    async def mark_published(self, ids: Sequence[int], at: datetime) -> None:
        if ids:
            await self.conn.execute(update(t.outbox).where(t.outbox.c.id.in_(list(ids))).values(published_at=at))


