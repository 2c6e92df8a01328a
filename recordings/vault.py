"""The vault service: ingest, retrieval with an access log, legal holds, retention,
purge under dual control with a hash-chained destruction register, key rotation.

The vault composes its ports (`recordings.ports`) and never touches a file, a key or
a table directly. It is async because its repository is; CPU- and disk-heavy steps
(fsync, full verification) run in worker threads.

Ingest order, so that a crash at any point leaves no visible recording, no orphan
metadata and no plaintext (plaintext only ever exists in memory)::

    opened     temporary blob created, header written
    writing    first piece of the body handed to the envelope writer
    sealed     last chunk sealed (final marker), SHA-256 of the plaintext known
    synced     temporary fsynced
    published  atomic rename into place (+ directory fsync); no metadata yet
    committed  metadata row committed: the recording now exists

`recover()` at startup deletes temporaries and published blobs without a row.
A `checkpoint` callback is called with each step's name; crash tests use it to
pause the process there and kill it.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import re
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import BinaryIO, Mapping

# The service's one masking rule, so a recording shows a number as logs and decisions do.
from policy.numbers import mask_number
from recordings import envelope, events, register
from recordings.errors import (
    AlreadyDestroyed,
    BlobLocked,
    Conflict,
    DualControlViolation,
    DuplicateSource,
    Forbidden,
    IntegrityError,
    InvalidRequest,
    KeyUnavailable,
    NoSuchKey,
    NoSuchPurge,
    NoSuchRecording,
    PurgeNotPending,
    RangeNotSatisfiable,
    ReasonRequired,
    RecordingDestroyed,
    RecordingTooLarge,
    SealingStalled,
    UnsupportedMediaType,
    VaultError,
)
from recordings.model import (
    ADMIN_ROLES,
    HOLD_ROLES,
    INGEST_ROLES,
    MEDIA_TYPES,
    PURGE_APPROVE_ROLES,
    PURGE_REQUEST_ROLES,
    READ_ROLES,
    SOURCE_KINDS,
    UNMATCHED_SCOPE,
    AccessEntry,
    Actor,
    CaseHold,
    DestructionEntry,
    IngestRequest,
    LegalHold,
    Link,
    PurgePlan,
    PurgeRequest,
    Recording,
    RecordingFilter,
    RegisterHead,
    VerifyResult,
    number_digest,
)
from recordings.ports import BlobStore, ChainSealer, Clock, KeyProvider, RecordingRepository
from recordings.retention import RetentionPolicy, is_due, started_at_problem

DEFAULT_MAX_SIZE = 2 * 1024**3
SEAL_TIMEOUT_S = 300.0  # longest wait on the writer's thread (one batch, or the last ones)
DESTRUCTION_METHOD = "crypto-shred: wrapped data key erased, sealed blob deleted / 数据密钥销毁并删除密文"
_SOURCE_ID = re.compile(r"^[A-Za-z0-9@._:+\-]{1,200}$")
_MAX_REASON = 500
_REGISTER_RETRIES = 20  # another process appending to the register at the same moment

Checkpoint = Callable[[str], None]
# Called once the body has ended: the bytes that replace the start of the recording
# (a WAV's final header) and its duration, or None to keep the bytes as streamed.
Finalize = Callable[[], "tuple[bytes, float | None] | None"]
DRAFT_SUFFIX = "-draft"


def _no_checkpoint(step: str) -> None:
    return None


def sniff_media(head: bytes, media_type: str) -> bool:
    """Do the first bytes look like the declared audio type?"""
    if media_type == "audio/wav":
        return head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE"
    if media_type == "audio/mpeg":
        return head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)
    if media_type == "audio/ogg":
        return head[:4] == b"OggS"
    return False


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


@dataclass(frozen=True, slots=True)
class IngestResult:
    recording: Recording
    created: bool  # False when the source id had already been ingested


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


class Vault:
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

    # -- ingest --------------------------------------------------------------------

    async def ingest(
        self,
        req: IngestRequest,
        body: AsyncIterable[bytes] | Iterable[bytes],
        actor: Actor,
        *,
        finalize: Finalize | None = None,
    ) -> IngestResult:
        """Seal `body` (streamed) and record it; idempotent by (source_kind, source_id).

        With `finalize` (a recording streamed while the call runs, whose WAV header
        carries the streaming sizes 0xFFFFFFFF) the body is sealed into a draft blob,
        then re-sealed once into the recording's blob with the start replaced by what
        `finalize` returns (the final header) — under a new data key, because sealing
        different bytes under the first one would reuse its GCM nonces, and read back
        in order so the stored SHA-256 is the final file's. The draft is deleted; a
        crash leaves it as an orphan that `recover` deletes.
        """
        _require_role(actor, INGEST_ROLES, "上传录音 / ingest recordings")
        if req.source_kind not in SOURCE_KINDS:
            raise InvalidRequest(
                f"来源类型应为 attempt 或 call / source kind must be attempt or call, got {req.source_kind!r}"
            )
        if not _SOURCE_ID.match(req.source_id or ""):
            raise InvalidRequest(f"来源编号无效 / invalid {req.source_kind}_id {req.source_id!r}")
        if req.started_at.tzinfo is None:
            raise InvalidRequest("开始时间须带时区 / started_at must carry a UTC offset")
        far = started_at_problem(req.started_at, req.attempt_at)
        if far is not None:
            raise InvalidRequest(far, field="started_at")
        if req.duration_s is not None and not 0 <= req.duration_s < 10 * 86400:
            raise InvalidRequest(f"时长无效 / invalid duration {req.duration_s!r}")
        if req.media_type not in self.media_types:
            raise UnsupportedMediaType(
                f"不支持的音频类型 / unsupported media type {req.media_type!r}; "
                f"accepted: {', '.join(self.media_types)}",
                media_type=req.media_type,
            )
        existing = await self.repo.by_source(req.source_kind, req.source_id)
        if existing is not None:
            return IngestResult(existing, created=False)
        link = req.link
        scope = link.creditor if link.creditor is not None else UNMATCHED_SCOPE
        # Refuse before consuming the upload, not after; a KMS answers off the loop.
        await asyncio.to_thread(self._sealing_key, scope)

        recording_id = self._new_id()
        data_key_id = uuid.uuid4().hex[:16]
        alg = self.cipher_of(link.creditor)
        data_key = envelope.new_data_key(alg)
        retain_until = self.retention.retain_until(req.attempt_at or req.started_at, link.creditor, self.clock())
        # A store with its own retention lock gets it now, so the blob is never
        # visible unlocked. A draft gets none: it is deleted once re-sealed.
        blob_key = recording_id if finalize is None else recording_id + DRAFT_SUFFIX
        tmp = self.blobs.begin(blob_key, retain_until=None if finalize is not None else retain_until)
        published = False
        published_keys: list[str] = []
        loop = asyncio.get_running_loop()
        room = asyncio.Event()
        # The loop copies the body into batches and encrypts them; hashing and the
        # writes run on threads of the writer's own, so the loop never waits on the disk.
        writer = envelope.PipelinedEnvelopeWriter(
            tmp,
            data_key,
            recording_id=recording_id,
            key_id=data_key_id,
            chunk_size=self.chunk_size,
            hash_on_worker=self.parallel_hash,
            on_room=lambda: loop.call_soon_threadsafe(room.set),
            alg=alg,
        )
        try:
            self._checkpoint("opened")
            size = 0
            head = b""
            first = True
            async for piece in _aiter(body):
                if not piece:
                    continue
                size += len(piece)
                if size > self.max_size:
                    raise RecordingTooLarge(
                        f"录音超过上限 / recording exceeds {self.max_size} bytes", limit=self.max_size
                    )
                if len(head) < 12:
                    head += bytes(piece[: 12 - len(head)])
                    if len(head) >= 12 and not sniff_media(head, req.media_type):
                        raise UnsupportedMediaType(
                            f"内容不是 {req.media_type} / body is not {req.media_type}",
                            media_type=req.media_type,
                        )
                taken = writer.write_some(piece)
                while taken < len(piece):
                    # Every batch slot is in flight: back-pressure. Clear, then retry
                    # before waiting, so a slot freed in between is not missed.
                    room.clear()
                    taken += writer.write_some(memoryview(piece)[taken:])
                    if taken < len(piece):
                        await _wait_room(room)
                if first:
                    first = False
                    self._checkpoint("writing")
            try:
                summary = await asyncio.to_thread(writer.finish, SEAL_TIMEOUT_S)
            except TimeoutError as exc:
                raise SealingStalled(
                    f"录音加密写入停滞 / sealing did not finish within {SEAL_TIMEOUT_S:.0f} s (storage stalled?)"
                ) from exc
            if not sniff_media(summary.head, req.media_type):
                raise UnsupportedMediaType(
                    f"内容不是 {req.media_type} / body is not {req.media_type}", media_type=req.media_type
                )
            self._checkpoint("sealed")
            await asyncio.to_thread(tmp.sync)
            self._checkpoint("synced")
            await asyncio.to_thread(tmp.publish)
            published = True
            published_keys.append(blob_key)
            duration_s = req.duration_s
            if finalize is not None:
                final = finalize()
                head, duration_s = final if final is not None else (b"", req.duration_s)
                if duration_s is not None and not 0 <= duration_s < 10 * 86400:
                    raise InvalidRequest(f"时长无效 / invalid duration {duration_s!r}")
                new_key_id = uuid.uuid4().hex[:16]
                new_key = envelope.new_data_key(alg)
                published_keys.append(recording_id)  # deleted on failure from here on
                summary = await asyncio.to_thread(
                    self._reseal, blob_key, summary, data_key, data_key_id,
                    recording_id, new_key, new_key_id, head, retain_until,
                )
                data_key, data_key_id = new_key, new_key_id
                if not sniff_media(summary.head, req.media_type):
                    raise UnsupportedMediaType(
                        f"内容不是 {req.media_type} / body is not {req.media_type}", media_type=req.media_type
                    )
                await self._delete_blob(blob_key)
                published_keys.remove(blob_key)
                self._checkpoint("resealed")
            self._checkpoint("published")

            # The KEK is fetched again now, after the (possibly hours-long) upload, so
            # a rotation running meanwhile is caught by its second rewrap pass.
            kek_id, wrapped = await asyncio.to_thread(self._wrap, scope, data_key, recording_id, data_key_id)
            now = self.clock()
            recording = Recording(
                recording_id=recording_id,
                source_kind=req.source_kind,
                source_id=req.source_id,
                creditor=link.creditor,
                case_id=link.case_id if link.creditor is not None else None,
                agent=link.agent if link.creditor is not None else None,
                number_masked=mask_number(link.number) if link.number else None,
                number_digest=number_digest(link.number) if link.number else None,
                started_at=req.started_at,
                duration_s=duration_s,
                media_type=req.media_type,
                size=summary.size,
                blob_size=summary.blob_size,
                sha256=summary.sha256,
                data_key_id=data_key_id,
                kek_id=kek_id,
                wrapped_key=wrapped,
                retain_until=retain_until,
                state="stored" if link.creditor is not None else "unmatched",
                created_at=now,
            )
            try:
                await self.repo.add(recording, events=(events.stored(recording, now),))
            except DuplicateSource:
                # A concurrent upload of the same source won: keep its recording.
                published = False
                await self._delete_blob(recording_id)
                winner = await self.repo.by_source(req.source_kind, req.source_id)
                if winner is None:
                    raise
                return IngestResult(winner, created=False)
            self._checkpoint("committed")
            if self._store_locks and await self.is_held(recording):
                await asyncio.to_thread(self.blobs.set_legal_hold, recording_id, True)
            if not await asyncio.to_thread(self.keys.has, scope, kek_id):
                # The KEK was retired between our wrap and our commit: we still hold
                # the data key, so wrap it again under the active one.
                kek_id, wrapped = await asyncio.to_thread(self._wrap, scope, data_key, recording_id, data_key_id)
                recording = recording.evolve(kek_id=kek_id, wrapped_key=wrapped)
                await self.repo.update(recording)
            return IngestResult(recording, created=True)
        except BaseException:
            await _stop_writer(writer)
            if writer.stopped:  # else leave the temporary open to recover() at startup
                tmp.abort()
            if published:
                for key in published_keys:
                    try:
                        self.blobs.delete(key)
                    except (OSError, VaultError):
                        pass  # recover() removes published blobs without metadata
            raise
        finally:
            del data_key

    def _reseal(
        self,
        draft: str,
        sealed: envelope.SealSummary,
        draft_key: bytes,
        draft_key_id: str,
        recording_id: str,
        data_key: bytes,
        data_key_id: str,
        head: bytes,
        retain_until: date,
    ) -> envelope.SealSummary:
        """Read the draft back chunk by chunk (each authenticated), replace its first
        bytes with `head`, seal it anew into the recording's blob; the new summary."""
        if len(head) > min(sealed.size, self.chunk_size):
            raise InvalidRequest(
                f"替换的文件头过长 / replacement head of {len(head)} bytes longer than the recording's first chunk"
            )
        out = self.blobs.begin(recording_id, retain_until=retain_until)
        try:
            with self.blobs.open(draft) as f:
                reader = envelope.EnvelopeReader(
                    f, draft_key, sealed.blob_size, recording_id=recording_id, key_id=draft_key_id
                )
                writer = envelope.EnvelopeWriter(
                    out, data_key, recording_id=recording_id, key_id=data_key_id, chunk_size=self.chunk_size,
                    alg=reader.header.alg,
                )
                for index, chunk in enumerate(reader.iter_all()):
                    if index == 0 and head:
                        chunk = head + chunk[len(head) :]
                    writer.write(chunk)
                summary = writer.finish()
            out.sync()
            out.publish()
        except BaseException:
            out.abort()
            raise
        return summary

    async def recover(self, *, orphan_grace: timedelta = timedelta(0)) -> dict[str, int]:
        """Startup cleanup: temporaries, blobs with no metadata row (a crash between
        publish and commit) and blobs of destroyed recordings (a crash mid-purge).

        `orphan_grace` spares temporaries and blobs written more recently than that,
        for a vault shared with a running ingest (another process, the CLI).
        """
        cutoff = self.clock() - orphan_grace
        temporaries = await asyncio.to_thread(
            self.blobs.clean_temporaries, cutoff if orphan_grace > timedelta(0) else None
        )
        orphans = 0
        destroyed = 0
        locked = 0
        for blob in await asyncio.to_thread(lambda: list(self.blobs.keys())):
            rec = await self.repo.get(blob.key)
            if rec is None:
                if blob.modified_at <= cutoff:
                    if await self._delete_blob(blob.key):
                        orphans += 1
                    else:
                        locked += 1
            elif rec.state == "destroyed":
                if await self._delete_blob(blob.key):
                    destroyed += 1
                else:
                    locked += 1
        report = {"temporaries": temporaries, "orphans": orphans, "destroyed": destroyed}
        if locked:
            report["locked"] = locked
        return report

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
        _require_role(actor, READ_ROLES, "调阅录音 / listen to recordings")
        reason = _require_reason(reason, "调阅原因 / reason for access (借阅原因)")
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
        _require_role(actor, READ_ROLES | ADMIN_ROLES, "校验录音 / verify recordings")
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
        _require_role(actor, READ_ROLES | ADMIN_ROLES, "查看调阅记录 / read the access log")
        await self.get(recording_id, actor)
        return await self.repo.access_log(recording_id)

    # -- linking unmatched recordings ---------------------------------------------

    async def link(self, recording_id: str, actor: Actor, link: Link) -> Recording:
        """Attach an unmatched recording to its call; rewraps its data key under the
        creditor's KEK (audio untouched). Retention never shrinks."""
        _require_role(actor, ADMIN_ROLES, "关联录音 / link recordings")
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
        _require_role(actor, ADMIN_ROLES, "轮换密钥 / rotate keys")
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
            await self.repo.update(rec.evolve(kek_id=kek_id, wrapped_key=wrapped))
            rewrapped += 1
        return rewrapped

    async def retire_keys(self, scope: str, actor: Actor, *, grace: timedelta = timedelta(hours=1)) -> RotationReport:
        """Destroy the superseded KEKs of `scope` (old backups wrapped under them become
        unreadable). Only keys superseded more than `grace` ago: an ingest that fetched
        the old key just before the rotation has committed by then; whatever is still
        wrapped under them is rewrapped first, so nothing readable is lost."""
        _require_role(actor, ADMIN_ROLES, "退役密钥 / retire keys")
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
        _require_role(actor, ADMIN_ROLES, "销毁委托方密钥 / destroy creditor keys")
        count = sum(1 for r in await self.repo.find(RecordingFilter(creditors=frozenset({creditor}), limit=None)))
        await asyncio.to_thread(self.keys.destroy, creditor)
        return count

    # -- legal hold ----------------------------------------------------------------

    async def place_hold(self, recording_id: str, actor: Actor, reason: str | None) -> Recording:
        _require_role(actor, HOLD_ROLES, "设置法律保全 / place legal holds")
        reason = _require_reason(reason, "保全原因 / hold reason (投诉、诉讼)")
        rec = await self.get(recording_id, actor)
        if rec.state == "destroyed":
            raise RecordingDestroyed(f"录音已销毁 / recording {recording_id} was destroyed")
        held = rec.evolve(hold=LegalHold(reason=reason, by=actor.user, at=self.clock()))
        # The store's hold first: if the row then fails, the blob is merely held.
        await self._mirror_hold(held, True)
        await self.repo.update(held)
        return held

    async def release_hold(self, recording_id: str, actor: Actor) -> Recording:
        _require_role(actor, HOLD_ROLES, "解除法律保全 / release legal holds")
        rec = await self.get(recording_id, actor)
        released = rec.evolve(hold=None)
        await self.repo.update(released)
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
        _require_role(actor, HOLD_ROLES, "设置法律保全 / place legal holds")
        reason = _require_reason(reason, "保全原因 / hold reason (投诉、诉讼)")
        if not actor.sees(creditor):
            raise NoSuchRecording(f"案件不存在 / no such case {case_id}")
        hold = CaseHold(creditor=creditor, case_id=case_id, reason=reason, by=actor.user, at=self.clock())
        if self._store_locks:
            for rec in await self._case_recordings(creditor, case_id):
                await self._mirror_hold(rec, True)
        await self.repo.put_case_hold(hold)
        return hold

    async def release_case_hold(self, creditor: str, case_id: str, actor: Actor) -> bool:
        _require_role(actor, HOLD_ROLES, "解除法律保全 / release legal holds")
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

    # -- purge under dual control ---------------------------------------------------

    async def plan_purge(self, actor: Actor, *, creditor: str | None = None) -> PurgePlan:
        """What is due today (dry run): nothing is stored or destroyed."""
        _require_role(actor, PURGE_REQUEST_ROLES, "申请销毁 / request purges")
        today = self.clock().date()
        flt = RecordingFilter(creditors=frozenset({creditor}) if creditor else None, limit=None)
        due: builtins.list[Recording] = []
        held: builtins.list[Recording] = []
        for rec in await self.list(actor, flt):
            if rec.state == "destroyed" or not is_due(rec.retain_until, today):
                continue
            (held if await self.is_held(rec) else due).append(rec)
        return PurgePlan(as_of=today, due=tuple(due), held=tuple(held))

    async def request_purge(self, actor: Actor, *, creditor: str | None = None, dry_run: bool = False) -> PurgePlan:
        """An operator (admin) asks to destroy what is due; a different person approves."""
        plan = await self.plan_purge(actor, creditor=creditor)
        if dry_run:
            return plan
        if not plan.due:
            raise InvalidRequest("没有到期可销毁的录音 / nothing is due for destruction")
        request = PurgeRequest(
            purge_id=uuid.uuid4().hex,
            requested_by=actor.user,
            requested_at=self.clock(),
            as_of=plan.as_of,
            recording_ids=tuple(r.recording_id for r in plan.due),
        )
        await self.repo.add_purge(request)
        return replace(plan, request=request)

    async def get_purge(self, purge_id: str, actor: Actor) -> PurgeRequest:
        _require_role(actor, PURGE_REQUEST_ROLES | PURGE_APPROVE_ROLES, "查看销毁申请 / read purges")
        purge = await self.repo.get_purge(purge_id)
        if purge is None or not await self._purge_visible(purge, actor):
            raise NoSuchPurge(f"销毁申请不存在 / no such purge {purge_id}")
        return purge

    async def _purge_visible(self, purge: PurgeRequest, actor: Actor) -> bool:
        """A creditor-scoped user sees a purge only when it covers nothing outside
        their creditors (unmatched recordings belong to none)."""
        if actor.creditors is None:
            return True
        for rid in purge.recording_ids:
            rec = await self.repo.get(rid)
            if rec is not None and rec.creditor is not None and not actor.sees(rec.creditor):
                return False
        return True

    async def pending_purges(self, actor: Actor) -> builtins.list[PurgeRequest]:
        """Purge requests waiting for their second person (those `actor` may see)."""
        _require_role(actor, PURGE_REQUEST_ROLES | PURGE_APPROVE_ROLES, "查看销毁申请 / read purges")
        return [p for p in await self.repo.pending_purges() if await self._purge_visible(p, actor)]

    async def approve_purge(self, purge_id: str, actor: Actor) -> PurgeRequest:
        """The second person (supervisor or compliance, not the requester) approves:
        data keys are destroyed, blobs deleted, and each recording is written into the
        destruction register. Recordings held or no longer due are skipped."""
        _require_role(actor, PURGE_APPROVE_ROLES, "批准销毁 / approve purges")
        purge = await self.get_purge(purge_id, actor)
        if purge.state != "pending":
            raise PurgeNotPending(f"销毁申请已处理 / purge {purge_id} is {purge.state}")
        if actor.user == purge.requested_by:
            raise DualControlViolation(
                "申请人与批准人须为不同人员 / the approver must be a different person from the requester",
                requested_by=purge.requested_by,
            )
        recs = [await self.repo.get(rid) for rid in purge.recording_ids]
        outside = sorted({r.creditor for r in recs if r is not None and r.creditor is not None and not actor.sees(r.creditor)})
        if outside:
            # All or nothing: an approver witnesses the whole request or none of it.
            # (Unmatched recordings belong to no creditor; any approver may witness them.)
            raise Forbidden(
                f"销毁申请包含您无权查看的委托方 / the purge covers creditors you are not cleared for: {', '.join(outside)}",
                creditors=outside,
            )
        # The claim is the one atomic step: of simultaneous approvals exactly one moves
        # the request out of "pending"; the others are refused before destroying anything.
        claimed = await self.repo.claim_purge(purge_id, actor.user, self.clock())
        if claimed is None:
            raise PurgeNotPending(f"销毁申请已处理 / purge {purge_id} was already approved")
        purge = claimed
        today = self.clock().date()
        destroyed: builtins.list[str] = []
        skipped: builtins.list[str] = []
        for rid, rec in zip(purge.recording_ids, recs):
            if rec is not None:
                rec = await self.repo.get(rid)  # re-read: a hold may have come meanwhile
            if (
                rec is None
                or rec.state == "destroyed"
                or not is_due(rec.retain_until, today)
                or await self.is_held(rec)
            ):
                skipped.append(rid)
                continue
            if await self._destroy(rec, purge, approver=actor.user):
                destroyed.append(rid)
            else:
                skipped.append(rid)
        done = replace(purge, destroyed=tuple(destroyed), skipped=tuple(skipped))
        await self.repo.update_purge(done)
        return done

    async def _destroy(self, rec: Recording, purge: PurgeRequest, *, approver: str) -> bool:
        """Destroy `rec` with its register entry; False when another purge destroyed it
        first. A register seq taken by another process is retried with the new head."""
        for _ in range(_REGISTER_RETRIES):
            try:
                await self._destroy_once(rec, purge, approver=approver)
            except AlreadyDestroyed:
                return False
            except Conflict:
                continue
            # The key is gone, so the blob is already unreadable; a crash here, or a
            # store lock still running (compliance mode, a lock ending later in UTC than
            # the local day), leaves ciphertext that recover() deletes.
            await self._delete_blob(rec.recording_id)
            return True
        raise Conflict("登记表持续被占用 / the destruction register stayed busy; approve again")

    async def _register_tip(self) -> tuple[int, str, RegisterHead | None]:
        """(last seq, last hash, head): from the head, else (a register kept before
        heads) from its last entry."""
        head = await self.repo.register_head()
        if head is not None:
            return head.seq, head.entry_hash, head
        last = await self.repo.last_destruction()
        return (last.seq, last.entry_hash, None) if last else (0, register.GENESIS, None)

    def _next_head(self, head: RegisterHead | None, seq: int, entry_hash: str) -> RegisterHead:
        if self.sealer is None:
            return RegisterHead(seq, entry_hash, None, None)
        keyed_from = head.keyed_from if head is not None and head.keyed_from is not None else seq
        return RegisterHead(seq, entry_hash, keyed_from, self.sealer.head_mac(register.CHAIN, seq, entry_hash, keyed_from))

    async def anchor_register(self) -> bool:
        """Put a register kept before the evidence key under it: a MAC'd head whose
        next entry is the first keyed one (the entries so far keep their SHA-256)."""
        if self.sealer is None:
            return False
        head = await self.repo.register_head()
        if head is not None and head.mac is not None:
            return False
        last = await self.repo.last_destruction()
        if last is None:
            return False
        keyed_from = last.seq + 1
        mac = self.sealer.head_mac(register.CHAIN, last.seq, last.entry_hash, keyed_from)
        return await self.repo.anchor_register_head(RegisterHead(last.seq, last.entry_hash, keyed_from, mac))

    async def _destroy_once(self, rec: Recording, purge: PurgeRequest, *, approver: str) -> None:
        now = self.clock()
        async with self._register_lock:
            last_seq, last_hash, head = await self._register_tip()
            seq = last_seq + 1
            entry = register.seal(
                DestructionEntry(
                    seq=seq,
                    recording_id=rec.recording_id,
                    case_id=rec.case_id,
                    creditor=rec.creditor,
                    sha256=rec.sha256,
                    retain_until=rec.retain_until,
                    operator=purge.requested_by,
                    approver=approver,
                    purge_id=purge.purge_id,
                    destroyed_at=now,
                    method=DESTRUCTION_METHOD,
                    prev_hash=last_hash,
                    entry_hash="",
                ),
                self.sealer.link if self.sealer is not None else None,
            )
            gone = rec.evolve(state="destroyed", wrapped_key=None, kek_id=None, destroyed_at=now, hold=None)
            await self.repo.destroy(gone, entry, events=(events.purged(rec, entry),),
                                    head=self._next_head(head, seq, entry.entry_hash))

    async def destruction_register(self, actor: Actor) -> builtins.list[DestructionEntry]:
        _require_role(actor, PURGE_REQUEST_ROLES | PURGE_APPROVE_ROLES, "查看销毁登记 / read the register")
        entries = await self.repo.destruction_register()
        if actor.creditors is None:
            return entries
        return [e for e in entries if actor.sees(e.creditor)]


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


