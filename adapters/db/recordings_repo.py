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

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    Float,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db import tables as gate_tables
from adapters.db.tables import NAMING, BigId, UtcDateTime
from dialer.masking import mask_number
from recordings import events as recording_events
from recordings.errors import AlreadyDestroyed, Conflict, DuplicateSource
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

# The vault's own MetaData: its tables belong to the migration 0101, not to 0001.
metadata = MetaData(naming_convention=NAMING)

recordings = Table(
    "recordings",
    metadata,
    Column("recording_id", String(32), primary_key=True),
    Column("source_kind", String(10), nullable=False),
    Column("source_id", String(200), nullable=False),
    Column("creditor", String(64)),  # null: unmatched (call unknown)
    Column("case_id", String(100)),
    Column("agent", String(100)),
    Column("number_masked", String(32)),
    Column("number_digest", String(64)),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("duration_s", Float),
    Column("media_type", String(40), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("blob_size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("data_key_id", String(32), nullable=False),
    Column("kek_id", String(64)),  # null once destroyed
    Column("wrapped_key", LargeBinary(128)),  # null once destroyed (crypto-shredded)
    Column("retain_until", Date, nullable=False),
    Column("state", String(12), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("destroyed_at", UtcDateTime()),
    Column("hold_reason", Text),
    Column("hold_by", String(100)),
    Column("hold_at", UtcDateTime()),
    UniqueConstraint("source_kind", "source_id"),
    Index("ix_recordings_creditor_case_id", "creditor", "case_id"),
    Index("ix_recordings_creditor_started_at", "creditor", "started_at"),
    Index("ix_recordings_agent_started_at", "agent", "started_at"),
    Index("ix_recordings_number_digest", "number_digest"),
    Index("ix_recordings_state_retain_until", "state", "retain_until"),
)

recording_case_holds = Table(
    "recording_case_holds",
    metadata,
    Column("creditor", String(64), primary_key=True),
    Column("case_id", String(100), primary_key=True),
    Column("reason", Text, nullable=False),
    Column("held_by", String(100), nullable=False),
    Column("held_at", UtcDateTime(), nullable=False),
)

recording_access_log = Table(
    "recording_access_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("recording_id", String(32), nullable=False),
    Column("user", String(100), nullable=False),
    Column("role", String(20), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("reason", Text, nullable=False),
    Column("range_start", BigInteger, nullable=False),
    Column("range_end", BigInteger, nullable=False),
    Column("client", String(100)),
    Column("purpose", String(10), nullable=False),
    Index("ix_recording_access_log_recording_id_at", "recording_id", "at"),
)

recording_purges = Table(
    "recording_purges",
    metadata,
    Column("purge_id", String(32), primary_key=True),
    Column("requested_by", String(100), nullable=False),
    Column("requested_at", UtcDateTime(), nullable=False),
    Column("as_of", Date, nullable=False),
    Column("recording_ids", Text, nullable=False),  # JSON list
    Column("state", String(10), nullable=False),
    Column("approved_by", String(100)),
    Column("approved_at", UtcDateTime()),
    Column("destroyed", Text, nullable=False),  # JSON list
    Column("skipped", Text, nullable=False),  # JSON list
)

recording_destruction_register = Table(
    "recording_destruction_register",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("recording_id", String(32), nullable=False),
    Column("case_id", String(100)),
    Column("creditor", String(64)),
    Column("sha256", String(64), nullable=False),
    Column("retain_until", Date, nullable=False),
    Column("operator", String(100), nullable=False),
    Column("approver", String(100), nullable=False),
    Column("purge_id", String(32), nullable=False),
    Column("destroyed_at", UtcDateTime(), nullable=False),
    Column("method", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False, unique=True),
)


# Connected calls the vault expects a recording for (migration 2451): a row is made the
# first time the sweep sees a connected attempt ended without one, and closed when the
# recording arrives; an open row past its due time is alerted once.
recording_expectations = Table(
    "recording_expectations",
    metadata,
    Column("attempt_id", String(36), primary_key=True),
    Column("creditor", String(64), nullable=False),
    Column("case_id", String(100), nullable=False),
    Column("agent", String(100), nullable=False),
    Column("number_masked", String(32), nullable=False),
    Column("dialed_at", UtcDateTime(), nullable=False),
    Column("seen_at", UtcDateTime(), nullable=False),
    Column("due_at", UtcDateTime(), nullable=False),
    Column("alerted_at", UtcDateTime()),
    Column("recording_id", String(32)),
    Column("resolved_at", UtcDateTime()),
    Index("ix_recording_expectations_resolved_at_due_at", "resolved_at", "due_at"),
    Index("ix_recording_expectations_creditor_dialed_at", "creditor", "dialed_at"),
)
_heads = gate_tables.evidence_heads


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


def _row_to_recording(r: Any) -> Recording:
    hold = LegalHold(r.hold_reason, r.hold_by, r.hold_at) if r.hold_reason is not None else None
    return Recording(
        recording_id=r.recording_id,
        source_kind=r.source_kind,
        source_id=r.source_id,
        creditor=r.creditor,
        case_id=r.case_id,
        agent=r.agent,
        number_masked=r.number_masked,
        number_digest=r.number_digest,
        started_at=r.started_at,
        duration_s=r.duration_s,
        media_type=r.media_type,
        size=r.size,
        blob_size=r.blob_size,
        sha256=r.sha256,
        data_key_id=r.data_key_id,
        kek_id=r.kek_id,
        wrapped_key=bytes(r.wrapped_key) if r.wrapped_key is not None else None,
        retain_until=r.retain_until,
        state=r.state,
        created_at=r.created_at,
        hold=hold,
        destroyed_at=r.destroyed_at,
    )


def _recording_values(rec: Recording) -> dict[str, Any]:
    return {
        "recording_id": rec.recording_id,
        "source_kind": rec.source_kind,
        "source_id": rec.source_id,
        "creditor": rec.creditor,
        "case_id": rec.case_id,
        "agent": rec.agent,
        "number_masked": rec.number_masked,
        "number_digest": rec.number_digest,
        "started_at": rec.started_at,
        "duration_s": rec.duration_s,
        "media_type": rec.media_type,
        "size": rec.size,
        "blob_size": rec.blob_size,
        "sha256": rec.sha256,
        "data_key_id": rec.data_key_id,
        "kek_id": rec.kek_id,
        "wrapped_key": rec.wrapped_key,
        "retain_until": rec.retain_until,
        "state": rec.state,
        "created_at": rec.created_at,
        "destroyed_at": rec.destroyed_at,
        "hold_reason": rec.hold.reason if rec.hold else None,
        "hold_by": rec.hold.by if rec.hold else None,
        "hold_at": rec.hold.at if rec.hold else None,
    }


def _entry(r: Any) -> DestructionEntry:
    return DestructionEntry(
        seq=r.seq,
        recording_id=r.recording_id,
        case_id=r.case_id,
        creditor=r.creditor,
        sha256=r.sha256,
        retain_until=r.retain_until,
        operator=r.operator,
        approver=r.approver,
        purge_id=r.purge_id,
        destroyed_at=r.destroyed_at,
        method=r.method,
        prev_hash=r.prev_hash,
        entry_hash=r.entry_hash,
    )


def _purge(r: Any) -> PurgeRequest:
    return PurgeRequest(
        purge_id=r.purge_id,
        requested_by=r.requested_by,
        requested_at=r.requested_at,
        as_of=r.as_of,
        recording_ids=tuple(json.loads(r.recording_ids)),
        state=r.state,
        approved_by=r.approved_by,
        approved_at=r.approved_at,
        destroyed=tuple(json.loads(r.destroyed)),
        skipped=tuple(json.loads(r.skipped)),
    )


def _purge_values(p: PurgeRequest) -> dict[str, Any]:
    return {
        "purge_id": p.purge_id,
        "requested_by": p.requested_by,
        "requested_at": p.requested_at,
        "as_of": p.as_of,
        "recording_ids": json.dumps(list(p.recording_ids)),
        "state": p.state,
        "approved_by": p.approved_by,
        "approved_at": p.approved_at,
        "destroyed": json.dumps(list(p.destroyed)),
        "skipped": json.dumps(list(p.skipped)),
    }


_cases = gate_tables.cases.c


async def _write_events(uow: Any, events: Sequence[RecordingEvent]) -> None:
    """Into the outbox, inside the caller's transaction. A recording of a case the
    store knows takes that case's next sequence number (so a consumer sees it in order
    with the case's other events); one of no case, or of a case not in this store,
    has none."""
    for ev in events:
        case_pk = None
        if ev.case_id is not None:
            case_pk = (
                await uow.conn.execute(
                    select(_cases.id).where(_cases.creditor == ev.creditor, _cases.case_id == ev.case_id)
                )
            ).scalar()
        await uow.outbox.add(
            ev.type,
            creditor=ev.creditor,
            case_pk=case_pk,
            case_id=ev.case_id,
            occurred_at=ev.occurred_at,
            payload=dict(ev.payload),
        )


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
                    await conn.execute(insert(recordings).values(**_recording_values(recording)))
            except IntegrityError as exc:
                raise DuplicateSource(
                    "该来源的录音已存在 / a recording with this source id exists",
                    source_id=recording.source_id,
                ) from exc
            await _write_events(uow, events)

    async def get(self, recording_id: str) -> Recording | None:
        async with self._read() as conn:
            r = (await conn.execute(select(recordings).where(recordings.c.recording_id == recording_id))).first()
        return _row_to_recording(r) if r is not None else None

    async def by_source(self, source_kind: str, source_id: str) -> Recording | None:
        async with self._read() as conn:
            r = (
                await conn.execute(
                    select(recordings).where(
                        recordings.c.source_kind == source_kind, recordings.c.source_id == source_id
                    )
                )
            ).first()
        return _row_to_recording(r) if r is not None else None

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
        return [_row_to_recording(r) for r in rows]

    async def update(self, recording: Recording, events: Sequence[RecordingEvent] = ()) -> None:
        values = _recording_values(recording)
        rid = values.pop("recording_id")
        async with self._store.write() as uow:
            res = await uow.conn.execute(update(recordings).where(recordings.c.recording_id == rid).values(**values))
            if res.rowcount != 1:
                raise KeyError(rid)
            await _write_events(uow, events)

    async def destroy(
        self, recording: Recording, entry: DestructionEntry, events: Sequence[RecordingEvent] = (),
        head: RegisterHead | None = None,
    ) -> None:
        values = _recording_values(recording)
        rid = values.pop("recording_id")
        async with self._store.write() as uow:
            conn = uow.conn
            # Only a recording not yet destroyed: two purges racing over one recording
            # leave one register entry (the loser's transaction rolls back whole).
            res = await conn.execute(
                update(recordings)
                .where(recordings.c.recording_id == rid, recordings.c.state != "destroyed")
                .values(**values)
            )
            if res.rowcount != 1:
                raise AlreadyDestroyed(f"录音已销毁 / recording {rid} was destroyed", recording_id=rid)
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
            await _write_events(uow, events)

    async def put_case_hold(self, hold: CaseHold) -> None:
        t = recording_case_holds
        async with self._write() as conn:
            await conn.execute(delete(t).where(t.c.creditor == hold.creditor, t.c.case_id == hold.case_id))
            await conn.execute(
                insert(t).values(
                    creditor=hold.creditor, case_id=hold.case_id, reason=hold.reason, held_by=hold.by, held_at=hold.at
                )
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
            await conn.execute(insert(recording_purges).values(**_purge_values(purge)))

    async def get_purge(self, purge_id: str) -> PurgeRequest | None:
        t = recording_purges
        async with self._read() as conn:
            r = (await conn.execute(select(t).where(t.c.purge_id == purge_id))).first()
        return _purge(r) if r is not None else None

    async def update_purge(self, purge: PurgeRequest) -> None:
        values = _purge_values(purge)
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
        return _purge(r)

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
        return [_purge(r) for r in rows]

    async def last_destruction(self) -> DestructionEntry | None:
        t = recording_destruction_register
        async with self._read() as conn:
            r = (await conn.execute(select(t).order_by(t.c.seq.desc()).limit(1))).first()
        return _entry(r) if r is not None else None

    async def destruction_register(self) -> list[DestructionEntry]:
        t = recording_destruction_register
        async with self._read() as conn:
            rows = (await conn.execute(select(t).order_by(t.c.seq))).all()
        return [_entry(r) for r in rows]



_att = gate_tables.attempts.c
_exp = recording_expectations.c


class SqlAlchemyRecordingWatch:
    """Proof that every connected call was recorded (`[recordings] expect_within`).

    Reads the gate's attempts (connected, outcome logged) and the vault's recordings
    of those attempts; writes only its own table and, with each alert, an
    `alert.recording_missing` event into the outbox in the same transaction.
    """

    def __init__(self, store: Transactions) -> None:
        self._store = store

    async def sweep(
        self, now: datetime, expect_within: timedelta, lookback: timedelta = timedelta(days=2)
    ) -> list[dict[str, Any]]:
        """Start expecting recordings of newly ended connected calls, close the
        expectations whose recording arrived, and alert (once) those past due. The
        alerts raised now, as dicts."""
        has_recording = (
            select(recordings.c.recording_id)
            .where(recordings.c.source_kind == "attempt", recordings.c.source_id == _att.id)
            .exists()
        )
        known = select(_exp.attempt_id).where(_exp.attempt_id == _att.id).exists()
        async with self._store.write() as uow:
            conn = uow.conn
            fresh = (
                await conn.execute(
                    select(_att.id, _att.creditor, _att.case_id, _att.agent_id, _att.number, _att.at).where(
                        _att.connected.is_(True),
                        _att.state == "completed",
                        _att.at >= now - lookback,
                        ~has_recording,
                        ~known,
                    )
                )
            ).all()
            for r in fresh:
                await conn.execute(
                    insert(recording_expectations).values(
                        attempt_id=r.id, creditor=r.creditor, case_id=r.case_id, agent=r.agent_id,
                        number_masked=mask_number(r.number), dialed_at=r.at, seen_at=now, due_at=now + expect_within,
                    )
                )
            arrived = (
                await conn.execute(
                    select(_exp.attempt_id, recordings.c.recording_id)
                    .join(
                        recordings,
                        and_(recordings.c.source_kind == "attempt", recordings.c.source_id == _exp.attempt_id),
                    )
                    .where(_exp.resolved_at.is_(None))
                )
            ).all()
            for r in arrived:
                await conn.execute(
                    update(recording_expectations)
                    .where(_exp.attempt_id == r.attempt_id)
                    .values(recording_id=r.recording_id, resolved_at=now)
                )
            due = (
                await conn.execute(
                    select(recording_expectations).where(
                        _exp.resolved_at.is_(None), _exp.alerted_at.is_(None), _exp.due_at <= now
                    )
                )
            ).all()
            alerts = []
            for r in due:
                await conn.execute(
                    update(recording_expectations).where(_exp.attempt_id == r.attempt_id).values(alerted_at=now)
                )
                ev = recording_events.missing(
                    attempt_id=r.attempt_id, creditor=r.creditor, case_id=r.case_id, agent=r.agent,
                    number_masked=r.number_masked, dialed_at=r.dialed_at, ended_seen_at=r.seen_at, at=now,
                )
                await _write_events(uow, (ev,))
                alerts.append({"attempt_id": r.attempt_id, "creditor": r.creditor, "case_id": r.case_id,
                               "agent": r.agent, "number": r.number_masked, "dialed_at": r.dialed_at})
        return alerts

    async def missing(
        self, creditors: frozenset[str] | None, since: datetime, until: datetime
    ) -> list[dict[str, Any]]:
        """Connected calls dialled in [since, until) whose recording is overdue and
        has not arrived, oldest first."""
        q = select(recording_expectations).where(
            _exp.resolved_at.is_(None), _exp.alerted_at.is_not(None), _exp.dialed_at >= since, _exp.dialed_at < until
        )
        if creditors is not None:
            q = q.where(_exp.creditor.in_(sorted(creditors)))
        async with self._store.read() as uow:
            rows = (await uow.conn.execute(q.order_by(_exp.dialed_at))).all()
        return [
            {"attempt_id": r.attempt_id, "creditor": r.creditor, "case_id": r.case_id, "agent": r.agent,
             "number": r.number_masked, "dialed_at": r.dialed_at, "due_at": r.due_at}
            for r in rows
        ]

    async def open_count(self, creditors: frozenset[str] | None = None) -> int:
        q = select(func.count()).select_from(recording_expectations).where(
            _exp.resolved_at.is_(None), _exp.alerted_at.is_not(None)
        )
        if creditors is not None:
            q = q.where(_exp.creditor.in_(sorted(creditors)))
        async with self._store.read() as uow:
            return int((await uow.conn.execute(q)).scalar() or 0)
