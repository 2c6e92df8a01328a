"""Ports of the vault: what it needs from the outside, as `typing.Protocol`s.

Implementations: `adapters.storage.filesystem.FilesystemBlobStore`,
`adapters.storage.keys.KeyFileKeyProvider` / `EnvKeyProvider`, `adapters.storage.pkcs11`,
`adapters.storage.transit`, the service's SQLAlchemy
repository, and the in-memory fakes in `recordings.memory` for tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import BinaryIO, Iterable, Protocol, Sequence

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


class Clock(Protocol):
    def __call__(self) -> datetime: ...


class BlobWriter(Protocol):
    """A temporary blob being written. Nothing is visible under `key` until `publish`."""

    def write(self, data: bytes | memoryview, /) -> object:
        """Consume `data` before returning: writers hand views of buffers they reuse."""
        ...

    def sync(self) -> None:
        """Flush and fsync the temporary file."""

    def publish(self) -> None:
        """Atomically rename the temporary into place and fsync the directory."""

    def abort(self) -> None:
        """Remove the temporary (idempotent; safe after publish: does nothing then)."""


@dataclass(frozen=True, slots=True)
class StoredBlob:
    key: str
    size: int
    modified_at: datetime


class BlobStore(Protocol):
    """Where sealed blobs live. Only ciphertext is ever handed to it.

    A store that can enforce retention itself (S3 Object Lock) locks each blob until
    `retain_until` from the moment it becomes visible, mirrors legal holds, and
    refuses early deletion with `BlobLocked`; the others accept the same calls and
    do nothing more.
    """

    @property
    def enforces_retention(self) -> bool:
        """True when the store itself locks each blob until its retention ends."""
        ...

    @property
    def remote(self) -> bool:
        """True when the blobs live on another server, which `check` asks; a local
        store's room and permissions are the caller's to check on its disk."""
        ...

    @property
    def location(self) -> str:
        """Where the blobs live, as the start-up log names it."""
        ...

    def check(self) -> None:
        """Raise a `VaultError` unless a remote store can take blobs now (a local one
        returns at once)."""
        ...

    def begin(self, key: str, *, retain_until: date | None = None) -> BlobWriter: ...

    def set_legal_hold(self, key: str, on: bool) -> None:
        """Mirror the vault's legal hold on the blob (no-op where unsupported)."""
        ...

    def extend_retention(self, key: str, retain_until: date) -> None:
        """Keep the blob locked through a later `retain_until` (never earlier)."""
        ...

    def open(self, key: str) -> BinaryIO:
        """A seekable binary file; raises `FileNotFoundError` when absent."""
        ...

    def size(self, key: str) -> int: ...

    def delete(self, key: str) -> bool:
        """True when something was deleted."""
        ...

    def keys(self) -> Iterable[StoredBlob]: ...

    def temporaries(self) -> Sequence[object]:
        """Temporaries currently present (paths or names): writes in progress or
        left by a crash."""
        ...

    def clean_temporaries(self, older_than: datetime | None = None) -> int:
        """Delete leftover temporaries (all, or those last written before
        `older_than`, sparing a concurrent ingest); the count removed."""
        ...


