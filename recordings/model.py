"""Value types of the recordings vault: what is stored about a recording, who asks,
and the records the vault keeps (access log, purges, destruction register).

All datetimes are timezone-aware. Phone numbers never appear in clear here: a
recording keeps the masked form for display and a digest for exact-match search.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any, Literal, Mapping

SourceKind = Literal["attempt", "call"]
SOURCE_KINDS: tuple[str, ...] = ("attempt", "call")

RecordingState = Literal["stored", "unmatched", "destroyed"]

# KEK scope of recordings whose call is unknown; their data keys are rewrapped under
# the creditor's KEK when an admin links them to a case.
UNMATCHED_SCOPE = "_unmatched"

MEDIA_TYPES: tuple[str, ...] = ("audio/wav", "audio/mpeg", "audio/ogg")

READ_ROLES: frozenset[str] = frozenset({"qa", "compliance", "supervisor"})
HOLD_ROLES: frozenset[str] = frozenset({"compliance", "supervisor", "admin"})
PURGE_REQUEST_ROLES: frozenset[str] = frozenset({"admin"})
PURGE_APPROVE_ROLES: frozenset[str] = frozenset({"supervisor", "compliance"})
INGEST_ROLES: frozenset[str] = frozenset({"pbx", "admin"})
ADMIN_ROLES: frozenset[str] = frozenset({"admin"})


def number_digest(number: str) -> str:
    """Exact-match search key for a number; the number itself is not stored."""
    return hashlib.sha256(b"dialgate/recording-number/v1|" + number.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is asking. ``creditors=None`` means every creditor (an admin or the PBX)."""

    user: str
    role: str
    creditors: frozenset[str] | None = None

    def sees(self, creditor: str | None) -> bool:
        if self.creditors is None:
            return True
        return creditor is not None and creditor in self.creditors


@dataclass(frozen=True, slots=True)
class LegalHold:
    reason: str
    by: str
    at: datetime


@dataclass(frozen=True, slots=True)
class CaseHold:
    """A legal hold on every recording of a case; cases are unique per creditor."""

    creditor: str
    case_id: str
    reason: str
    by: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Link:
    """What the service knows about the call a recording belongs to.

    ``creditor=None`` means the call is unknown: the recording is kept as unmatched.
    """

    creditor: str | None = None
    case_id: str | None = None
    agent: str | None = None
    number: str | None = None  # E.164; only its mask and digest are stored


@dataclass(frozen=True, slots=True)
class IngestRequest:
    source_kind: str  # one of SOURCE_KINDS
    source_id: str  # attempt id or SIP Call-ID: the idempotency key
    started_at: datetime
    media_type: str
    duration_s: float | None = None
    link: Link = field(default_factory=Link)
    # The time of the known attempt this call placed (None: an unknown call): retention
    # runs from it, and a `started_at` far from it is refused.
    attempt_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Recording:
    """One row of recording metadata (see `ports.RecordingRepository` for columns)."""

    recording_id: str
    source_kind: str
    source_id: str
    creditor: str | None
    case_id: str | None
    agent: str | None
    number_masked: str | None
    number_digest: str | None
    started_at: datetime
    duration_s: float | None
    media_type: str
    size: int  # plaintext bytes
    blob_size: int  # sealed bytes
    sha256: str  # of the plaintext, hex
    data_key_id: str
    kek_id: str | None  # None once destroyed
    wrapped_key: bytes | None  # None once destroyed (crypto-shredded)
    retain_until: date  # kept through this day
    state: str  # "stored" | "unmatched" | "destroyed"
    created_at: datetime
    hold: LegalHold | None = None
    destroyed_at: datetime | None = None

    @property
    def key_scope(self) -> str:
        return self.creditor if self.creditor is not None else UNMATCHED_SCOPE

    def evolve(self, **changes: Any) -> Recording:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class RecordingFilter:
    creditors: frozenset[str] | None = None  # None: all
    case_id: str | None = None
    agent: str | None = None
    number_digest: str | None = None
    started_from: datetime | None = None
    started_to: datetime | None = None
    state: str | None = None
    include_destroyed: bool = False
    limit: int | None = 500


@dataclass(frozen=True, slots=True)
class AccessEntry:
    recording_id: str
    user: str
    role: str
    at: datetime
    reason: str
    range_start: int
    range_end: int  # inclusive, as in HTTP Range
    client: str | None
    purpose: str = "listen"  # "listen" | "fetch"


@dataclass(frozen=True, slots=True)
class PurgeRequest:
    purge_id: str
    requested_by: str
    requested_at: datetime
    as_of: date
    recording_ids: tuple[str, ...]
    state: str = "pending"  # "pending" | "approved"
    approved_by: str | None = None
    approved_at: datetime | None = None
    destroyed: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()  # held or no longer due at approval


@dataclass(frozen=True, slots=True)
class PurgePlan:
    """What a purge would destroy; returned by dry runs and requests alike."""

    as_of: date
    due: tuple[Recording, ...]
    held: tuple[Recording, ...]  # due by date but under legal hold: never purged
    request: PurgeRequest | None = None  # None on a dry run


@dataclass(frozen=True, slots=True)
class DestructionEntry:
    """One line of the destruction register (销毁登记表), hash-chained."""

    seq: int
    recording_id: str
    case_id: str | None
    creditor: str | None
    sha256: str
    retain_until: date
    operator: str
    approver: str
    purge_id: str
    destroyed_at: datetime
    method: str
    prev_hash: str
    entry_hash: str


@dataclass(frozen=True, slots=True)
class RegisterHead:
    """The destruction register's head: its last entry, the first entry sealed with the
    evidence key (None: none yet) and a MAC over them (None: written without a key)."""

    seq: int
    entry_hash: str
    keyed_from: int | None
    mac: str | None


@dataclass(frozen=True, slots=True)
class RecordingEvent:
    """An event the vault emits with a metadata change (see `recordings.events`); the
    repository writes it in the same transaction as the change."""

    type: str  # "recording.stored" | "recording.purged"
    creditor: str  # the topic level; UNMATCHED_SCOPE when the call is unknown
    case_id: str | None
    occurred_at: datetime
    payload: Mapping[str, Any]  # type-specific fields; the envelope is the writer's


@dataclass(frozen=True, slots=True)
class VerifyResult:
    recording_id: str
    ok: bool
    problem: str | None = None
