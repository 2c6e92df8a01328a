"""Recordings rows and the vault's values, both ways, and the vault's events written
into the service's transactional outbox."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from adapters.db import tables as gate_tables
from recordings.model import DestructionEntry, LegalHold, PurgeRequest, Recording, RecordingEvent


def row_to_recording(r: Any) -> Recording:
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


def recording_values(rec: Recording) -> dict[str, Any]:
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


def destruction_entry(r: Any) -> DestructionEntry:
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


def purge_request(r: Any) -> PurgeRequest:
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


def purge_values(p: PurgeRequest) -> dict[str, Any]:
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


async def write_events(uow: Any, events: Sequence[RecordingEvent]) -> None:
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
