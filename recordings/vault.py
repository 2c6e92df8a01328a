"""The vault service: ingest, retrieval with an access log, legal holds, retention,
purge under dual control with a hash-chained destruction register, key rotation.

The vault composes its ports (`recordings.ports`) and never touches a file, a key or
a table directly. It is async because its repository is; CPU- and disk-heavy steps
(fsync, full verification) run in worker threads.

`Vault` composes its steps: the shared state and lookups (`recordings.vault_base`),
ingest and recovery (`recordings.ingest`), purge and the destruction register
(`recordings.purge`); retrieval, linking, keys and legal holds are here.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import BinaryIO

# The service's one masking rule, so a recording shows a number as logs and decisions do.
from policy.numbers import mask_number
from recordings import envelope, events
from recordings.errors import (
    AlreadyDestroyed,
    Conflict,
    IntegrityError,
    InvalidRequest,
    NoSuchRecording,
    RangeNotSatisfiable,
    RecordingDestroyed,
    VaultError,
)
from recordings.model import (
    ADMIN_ROLES,
    HOLD_ROLES,
    READ_ROLES,
    AccessEntry,
    Actor,
    CaseHold,
    LegalHold,
    Link,
    Recording,
    RecordingFilter,
    VerifyResult,
    number_digest,
)
from recordings.ingest import IngestResult, IngestSteps
from recordings.purge import PurgeSteps
from recordings.vault_base import Checkpoint, VaultBase, require_reason, require_role


__all__ = ["AudioStream", "Checkpoint", "IngestResult", "RotationReport", "Vault", "VaultBase", "parse_http_range"]


def parse_http_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` → (start, end inclusive); None = whole.

    One range only (what audio elements send); anything else is refused with 416.
    """
    if header is None or header.strip() == "":
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        raise RangeNotSatisfiable(
            f"无法解析的范围 / unsupported Range header {header!r}: expected one bytes=a-b", size=size
        )
    a, b = m.group(1), m.group(2)
    if a == "":
        n = int(b)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable("范围为空 / empty suffix range", size=size)
        return max(size - n, 0), size - 1
    start = int(a)
    end = size - 1 if b == "" else min(int(b), size - 1)
    if start >= size or start > end:
        raise RangeNotSatisfiable(
            f"范围超出录音长度 / range {header!r} outside 0..{size - 1}", size=size
        )
    return start, end


@dataclass(slots=True)
class AudioStream:
    """Decrypted audio for one access. Iterate `chunks` once; `close` releases the blob."""

    recording: Recording
    start: int
    end: int  # inclusive
    total: int
    chunks: Iterator[bytes]
    _file: BinaryIO | None = field(default=None, repr=False)

    @property
    def length(self) -> int:
        return self.end - self.start + 1 if self.total else 0

    @property
    def partial(self) -> bool:
        return not (self.start == 0 and self.end == self.total - 1)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def read_all(self) -> bytes:
        try:
            return b"".join(self.chunks)
        finally:
            self.close()


@dataclass(frozen=True, slots=True)
class RotationReport:
    scope: str
    new_key_id: str
    rewrapped: int
    retired: tuple[str, ...]


