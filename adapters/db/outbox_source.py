"""`SqlAlchemyOutboxSource`: the MQTT relay's `OutboxSource` over the service's `outbox`
table (adapters/db/tables.py), through the store's own units of work.

Reading and marking go through `store.read()` / `store.write()` so they obey the
store's transaction discipline (on SQLite every writer is serialised by the store; a
second engine would fight it for the lock). The table's `published_at` is the "sent"
mark: set only after the broker acknowledged the event. The stored payload text is
published as is, byte for byte.

On PostgreSQL any number of relays may drain one outbox at once (two instances during a
leader hand-over, or a relay per instance): `fetch_unsent` claims its rows with `FOR
UPDATE SKIP LOCKED` in a transaction that stays open until `mark_sent` stamps them and
commits (or the next fetch, or `aclose`, rolls it back: the rows are free again). A row
is thus published by one relay at a time; a relay that dies after the broker's PUBACK
but before the commit leaves it unsent, so it is published again (at least once, as
ever). Order per case holds across relays: a claimed event is kept only while every
older unsent event of its case is in the same claim, so no relay publishes event n+1
while another still holds event n. On SQLite a write transaction holds the database's
one writer lock, so it is never kept open across a publish: one relay reads at a time.

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

import structlog
from sqlalchemy import bindparam, delete, func, select, update

from adapters.db import tables as t
from dialer.outbox import OutboxEvent

log = structlog.get_logger("dialgate.outbox")

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
Q_CLAIM = Q_UNSENT.with_for_update(skip_locked=True)
# Every unsent event, claimed by anyone or not, of the cases in a claim, up to its newest.
Q_UNSENT_OF_CASES = (
    select(_o.id, _o.creditor, _o.case_id)
    .where(
        _o.published_at.is_(None),
        _o.id <= bindparam("upto"),
        _o.case_id.in_(bindparam("case_ids", expanding=True)),
    )
    .order_by(_o.id)
)


def _event(r: Any) -> OutboxEvent:
    return OutboxEvent(
        position=r.id,
        event_id=r.event_id,
        type=r.type,
        creditor=r.creditor,
        payload=r.payload.encode("utf-8"),
        # A case id is unique per creditor only.
        ordering_key=None if r.case_id is None else f"{r.creditor}/{r.case_id}",
        sequence=r.case_seq,
    )


def _mark(positions: Sequence[int], at: datetime) -> Any:
    return (
        update(t.outbox)
        .where(_o.id.in_(list(positions)), _o.published_at.is_(None))
        .values(published_at=at)
    )


class SqlAlchemyOutboxSource:
    def __init__(
        self,
        store: Any,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        write: Callable[[], AbstractAsyncContextManager[Any]] | None = None,
        retention: timedelta = DEFAULT_RETENTION,
    ) -> None:
        """`write` defaults to the store's `write_unannounced`, so marking rows sent (or
        pruning) does not itself wake the relay. `retention`: how long a published row
        is kept (`[mqtt] published_retention_days`)."""
        if retention <= timedelta(0):
            raise ValueError("retention must be positive")
        self._store = store
        self._now = now
        self._write = write or store.write_unannounced
        self.retention = retention
        self._claimed: Any = None  # PostgreSQL: the open transaction holding the last claim

    async def fetch_unsent(self, limit: int) -> Sequence[OutboxEvent]:
        if getattr(self._store, "is_postgres", False):
            return await self._claim(limit)
        async with self._store.read() as uow:
            rows = (await uow.conn.execute(Q_UNSENT, {"limit": limit})).all()
        return [_event(r) for r in rows]

    async def _claim(self, limit: int) -> Sequence[OutboxEvent]:
        """PostgreSQL: lock up to `limit` unsent rows no other relay holds, in a
        transaction kept open until `mark_sent`; only the events whose older unsent
        events of the same case are all in this claim."""
        await self.aclose()
        conn = await self._store.engine.connect()
        try:
            await conn.begin()
            rows = (await conn.execute(Q_CLAIM, {"limit": limit})).all()
            cases = sorted({r.case_id for r in rows if r.case_id is not None})
            older: dict[tuple[str, str], list[int]] = {}
            if cases:
                for o in (await conn.execute(
                    Q_UNSENT_OF_CASES, {"upto": max(r.id for r in rows), "case_ids": cases}
                )).all():
                    older.setdefault((o.creditor, o.case_id), []).append(o.id)
        except BaseException:
            await conn.close()  # rolls back: the rows are free again
            raise
        self._claimed = conn
        kept: list[OutboxEvent] = []
        taken: dict[tuple[str, str], int | None] = {}  # per case, how many of its unsent events are kept
        for r in rows:
            if r.case_id is not None:
                key = (r.creditor, r.case_id)
                n = taken.get(key, 0)
                ids = older.get(key, [])
                if n is None or n >= len(ids) or ids[n] != r.id:
                    taken[key] = None  # another relay holds an older event of this case
                    continue
                taken[key] = n + 1
            kept.append(_event(r))
        return kept

    async def aclose(self) -> None:
        """Let go of a claim not marked sent (its rows go back to the outbox)."""
        conn, self._claimed = self._claimed, None
        if conn is not None:
            try:
                await conn.close()
            except Exception as exc:  # noqa: BLE001 - a broken connection has let go already
                log.warning("outbox.claim_release_failed", error=f"{type(exc).__name__}: {exc}")

    async def mark_sent(self, positions: Sequence[int]) -> None:
        if self._claimed is not None:
            conn, self._claimed = self._claimed, None
            try:
                if positions:
                    await conn.execute(_mark(positions, self._now().astimezone(UTC)))
                await conn.commit()
            finally:
                await conn.close()
            return
        if not positions:
            return
        at = self._now().astimezone(UTC)
        async with self._write() as uow:
            await uow.conn.execute(_mark(positions, at))

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