async def _stop_writer(writer: envelope.PipelinedEnvelopeWriter) -> None:
    """Stop the writer's thread and wait for it off the loop (it may be inside a
    write to a stalled disk); only then may the temporary be closed, or the thread
    could write into whatever file reuses the descriptor. Cancelled meanwhile, wait
    here: a blocked loop beats ciphertext in the wrong file."""
    writer.abort(timeout=0)  # stop requested; the thread ends after the slot in hand
    if writer.stopped:
        return
    try:
        await asyncio.to_thread(writer.abort, SEAL_TIMEOUT_S)
    except asyncio.CancelledError:
        writer.abort(SEAL_TIMEOUT_S)
        raise


async def _wait_room(room: asyncio.Event) -> None:
    try:
        async with asyncio.timeout(SEAL_TIMEOUT_S):
            await room.wait()
    except TimeoutError as exc:
        raise SealingStalled(
            f"录音加密写入停滞 / sealing made no progress for {SEAL_TIMEOUT_S:.0f} s (storage stalled?)"
        ) from exc


async def _aiter(body: AsyncIterable[bytes] | Iterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(body, AsyncIterable):
        async for piece in body:
            yield piece
    else:
        for piece in body:
            yield piece


def _require_role(actor: Actor, roles: frozenset[str], what: str) -> None:
    if actor.role not in roles:
        raise Forbidden(
            f"角色 {actor.role} 无权{what.split(' / ')[0]} / role {actor.role} may not {what.split(' / ')[1]}",
            role=actor.role,
            allowed=sorted(roles),
        )


def _require_reason(reason: str | None, what: str) -> str:
    text = (reason or "").strip()
    if not text:
        raise ReasonRequired(f"须填写{what.split(' / ')[0]} / a {what.split(' / ')[1]} is required")
    if len(text) > _MAX_REASON:
        raise InvalidRequest(f"原因过长 / reason longer than {_MAX_REASON} characters")
    return text