class KeyProvider(Protocol):
    """Key-encryption keys (KEKs) as operations, one active KEK per creditor scope,
    older ones kept until nothing is wrapped under them. The vault never holds a KEK:
    it hands data keys to `wrap` and gets them back from `unwrap`, so a backend may
    keep its KEKs inside a PKCS#11 token or a KMS (`recordings.keywrap`).

    `context` binds a wrapped key to its recording (`envelope.wrap_context`); the
    backend binds its own KEK id too where it can. Missing keys raise `NoSuchKey`;
    destroyed ones `KeyDestroyed`; a wrapped key that does not open `IntegrityError`.
    Calls may block (a network KMS): the vault makes them off the event loop.
    """

    def active_id(self, scope: str) -> str: ...

    def has(self, scope: str, key_id: str) -> bool:
        """Whether KEK `key_id` of the scope still exists (not retired or destroyed)."""
        ...

    def wrap(self, scope: str, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        """Wrap under the scope's active KEK: (its id, the wrapped key)."""
        ...

    def unwrap(self, scope: str, key_id: str, wrapped: bytes, context: bytes) -> bytes: ...

    def rewrap(self, scope: str, key_id: str, wrapped: bytes, context: bytes) -> tuple[str, bytes]:
        """Rewrap a data key wrapped under KEK `key_id` under the active KEK."""
        ...

    def create(self, scope: str) -> str:
        """Create the first key of a scope (idempotent: returns the active id if any)."""
        ...

    def rotate(self, scope: str) -> str:
        """Make a new key active; older ones stay readable. Returns the new key id."""
        ...

    def retire(self, scope: str, key_id: str) -> None:
        """Destroy one non-active key (after every data key was rewrapped)."""
        ...

    def superseded(self, scope: str) -> dict[str, datetime]:
        """Non-active keys still held, with the time each stopped being active."""
        ...

    def destroy(self, scope: str) -> None:
        """Destroy every key of a scope: its recordings become unreadable for good."""
        ...

    def scopes(self) -> list[str]: ...


class ChainSealer(Protocol):
    """The evidence key's two operations (the service passes `dialer.evidence.EvidenceKey`):
    the keyed link of a register entry and the MAC of the register's head."""

    def link(self, prev_hash: str, data: bytes, /) -> str: ...

    def head_mac(self, chain: str, seq: int, last_hash: str, keyed_from: int | None, /) -> str: ...


class RecordingRepository(Protocol):
    """Recording metadata and the vault's records. Async: the service backs it with
    SQLAlchemy. Tables and columns (the SQL implementation follows these names):

    recordings
        recording_id (pk, text), source_kind ("attempt"|"call"), source_id (text,
        UNIQUE with source_kind: the idempotency key), creditor (nullable: unmatched),
        case_id, agent, number_masked (``138****0001``), number_digest (sha256 hex of
        the E.164 number, for exact search), started_at (tz), duration_s, media_type,
        size (plaintext bytes), blob_size, sha256 (hex of plaintext), data_key_id,
        kek_id (key id the data key is wrapped under; null once destroyed),
        wrapped_key (61 bytes; null once destroyed), retain_until (date),
        state ("stored"|"unmatched"|"destroyed"), created_at, destroyed_at,
        hold_reason, hold_by, hold_at (legal hold; all null when none).
    recording_case_holds
        creditor, case_id (pk together: case ids are unique per creditor), reason,
        held_by, held_at.
    recording_access_log (append-only)
        id, recording_id, user, role, at, reason, range_start, range_end, client, purpose.
    recording_purges
        purge_id (pk), requested_by, requested_at, as_of, recording_ids (json),
        state, approved_by, approved_at, destroyed (json), skipped (json).
    recording_destruction_register (append-only, never purged)
        seq (pk), recording_id, case_id, creditor, sha256, retain_until, operator,
        approver, purge_id, destroyed_at, method, prev_hash, entry_hash (unique).

    `events` (`recordings.events`) are written in the SAME transaction as the change
    they come with, or not at all: the service's implementation puts them in its
    transactional outbox (relayed to MQTT), the in-memory one keeps them in a list.
    """

    async def add(self, recording: Recording, events: Sequence[RecordingEvent] = ()) -> None:
        """Insert; raises `DuplicateSource` when (source_kind, source_id) exists."""

    async def get(self, recording_id: str) -> Recording | None: ...

    async def by_source(self, source_kind: str, source_id: str) -> Recording | None: ...

    async def find(self, flt: RecordingFilter) -> list[Recording]: ...

    async def update(self, recording: Recording, events: Sequence[RecordingEvent] = ()) -> None:
        """Replace the row's fields (link, rewrap) except its legal hold, which only
        `set_hold` writes: a write prepared before a hold came must not undo it.
        Raises `AlreadyDestroyed` if the recording was destroyed meanwhile (the write
        would bring its wrapped key back), `KeyError` if there is no such row."""

    async def set_hold(self, recording_id: str, hold: LegalHold | None) -> Recording | None:
        """Set or clear the recording's own legal hold and nothing else; the row as
        it now is, or None when it is missing or destroyed."""

    async def destroy(
        self, recording: Recording, entry: DestructionEntry, events: Sequence[RecordingEvent] = (),
        head: RegisterHead | None = None,
    ) -> None:
        """In one transaction: store the destroyed row (no wrapped key), append the
        register entry and write the register's `head`; raises `Conflict` if
        ``entry.seq`` is taken, `AlreadyDestroyed` if the recording already is,
        `RecordingHeld` if it or its case is on legal hold (checked in the same
        write, so a hold placed after the purge's own check still wins)."""

    async def put_case_hold(self, hold: CaseHold) -> None: ...

    async def delete_case_hold(self, creditor: str, case_id: str) -> bool: ...

    async def case_hold(self, creditor: str, case_id: str) -> CaseHold | None: ...

    async def append_access(self, entry: AccessEntry) -> None: ...

    async def access_log(self, recording_id: str) -> list[AccessEntry]: ...

    async def add_purge(self, purge: PurgeRequest) -> None: ...

    async def get_purge(self, purge_id: str) -> PurgeRequest | None: ...

    async def update_purge(self, purge: PurgeRequest) -> None: ...

    async def claim_purge(self, purge_id: str, approver: str, at: datetime) -> PurgeRequest | None:
        """Atomically move a pending purge to "approved" by `approver`; None when it is
        not pending (another approval won)."""

    async def register_head(self) -> RegisterHead | None: ...

    async def anchor_register_head(self, head: RegisterHead) -> bool:
        """Write `head` unless a head with a MAC is stored (anchoring a register kept
        before the evidence key; idempotent); whether it was written."""

    async def pending_purges(self) -> list[PurgeRequest]:
        """Requests in state "pending", oldest first."""
        ...

    async def last_destruction(self) -> DestructionEntry | None: ...

    async def destruction_register(self) -> list[DestructionEntry]: ...


__all__ = [
    "BlobStore",
    "BlobWriter",
    "ChainSealer",
    "Clock",
    "KeyProvider",
    "RecordingRepository",
    "StoredBlob",
]
