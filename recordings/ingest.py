"""The vault's ingest: a recording streamed in, sealed and published, its metadata
committed last; and `recover()`, which clears what a crash left half-written.

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
import re
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta

# The service's one masking rule, so a recording shows a number as logs and decisions do.
from policy.numbers import mask_number
from recordings import envelope, events
from recordings.errors import (
    Conflict,
    DuplicateSource,
    InvalidRequest,
    RecordingTooLarge,
    SealingStalled,
    UnsupportedMediaType,
    VaultError,
)
from recordings.model import (
    INGEST_ROLES,
    SOURCE_KINDS,
    UNMATCHED_SCOPE,
    Actor,
    IngestRequest,
    Recording,
    number_digest,
)
from recordings.retention import started_at_problem
from recordings.vault_base import VaultBase, require_role


SEAL_TIMEOUT_S = 300.0  # longest wait on the writer's thread (one batch, or the last ones)
_SOURCE_ID = re.compile(r"^[A-Za-z0-9@._:+\-]{1,200}$")
# Called once the body has ended: the bytes that replace the start of the recording
# (a WAV's final header) and its duration, or None to keep the bytes as streamed.
Finalize = Callable[[], "tuple[bytes, float | None] | None"]
DRAFT_SUFFIX = "-draft"


def sniff_media(head: bytes, media_type: str) -> bool:
    """Do the first bytes look like the declared audio type?"""
    if media_type == "audio/wav":
        return head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE"
    if media_type == "audio/mpeg":
        return head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)
    if media_type == "audio/ogg":
        return head[:4] == b"OggS"
    return False


@dataclass(frozen=True, slots=True)
class IngestResult:
    recording: Recording
    created: bool  # False when the source id had already been ingested


class IngestSteps(VaultBase):
    """Ingest and crash recovery of `recordings.vault.Vault`."""

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
        require_role(actor, INGEST_ROLES, "上传录音 / ingest recordings")
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
            if existing.creditor is not None and not actor.sees(existing.creditor):
                # Another creditor's recording of that source: its id, checksum and
                # retention are not this uploader's to read.
                raise Conflict(
                    f"该来源已有录音 / a recording of {req.source_kind} {req.source_id!r} is already stored"
                    " under another creditor")
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
