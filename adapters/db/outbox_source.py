"""`SqlAlchemyOutboxSource`: the MQTT relay's `OutboxSource` over the service's `outbox`
table (adapters/db/tables.py), through the store's own units of work.

Reading and marking go through `store.read()` / `store.write()` so they obey the
store's transaction discipline (on SQLite every writer is serialised by the store; a
second engine would fight it for the lock). The table's `published_at` is the "sent"
mark: set only after the broker acknowledged the event. The stored payload text is
published as is, byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update

from adapters.db import tables as t
from adapters.mqtt.ports import OutboxEvent

_o = t.outbox.c
Q_UNSENT = (
    select(_o.id, _o.event_id, _o.type, _o.creditor, _o.case_id, _o.case_seq, _o.payload)
    .where(_o.published_at.is_(None))
    .order_by(_o.id)
    .limit(bindparam("limit"))
)


class SqlAlchemyOutboxSource:
    def __init__(
        self,
        store: Any,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        write: Callable[[], AbstractAsyncContextManager[Any]] | None = None,
    ) -> None:
        """`write` defaults to `store.write`; the bridge passes the store's original one
        so marking rows sent does not itself wake the relay."""
        self._store = store
        self._now = now
        self._write = write or store.write

    async def fetch_unsent(self, limit: int) -> Sequence[OutboxEvent]:
        async with self._store.read() as uow:
            rows = (await uow.conn.execute(Q_UNSENT, {"limit": limit})).all()
        return [
            OutboxEvent(
                position=r.id,
                event_id=r.event_id,
                type=r.type,
                creditor=r.creditor,
                payload=r.payload.encode("utf-8"),
                # A case id is unique per creditor only.
                ordering_key=None if r.case_id is None else f"{r.creditor}/{r.case_id}",
                sequence=r.case_seq,
            )
            for r in rows
        ]

    async def mark_sent(self, positions: Sequence[int]) -> None:
        if not positions:
            return
        at = self._now().astimezone(UTC)
        async with self._write() as uow:
            await uow.conn.execute(
                update(t.outbox)
                .where(_o.id.in_(list(positions)), _o.published_at.is_(None))
                .values(published_at=at)
            )

    async def unsent_count(self) -> int:
        """For health and tests: how many events wait for the broker."""

        async with self._store.read() as uow:
            return int(
                (
                    await uow.conn.execute(
                        select(func.count()).select_from(t.outbox).where(_o.published_at.is_(None))
                    )
                ).scalar_one()
            )
