"""What every step of the vault shares: its ports and settings, the sealing key of a
scope, blob deletion, the lookups, and the role and reason checks."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Mapping

from recordings import envelope
from recordings.errors import (
    BlobLocked,
    Forbidden,
    InvalidRequest,
    KeyUnavailable,
    NoSuchKey,
    NoSuchRecording,
    ReasonRequired,
)
from recordings.model import MEDIA_TYPES, Actor, Recording, RecordingFilter, number_digest
from recordings.ports import BlobStore, ChainSealer, Clock, KeyProvider, RecordingRepository
from recordings.retention import RetentionPolicy


DEFAULT_MAX_SIZE = 2 * 1024**3
_MAX_REASON = 500

Checkpoint = Callable[[str], None]


def _no_checkpoint(step: str) -> None:
    return None


class VaultBase:
    """The vault's state and lookups; `recordings.vault.Vault` adds its steps."""

    def __init__(
        self,
        repo: RecordingRepository,
        blobs: BlobStore,
        keys: KeyProvider,
        *,
        clock: Clock,
        retention: RetentionPolicy | None = None,
        max_size: int = DEFAULT_MAX_SIZE,
        media_types: Iterable[str] = MEDIA_TYPES,
        chunk_size: int = envelope.CHUNK_SIZE,
        checkpoint: Checkpoint | None = None,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        create_missing_keys: bool = False,
        parallel_hash: bool = True,
        ciphers: Mapping[str, str] | None = None,
        sealer: ChainSealer | None = None,
    ) -> None:
        self.repo = repo
        self.blobs = blobs
        self.keys = keys
        self.clock = clock
        self.retention = retention or RetentionPolicy()
        self.max_size = max_size
        self.media_types = tuple(media_types)
        self.chunk_size = chunk_size
        # SHA-256 on a thread of its own, beside AES-GCM on the loop and the writes,
        # so ingest keeps two cores busy; False hashes on the loop (a one-core host).
        self.parallel_hash = parallel_hash
        self._checkpoint = checkpoint or _no_checkpoint
        self._new_id = new_id
        self._register_lock = asyncio.Lock()
        # With a key file, a creditor's first recording creates its key rather than
        # being refused; keys from the environment cannot be created.
        self.create_missing_keys = create_missing_keys
        # Data cipher per creditor (e.g. SM4-GCM where a bank requires 国密); each
        # blob names its own, so archives of mixed ciphers read back.
        self.ciphers = dict(ciphers or {})
        # The evidence key the register is chained with; None: unkeyed SHA-256 (tools
        # and tests; the service always passes its key).
        self.sealer = sealer

    def _sealing_key(self, scope: str) -> str:
        """The id of the scope's active KEK, created first where that is allowed."""
        try:
            return self.keys.active_id(scope)
        except NoSuchKey as exc:
            if not self.create_missing_keys:
                raise KeyUnavailable(
                    f"委托方 {scope} 没有加密密钥 / no key to seal recordings of {scope}: "
                    "run `dialgate keys init --creditor " + scope + "`",
                    scope=scope,
                ) from exc
            self.keys.create(scope)
            return self.keys.active_id(scope)

    def _wrap(self, scope: str, data_key: bytes, recording_id: str, data_key_id: str) -> tuple[str, bytes]:
        self._sealing_key(scope)
        return self.keys.wrap(scope, data_key, envelope.wrap_context(recording_id, data_key_id))

    def cipher_of(self, creditor: str | None) -> str:
        return self.ciphers.get(creditor or "", envelope.AES_256_GCM)

    @property
    def _store_locks(self) -> bool:
        return self.blobs.enforces_retention

    async def _delete_blob(self, key: str) -> bool:
        """Delete a blob nobody can read (no row, or its data key erased); False when
        the store's retention lock refuses: the ciphertext stays until the lock
        expires and a later `recover` deletes it."""
        try:
            await asyncio.to_thread(self.blobs.delete, key)
        except BlobLocked:
            return False
        return True

    # -- lookup --------------------------------------------------------------------

    async def get(self, recording_id: str, actor: Actor) -> Recording:
        """The recording if `actor` may see it; `NoSuchRecording` otherwise (never 403:
        another creditor's recording does not exist for them)."""
        rec = await self.repo.get(recording_id)
        if rec is None or not actor.sees(rec.creditor):
            raise NoSuchRecording(f"录音不存在 / no such recording {recording_id}", recording_id=recording_id)
        return rec

    async def list(self, actor: Actor, flt: RecordingFilter | None = None, *, number: str | None = None) -> list[Recording]:
        flt = flt or RecordingFilter()
        creditors = flt.creditors
        if actor.creditors is not None:
            creditors = actor.creditors if creditors is None else creditors & actor.creditors
        if number is not None:
            flt = replace(flt, number_digest=number_digest(number))
        return await self.repo.find(replace(flt, creditors=creditors))

    async def is_held(self, rec: Recording) -> bool:
        if rec.hold is not None:
            return True
        return (
            rec.creditor is not None
            and rec.case_id is not None
            and await self.repo.case_hold(rec.creditor, rec.case_id) is not None
        )


def require_role(actor: Actor, roles: frozenset[str], what: str) -> None:
    if actor.role not in roles:
        raise Forbidden(
            f"角色 {actor.role} 无权{what.split(' / ')[0]} / role {actor.role} may not {what.split(' / ')[1]}",
            role=actor.role,
            allowed=sorted(roles),
        )


def require_reason(reason: str | None, what: str) -> str:
    text = (reason or "").strip()
    if not text:
        raise ReasonRequired(f"须填写{what.split(' / ')[0]} / a {what.split(' / ')[1]} is required")
    if len(text) > _MAX_REASON:
        raise InvalidRequest(f"原因过长 / reason longer than {_MAX_REASON} characters")
    return text
