"""The recordings vault's metadata in the service database (SQLite or PostgreSQL).

`SqlAlchemyRecordingRepository` implements `recordings.ports.RecordingRepository`
over the case store's units of work (`store.write()` / `store.read()`), so vault
writes share the store's SQLite write lock and PostgreSQL timeouts. The tables are
created by the migration ``versions/0101_recordings.py``; this module mirrors them for
queries (a test checks they agree).

Events the vault hands over with a change (`recording.stored`, `recording.purged`) are
written into the service's transactional outbox by the store's own outbox writer
(`SqlOutbox.add`: envelope, per-case sequence) in the same transaction as the row; the
MQTT relay publishes them from there like every other event.

Database errors surface as the store's `StoreUnavailable` (503); a duplicate source id
or a taken register sequence are translated here into the vault's `DuplicateSource` /
`Conflict` before they leave the transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

from sqlalchemy import and_, delete, exists, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db import tables as gate_tables
from adapters.db.recording_rows import (
    destruction_entry,
    purge_request,
    purge_values,
    recording_values,
    row_to_recording,
    write_events,
)
from adapters.db.recording_watch import SqlAlchemyRecordingWatch
from adapters.db.recordings_tables import (
    metadata,
    recording_access_log,
    recording_case_holds,
    recording_destruction_register,
    recording_expectations,
    recording_purges,
    recordings,
)
from recordings.errors import AlreadyDestroyed, Conflict, DuplicateSource, RecordingHeld
from recordings.model import (
    AccessEntry,
    CaseHold,
    DestructionEntry,
    LegalHold,
    PurgeRequest,
    Recording,
    RecordingEvent,
    RecordingFilter,
    RegisterHead,
)
from recordings.register import CHAIN as REGISTER_CHAIN


__all__ = [
    "SqlAlchemyRecordingRepository", "SqlAlchemyRecordingWatch", "Transactions", "metadata", "recording_access_log",
    "recording_case_holds", "recording_destruction_register", "recording_expectations", "recording_purges",
    "recordings",
]

_heads = gate_tables.evidence_heads
_HOLD_COLUMNS = ("hold_reason", "hold_by", "hold_at")


async def _state(conn: AsyncConnection, recording_id: str) -> str | None:
    state: str | None = (
        await conn.execute(select(recordings.c.state).where(recordings.c.recording_id == recording_id))
    ).scalar_one_or_none()
    return state


async def _put_head(conn: AsyncConnection, head: RegisterHead) -> None:
    h = _heads
    values = dict(seq=head.seq, hash=head.entry_hash, keyed_from=head.keyed_from, mac=head.mac)
    res = await conn.execute(update(h).where(h.c.chain == REGISTER_CHAIN).values(**values))
    if res.rowcount != 1:
        await conn.execute(insert(h).values(chain=REGISTER_CHAIN, **values))


class Transactions(Protocol):
    """What the repository needs of the case store (`SqlAlchemyCaseStore`): units of
    work with `.conn` and, for writes, `.outbox` (`SqlOutbox`)."""

    def write(self) -> Any: ...

    def read(self) -> Any: ...


class SqlAlchemyRecordingRepository:
    def __init__(self, store: Transactions) -> None:
        self._store = store

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        async with self._store.write() as uow:
            yield uow.conn

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        async with self._store.read() as uow:
            yield uow.conn

    async def add(self, recording: Recording, events: Sequence[RecordingEvent] = ()) -> None:
        async with self._store.write() as uow:
            conn = uow.conn
            try:
                async with conn.begin_nested():
                    await conn.execute(insert(recordings).values(**recording_values(recording)))
            except IntegrityError as exc:
                raise DuplicateSource(
                    "该来源的录音已存在 / a recording with this source id exists",
                    source_id=recording.source_id,
                ) from exc
            await write_events(uow, events)

    async def get(self, recording_id: str) -> Recording | None:
        async with self._read() as conn:
            r = (await conn.execute(select(recordings).where(recordings.c.recording_id == recording_id))).first()
        return row_to_recording(r) if r is not None else None

    async def by_source(self, source_kind: str, source_id: str) -> Recording | None:
        async with self._read() as conn:
            r = (
                await conn.execute(
                    select(recordings).where(
                        recordings.c.source_kind == source_kind, recordings.c.source_id == source_id
                    )
                )
            ).first()
        return row_to_recording(r) if r is not None else None

    async def find(self, flt: RecordingFilter) -> list[Recording]:
        c = recordings.c
        where: list[Any] = []
        if flt.creditors is not None:
            if not flt.creditors:
                return []
            where.append(c.creditor.in_(sorted(flt.creditors)))
        if flt.case_id is not None:
            where.append(c.case_id == flt.case_id)
        if flt.agent is not None:
            where.append(c.agent == flt.agent)
        if flt.number_digest is not None:
            where.append(c.number_digest == flt.number_digest)
        if flt.started_from is not None:
            where.append(c.started_at >= flt.started_from)
        if flt.started_to is not None:
            where.append(c.started_at < flt.started_to)
        if flt.state is not None:
            where.append(c.state == flt.state)
        if not flt.include_destroyed:
            where.append(c.state != "destroyed")
        q = select(recordings).where(and_(True, *where)).order_by(c.started_at, c.recording_id)
        if flt.limit is not None:
            q = q.limit(flt.limit)
        async with self._read() as conn:
            rows = (await conn.execute(q)).all()
        return [row_to_recording(r) for r in rows]

    async def update(self, recording: Recording, events: Sequence[RecordingEvent] = ()) -> None:
        values = recording_values(recording)
        rid = values.pop("recording_id")
        for column in _HOLD_COLUMNS:  # only set_hold writes them
            values.pop(column)
        async with self._store.write() as uow:
            res = await uow.conn.execute(
                update(recordings)
                .where(recordings.c.recording_id == rid, recordings.c.state != "destroyed")
                .values(**values)
            )
            if res.rowcount != 1:
                if await _state(uow.conn, rid) is None:
                    raise KeyError(rid)
                raise AlreadyDestroyed(f"录音已销毁 / recording {rid} was destroyed", recording_id=rid)
            await write_events(uow, events)

    async def set_hold(self, recording_id: str, hold: LegalHold | None) -> Recording | None:
        c = recordings.c
        async with self._write() as conn:
            res = await conn.execute(
                update(recordings)
                .where(c.recording_id == recording_id, c.state != "destroyed")
                .values(
                    hold_reason=hold.reason if hold else None,
                    hold_by=hold.by if hold else None,
                    hold_at=hold.at if hold else None,
                )
            )
            if res.rowcount != 1:
                return None
            r = (await conn.execute(select(recordings).where(c.recording_id == recording_id))).first()
        return row_to_recording(r) if r is not None else None

    async def destroy(
        self, recording: Recording, entry: DestructionEntry, events: Sequence[RecordingEvent] = (),
        head: RegisterHead | None = None,
    ) -> None:
        values = recording_values(recording)
        rid = values.pop("recording_id")
        async with self._store.write() as uow:
            conn = uow.conn
            # Only a recording not yet destroyed: two purges racing over one recording
            # leave one register entry (the loser's transaction rolls back whole).
            # And only one not held now: a hold placed after the purge's check wins.
            c, h = recordings.c, recording_case_holds.c
            res = await conn.execute(
                update(recordings)
                .where(
                    c.recording_id == rid,
                    c.state != "destroyed",
                    c.hold_reason.is_(None),
                    ~exists().where(h.creditor == c.creditor, h.case_id == c.case_id),
                )
                .values(**values)
            )
            if res.rowcount != 1:
                if await _state(conn, rid) in (None, "destroyed"):
                    raise AlreadyDestroyed(f"录音已销毁 / recording {rid} was destroyed", recording_id=rid)
                raise RecordingHeld(f"录音处于法律保全中 / recording {rid} is on legal hold", recording_id=rid)
            try:
                async with conn.begin_nested():
                    await conn.execute(
                        insert(recording_destruction_register).values(
                            seq=entry.seq,
                            recording_id=entry.recording_id,
                            case_id=entry.case_id,
                            creditor=entry.creditor,
                            sha256=entry.sha256,
                            retain_until=entry.retain_until,
                            operator=entry.operator,
                            approver=entry.approver,
                            purge_id=entry.purge_id,
                            destroyed_at=entry.destroyed_at,
                            method=entry.method,
                            prev_hash=entry.prev_hash,
                            entry_hash=entry.entry_hash,
                        )
                    )
            except IntegrityError as exc:
                raise Conflict("登记表序号已被占用 / register sequence taken", seq=entry.seq) from exc
            if head is not None:
                await _put_head(conn, head)
            await write_events(uow, events)

    async def put_case_hold(self, hold: CaseHold) -> None:
        t = recording_case_holds
        values = dict(reason=hold.reason, held_by=hold.by, held_at=hold.at)
        async with self._write() as conn:
            # One upsert: a delete then an insert let two holds placed at once both
            # insert, and PostgreSQL's key refused the second as if the store were down.
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            await conn.execute(
                dialect.insert(t)
                .values(creditor=hold.creditor, case_id=hold.case_id, **values)
                .on_conflict_do_update(index_elements=[t.c.creditor, t.c.case_id], set_=values)
            )

    async def delete_case_hold(self, creditor: str, case_id: str) -> bool:
        t = recording_case_holds
        async with self._write() as conn:
            res = await conn.execute(delete(t).where(t.c.creditor == creditor, t.c.case_id == case_id))
            return bool(res.rowcount)

    async def case_hold(self, creditor: str, case_id: str) -> CaseHold | None:
        t = recording_case_holds
        async with self._read() as conn:
            r = (await conn.execute(select(t).where(t.c.creditor == creditor, t.c.case_id == case_id))).first()
        return CaseHold(r.creditor, r.case_id, r.reason, r.held_by, r.held_at) if r is not None else None

    async def append_access(self, entry: AccessEntry) -> None:
        async with self._write() as conn:
            await conn.execute(
                insert(recording_access_log).values(
                    recording_id=entry.recording_id,
                    user=entry.user,
                    role=entry.role,
                    at=entry.at,
                    reason=entry.reason,
                    range_start=entry.range_start,
                    range_end=entry.range_end,
                    client=entry.client,
                    purpose=entry.purpose,
                )
            )

    async def access_log(self, recording_id: str) -> list[AccessEntry]:
        t = recording_access_log
        async with self._read() as conn:
            rows = (
                await conn.execute(select(t).where(t.c.recording_id == recording_id).order_by(t.c.at, t.c.id))
            ).all()
        return [
            AccessEntry(r.recording_id, r.user, r.role, r.at, r.reason, r.range_start, r.range_end, r.client, r.purpose)
            for r in rows
        ]

    async def add_purge(self, purge: PurgeRequest) -> None:
        async with self._write() as conn:
            await conn.execute(insert(recording_purges).values(**purge_values(purge)))

    async def get_purge(self, purge_id: str) -> PurgeRequest | None:
        t = recording_purges
        async with self._read() as conn:
            r = (await conn.execute(select(t).where(t.c.purge_id == purge_id))).first()
        return purge_request(r) if r is not None else None

    async def update_purge(self, purge: PurgeRequest) -> None:
        values = purge_values(purge)
        pid = values.pop("purge_id")
        async with self._write() as conn:
            await conn.execute(update(recording_purges).where(recording_purges.c.purge_id == pid).values(**values))

    async def claim_purge(self, purge_id: str, approver: str, at: Any) -> PurgeRequest | None:
        t = recording_purges
        async with self._write() as conn:
            res = await conn.execute(
                update(t)
                .where(t.c.purge_id == purge_id, t.c.state == "pending")
                .values(state="approved", approved_by=approver, approved_at=at)
            )
            if res.rowcount != 1:
                return None
            r = (await conn.execute(select(t).where(t.c.purge_id == purge_id))).first()
        return purge_request(r)

    async def register_head(self) -> RegisterHead | None:
        h = _heads
        async with self._read() as conn:
            r = (await conn.execute(select(h).where(h.c.chain == REGISTER_CHAIN))).first()
        return RegisterHead(int(r.seq), r.hash, r.keyed_from, r.mac) if r is not None else None

    async def anchor_register_head(self, head: RegisterHead) -> bool:
        h = _heads
        async with self._write() as conn:
            r = (await conn.execute(select(h.c.mac).where(h.c.chain == REGISTER_CHAIN))).first()
            if r is not None and r.mac is not None:
                return False
            await _put_head(conn, head)
        return True

    async def pending_purges(self) -> list[PurgeRequest]:
        t = recording_purges
        async with self._read() as conn:
            rows = (await conn.execute(select(t).where(t.c.state == "pending").order_by(t.c.requested_at))).all()
        return [purge_request(r) for r in rows]

    async def last_destruction(self) -> DestructionEntry | None:
        t = recording_destruction_register
        async with self._read() as conn:
            r = (await conn.execute(select(t).order_by(t.c.seq.desc()).limit(1))).first()
        return destruction_entry(r) if r is not None else None

    async def destruction_register(self) -> list[DestructionEntry]:
        t = recording_destruction_register
        async with self._read() as conn:
            rows = (await conn.execute(select(t).order_by(t.c.seq))).all()
        return [destruction_entry(r) for r in rows]
