"""`SqlAlchemyOutboxSource`: the MQTT relay's `OutboxSource` over the service's `outbox`
table (adapters/db/tables.py), through the store's own units of work.

Reading and marking go through `store.read()` / `store.write()` so they obey the
store's transaction discipline (on SQLite every writer is serialised by the store; a
second engine would fight it for the lock). The table's `published_at` is the "sent"
mark: set only after the broker acknowledged the event. The stored payload text is
published as is, byte for byte.

Published rows are kept for `retention` after `published_at`, then deleted by
`prune_published` in bounded batches (the relay calls it now and then). A row whose
`published_at` is NULL is never deleted, however old: it has not reached the broker.
The delete walks `ix_outbox_published_at_id` (published_at, id): on SQLite
`SEARCH outbox USING COVERING INDEX ix_outbox_published_at_id (published_at>? AND
published_at<?)` for the ids, then `SEARCH outbox USING INTEGER PRIMARY KEY (rowid=?)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, select, update

from adapters.db import tables as t
from adapters.mqtt.ports import OutboxEvent

_o = t.outbox.c
Q_UNSENT = (
    select(_o.id, _o.event_id, _o.type, _o.creditor, _o.case_id, _o.case_seq, _o.payload)
    .where(_o.published_at.is_(None))
    .order_by(_o.id)
    .limit(bindparam("limit"))
)
# The oldest published rows first, by the (published_at, id) index; `published_at <
# :cutoff` is never true for NULL, the IS NOT NULL only says so.
Q_PRUNE = delete(t.outbox).where(
    _o.id.in_(
        select(_o.id)
        .where(_o.published_at.is_not(None), _o.published_at < bindparam("cutoff"))
        .order_by(_o.published_at, _o.id)
        .limit(bindparam("limit"))
        .scalar_subquery()
    )
)
DEFAULT_RETENTION = timedelta(days=7)  # `[mqtt] published_retention_days`' default


class SqlAlchemyOutboxSource:
    def __init__(
        self,
        store: Any,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        write: Callable[[], AbstractAsyncContextManager[Any]] | None = None,
        retention: timedelta = DEFAULT_RETENTION,
    ) -> None:
        """`write` defaults to `store.write`; the bridge passes the store's original one
        so marking rows sent (or pruning) does not itself wake the relay. `retention`:
        how long a published row is kept (`[mqtt] published_retention_days`)."""
        if retention <= timedelta(0):
            raise ValueError("retention must be positive")
        self._store = store
        self._now = now
        self._write = write or store.write
        self.retention = retention

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

    async def prune_published(self, limit: int) -> int:
        """Delete up to `limit` rows published more than `retention` ago, oldest first,
        in one short write transaction; returns how many went. Never an unsent row."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        cutoff = self._now().astimezone(UTC) - self.retention
        async with self._write() as uow:
            result = await uow.conn.execute(Q_PRUNE, {"cutoff": cutoff, "limit": limit})
        return max(int(result.rowcount or 0), 0)

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