class Vault(IngestSteps, PurgeSteps):
    # -- retrieval -----------------------------------------------------------------

    async def open_audio(
        self,
        recording_id: str,
        actor: Actor,
        *,
        reason: str | None,
        byte_range: tuple[int, int] | str | None = None,
        client: str | None = None,
        purpose: str = "listen",
    ) -> AudioStream:
        """Decrypted audio (whole, or one byte range); the access is logged first.

        `byte_range` is (start, end inclusive) or an HTTP ``Range`` header value. A
        whole read verifies the SHA-256 stored at ingest when the last byte is
        produced and raises `IntegrityError` instead of ending normally on mismatch.
        """
        require_role(actor, READ_ROLES, "调阅录音 / listen to recordings")
        reason = require_reason(reason, "调阅原因 / reason for access (借阅原因)")
        rec = await self.get(recording_id, actor)
        data_key, f, reader = await asyncio.to_thread(self._open_reader, rec)
        try:
            if isinstance(byte_range, str) or byte_range is None:
                rng = parse_http_range(byte_range, reader.size)
            else:
                rng = byte_range
                if not (0 <= rng[0] <= rng[1] < reader.size):
                    raise RangeNotSatisfiable(
                        f"范围超出录音长度 / range {rng} outside 0..{reader.size - 1}", size=reader.size
                    )
            start, end = rng if rng is not None else (0, max(reader.size - 1, 0))
            await self.repo.append_access(
                AccessEntry(
                    recording_id=rec.recording_id,
                    user=actor.user,
                    role=actor.role,
                    at=self.clock(),
                    reason=reason,
                    range_start=start,
                    range_end=end,
                    client=client,
                    purpose=purpose,
                )
            )
        except BaseException:
            f.close()
            raise
        whole = rng is None or (start == 0 and end == reader.size - 1)
        chunks = _stream(reader, start, end + 1 if reader.size else 0, f, rec.sha256 if whole else None)
        return AudioStream(rec, start, end if reader.size else -1, reader.size, chunks, f)

    def _open_reader(self, rec: Recording) -> tuple[bytes, BinaryIO, envelope.EnvelopeReader]:
        if rec.state == "destroyed" or rec.wrapped_key is None or rec.kek_id is None:
            raise RecordingDestroyed(
                f"录音已按登记销毁 / recording {rec.recording_id} was destroyed", recording_id=rec.recording_id
            )
        data_key = self._unwrap(rec)
        try:
            f = self.blobs.open(rec.recording_id)
        except FileNotFoundError as exc:
            raise IntegrityError(
                f"录音密文缺失 / sealed blob of {rec.recording_id} is missing", recording_id=rec.recording_id
            ) from exc
        try:
            blob_size = self.blobs.size(rec.recording_id)
            reader = envelope.EnvelopeReader(
                f, data_key, blob_size, recording_id=rec.recording_id, key_id=rec.data_key_id
            )
            if reader.size != rec.size or blob_size != rec.blob_size:
                raise IntegrityError(
                    f"录音长度与登记不符（截断或拼接） / blob length {blob_size} does not match the "
                    f"recorded {rec.blob_size} (truncated or extended)",
                    recording_id=rec.recording_id,
                )
        except BaseException:
            f.close()
            raise
        return data_key, f, reader

    async def verify(self, actor: Actor, recording_ids: Iterable[str] | None = None) -> builtins.list[VerifyResult]:
        """Decrypt every (or the named) recording fully and compare its SHA-256."""
        require_role(actor, READ_ROLES | ADMIN_ROLES, "校验录音 / verify recordings")
        if recording_ids is None:
            recs = await self.list(actor, RecordingFilter(limit=None))
        else:
            recs = [await self.get(i, actor) for i in recording_ids]
        results = []
        for rec in recs:
            results.append(await asyncio.to_thread(self._verify_one, rec))
        return results

    def _verify_one(self, rec: Recording) -> VerifyResult:
        try:
            _, f, reader = self._open_reader(rec)
            with f:
                h = hashlib.sha256()
                n = 0
                for chunk in reader.iter_all():
                    h.update(chunk)
                    n += len(chunk)
            if n != rec.size or h.hexdigest() != rec.sha256:
                return VerifyResult(rec.recording_id, False, "SHA-256 与入库时不符 / SHA-256 differs from ingest")
            return VerifyResult(rec.recording_id, True)
        except VaultError as exc:
            return VerifyResult(rec.recording_id, False, exc.message)

    async def access_log(self, recording_id: str, actor: Actor) -> builtins.list[AccessEntry]:
        require_role(actor, READ_ROLES | ADMIN_ROLES, "查看调阅记录 / read the access log")
        await self.get(recording_id, actor)
        return await self.repo.access_log(recording_id)

    # -- linking unmatched recordings ---------------------------------------------

    async def link(self, recording_id: str, actor: Actor, link: Link) -> Recording:
        """Attach an unmatched recording to its call; rewraps its data key under the
        creditor's KEK (audio untouched). Retention never shrinks."""
        require_role(actor, ADMIN_ROLES, "关联录音 / link recordings")
        if link.creditor is None:
            raise InvalidRequest("须指定委托方 / a creditor is required to link")
        rec = await self.get(recording_id, actor)
        if rec.state != "unmatched":
            raise InvalidRequest(f"录音已关联 / recording {recording_id} is not unmatched")
        data_key = await asyncio.to_thread(self._unwrap, rec)
        kek_id, wrapped = await asyncio.to_thread(
            self._wrap, link.creditor, data_key, rec.recording_id, rec.data_key_id
        )
        linked = rec.evolve(
            creditor=link.creditor,
            case_id=link.case_id,
            agent=link.agent,
            number_masked=mask_number(link.number) if link.number else rec.number_masked,
            number_digest=number_digest(link.number) if link.number else rec.number_digest,
            kek_id=kek_id,
            wrapped_key=wrapped,
            retain_until=max(rec.retain_until, self.retention.retain_until(rec.started_at, link.creditor)),
            state="stored",
        )
        if linked.retain_until > rec.retain_until:
            await asyncio.to_thread(self.blobs.extend_retention, rec.recording_id, linked.retain_until)
        await self.repo.update(linked, events=(events.stored(linked, self.clock()),))
        # The row as stored: a hold placed while we linked is kept by the update.
        linked = await self.repo.get(recording_id) or linked
        if self._store_locks and await self.is_held(linked):
            await self._mirror_hold(linked, True)
        return linked

    def _unwrap(self, rec: Recording) -> bytes:
        if rec.wrapped_key is None or rec.kek_id is None:
            raise RecordingDestroyed(f"录音已销毁 / recording {rec.recording_id} was destroyed")
        return self.keys.unwrap(
            rec.key_scope, rec.kek_id, rec.wrapped_key, envelope.wrap_context(rec.recording_id, rec.data_key_id)
        )

    # -- keys ----------------------------------------------------------------------

    async def rotate_keys(self, scope: str, actor: Actor) -> RotationReport:
        """New active KEK for `scope`; every data key of the scope is rewrapped under it
        (61 bytes of metadata each; audio untouched). The old KEK stays until
        `retire_keys` destroys it once nothing can still be wrapped under it."""
        require_role(actor, ADMIN_ROLES, "轮换密钥 / rotate keys")
        new_id = await asyncio.to_thread(self.keys.rotate, scope)
        rewrapped = await self._rewrap(scope, new_id)
        return RotationReport(scope, new_id, rewrapped, ())

    async def _rewrap(self, scope: str, new_id: str) -> int:
        """Rewrap every data key of `scope` not yet under KEK `new_id` (the active
        one); the backend does it inside the module where it can."""
        rewrapped = 0
        for rec in await self.repo.find(RecordingFilter(limit=None)):
            if rec.key_scope != scope or rec.wrapped_key is None or rec.kek_id in (None, new_id):
                continue
            kek_id, wrapped = await asyncio.to_thread(
                self.keys.rewrap,
                scope,
                rec.kek_id,
                rec.wrapped_key,
                envelope.wrap_context(rec.recording_id, rec.data_key_id),
            )
            try:
                await self.repo.update(rec.evolve(kek_id=kek_id, wrapped_key=wrapped))
            except AlreadyDestroyed:
                continue  # purged while we rewrapped: its key stays erased
            rewrapped += 1
        return rewrapped

    async def retire_keys(self, scope: str, actor: Actor, *, grace: timedelta = timedelta(hours=1)) -> RotationReport:
        """Destroy the superseded KEKs of `scope` (old backups wrapped under them become
        unreadable). Only keys superseded more than `grace` ago: an ingest that fetched
        the old key just before the rotation has committed by then; whatever is still
        wrapped under them is rewrapped first, so nothing readable is lost."""
        require_role(actor, ADMIN_ROLES, "退役密钥 / retire keys")
        active_id = await asyncio.to_thread(self.keys.active_id, scope)
        cutoff = self.clock() - grace
        old = sorted(kid for kid, at in self.keys.superseded(scope).items() if at <= cutoff)
        if not old:
            return RotationReport(scope, active_id, 0, ())
        rewrapped = await self._rewrap(scope, active_id)
        for kid in old:
            await asyncio.to_thread(self.keys.retire, scope, kid)
        return RotationReport(scope, active_id, rewrapped, tuple(old))

    async def destroy_creditor_keys(self, creditor: str, actor: Actor) -> int:
        """End of commission: destroy every KEK of `creditor`. All its recordings, in
        any backup, become unreadable; nothing else is affected. Returns how many."""
        require_role(actor, ADMIN_ROLES, "销毁委托方密钥 / destroy creditor keys")
        recs = await self.repo.find(RecordingFilter(creditors=frozenset({creditor}), limit=None))
        # A held recording is evidence whatever the commission says: shredding the
        # key would destroy it without the hold ever being released.
        held = sorted({f"{r.recording_id}" if r.hold is not None else f"case {r.case_id}"
                       for r in recs if await self.is_held(r)})
        if held:
            raise Conflict(
                f"委托方 {creditor} 的录音处于法律保全中，须先解除保全 / recordings of {creditor} are on "
                f"legal hold ({', '.join(held[:10])}{', …' if len(held) > 10 else ''}); release the holds first",
                creditor=creditor, held=held[:50],
            )
        await asyncio.to_thread(self.keys.destroy, creditor)
        return len(recs)

    # -- legal hold ----------------------------------------------------------------

    async def place_hold(self, recording_id: str, actor: Actor, reason: str | None) -> Recording:
        require_role(actor, HOLD_ROLES, "设置法律保全 / place legal holds")
        reason = require_reason(reason, "保全原因 / hold reason (投诉、诉讼)")
        rec = await self.get(recording_id, actor)
        if rec.state == "destroyed":
            raise RecordingDestroyed(f"录音已销毁 / recording {recording_id} was destroyed")
        held = rec.evolve(hold=LegalHold(reason=reason, by=actor.user, at=self.clock()))
        # The store's hold first: if the row then fails, the blob is merely held.
        await self._mirror_hold(held, True)
        stored = await self.repo.set_hold(recording_id, held.hold)
        if stored is None:
            raise RecordingDestroyed(f"录音已销毁 / recording {recording_id} was destroyed")
        return stored

    async def release_hold(self, recording_id: str, actor: Actor, reason: str | None) -> Recording:
        """Release a recording's own hold; `reason` (why it may go now) is required, as
        placing one needs one: the caller keeps it on the record."""
        require_role(actor, HOLD_ROLES, "解除法律保全 / release legal holds")
        require_reason(reason, "解除原因 / release reason (结案、撤诉)")
        await self.get(recording_id, actor)
        released = await self.repo.set_hold(recording_id, None)
        if released is None:
            raise RecordingDestroyed(f"录音已销毁 / recording {recording_id} was destroyed")
        await self._mirror_hold(released, await self.is_held(released))  # a case hold may remain
        return released

    async def _mirror_hold(self, rec: Recording, on: bool) -> None:
        if not self._store_locks or rec.state == "destroyed":
            return
        try:
            await asyncio.to_thread(self.blobs.set_legal_hold, rec.recording_id, on)
        except FileNotFoundError:
            pass  # no blob to hold: an integrity problem `verify` reports

    async def _case_recordings(self, creditor: str, case_id: str) -> builtins.list[Recording]:
        return await self.repo.find(
            RecordingFilter(creditors=frozenset({creditor}), case_id=case_id, limit=None)
        )

    async def place_case_hold(self, creditor: str, case_id: str, actor: Actor, reason: str | None) -> CaseHold:
        """Hold every recording of the case, present and future, until released."""
        require_role(actor, HOLD_ROLES, "设置法律保全 / place legal holds")
        reason = require_reason(reason, "保全原因 / hold reason (投诉、诉讼)")
        if not actor.sees(creditor):
            raise NoSuchRecording(f"案件不存在 / no such case {case_id}")
        hold = CaseHold(creditor=creditor, case_id=case_id, reason=reason, by=actor.user, at=self.clock())
        if self._store_locks:
            for rec in await self._case_recordings(creditor, case_id):
                await self._mirror_hold(rec, True)
        await self.repo.put_case_hold(hold)
        return hold

    async def release_case_hold(self, creditor: str, case_id: str, actor: Actor, reason: str | None) -> bool:
        require_role(actor, HOLD_ROLES, "解除法律保全 / release legal holds")
        require_reason(reason, "解除原因 / release reason (结案、撤诉)")
        if not actor.sees(creditor):
            return False
        released = await self.repo.delete_case_hold(creditor, case_id)
        if released and self._store_locks:
            for rec in await self._case_recordings(creditor, case_id):
                await self._mirror_hold(rec, rec.hold is not None)
        return released

    async def case_hold(self, creditor: str, case_id: str, actor: Actor) -> CaseHold | None:
        if not actor.sees(creditor):
            return None
        return await self.repo.case_hold(creditor, case_id)


def _stream(
    reader: envelope.EnvelopeReader, start: int, end: int, f: BinaryIO, expected_sha: str | None
) -> Iterator[bytes]:
    try:
        if expected_sha is None:
            yield from reader.iter_range(start, end)
            return
        h = hashlib.sha256()
        for chunk in reader.iter_all():
            h.update(chunk)
            yield chunk
        if h.hexdigest() != expected_sha:
            raise IntegrityError("SHA-256 与入库时不符 / plaintext SHA-256 differs from the one stored at ingest")
    finally:
        f.close()
