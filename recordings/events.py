"""The vault's events on the service's bus: `recording.stored` and `recording.purged`
(schemas/events/v1/recording.*.schema.json).

Built here, pure, from the metadata being committed; the vault hands them to its
metadata repository with the change (`RecordingRepository.add/update/destroy`), which
writes them in the same transaction: the SQL repository into the service's outbox
(the envelope — event_id, case_seq — is added there), the in-memory one into a list.

No phone number appears in clear: only the masked form the recording already keeps.
A recording whose call is unknown (unmatched) has no creditor; its events go under the
vault's own scope for such recordings, ``_unmatched`` (topic
``dialgate/v1/_unmatched/events/…``), and linking it to its call later emits a
``recording.stored`` under the real creditor and case.
"""

from __future__ import annotations

from datetime import datetime

from policy.text import Text
from recordings.model import UNMATCHED_SCOPE, DestructionEntry, Recording, RecordingEvent

STORED = "recording.stored"
PURGED = "recording.purged"
MISSING = "alert.recording_missing"

_NO_RECORDING = Text("a connected call has no recording: every call must be recorded in full", "接通的通话没有录音：所有案件须全程录音")


def _ids(rec: Recording) -> dict[str, object]:
    return {
        "recording_id": rec.recording_id,
        "attempt_id": rec.source_id if rec.source_kind == "attempt" else None,
        "source_kind": rec.source_kind,
        "agent_id": rec.agent,
        "number": rec.number_masked,
    }


def stored(rec: Recording, at: datetime) -> RecordingEvent:
    """A recording's metadata was committed as stored (or kept as unmatched), or an
    unmatched one was linked to its call."""
    return RecordingEvent(
        type=STORED,
        creditor=rec.creditor if rec.creditor is not None else UNMATCHED_SCOPE,
        case_id=rec.case_id,
        occurred_at=at,
        payload={
            **_ids(rec),
            "state": rec.state,
            "sha256": rec.sha256,
            "bytes": rec.size,
            "duration_s": rec.duration_s,
            "media_type": rec.media_type,
            "started_at": rec.started_at.isoformat(),
            "retain_until": rec.retain_until.isoformat(),
        },
    )


def purged(rec: Recording, entry: DestructionEntry) -> RecordingEvent:
    """A recording was destroyed under dual control and entered in the register."""
    return RecordingEvent(
        type=PURGED,
        creditor=rec.creditor if rec.creditor is not None else UNMATCHED_SCOPE,
        case_id=rec.case_id,
        occurred_at=entry.destroyed_at,
        payload={
            **_ids(rec),
            "purge_id": entry.purge_id,
            "requested_by": entry.operator,
            "approved_by": entry.approver,
            "register_seq": entry.seq,
            "sha256": entry.sha256,
            "retain_until": entry.retain_until.isoformat(),
        },
    )


def missing(
    *,
    attempt_id: str,
    creditor: str,
    case_id: str,
    agent: str,
    number_masked: str,
    dialed_at: datetime,
    ended_seen_at: datetime,
    at: datetime,
) -> RecordingEvent:
    """A connected call's recording did not arrive within `[recordings]
    expect_within` of the call's end: every call must be recorded in full."""
    return RecordingEvent(
        type=MISSING,
        creditor=creditor,
        case_id=case_id,
        occurred_at=at,
        payload={
            "attempt_id": attempt_id,
            "agent_id": agent,
            "number": number_masked,
            "dialed_at": dialed_at.isoformat(),
            "ended_seen_at": ended_seen_at.isoformat(),
            **_NO_RECORDING.fields("message"),
        },
    )


__all__ = ["MISSING", "PURGED", "STORED", "missing", "purged", "stored"]
