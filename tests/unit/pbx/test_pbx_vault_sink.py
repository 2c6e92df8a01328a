"""The recording sink over the real vault core (in-memory stores): streamed, sealed, aborted."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from adapters.pbx.audio import stereo_s16, wav_header
from adapters.pbx.service import VaultSink
from recordings.errors import NoSuchRecording
from recordings.memory import InMemoryBlobStore, InMemoryKeyProvider, InMemoryRecordingRepository
from recordings.model import Actor, IngestRequest, Link
from recordings.vault import Vault

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)
PBX = Actor("pbx-ua", "pbx")
QA = Actor("qa-1", "qa", frozenset({"bank-a"}))


@pytest.fixture
def vault() -> Vault:
    keys = InMemoryKeyProvider(lambda: NOW)
    keys.create("bank-a")
    return Vault(InMemoryRecordingRepository(), InMemoryBlobStore(), keys, clock=lambda: NOW)


def ingest_request(attempt_id: str) -> IngestRequest:
    return IngestRequest(source_kind="attempt", source_id=attempt_id, started_at=NOW, media_type="audio/wav",
                         link=Link(creditor="bank-a", case_id="C-1", agent="col-a", number="+8613800000001"))


async def test_a_streamed_recording_is_sealed_into_the_vault_and_decrypts_to_the_same_bytes(vault: Vault) -> None:
    sink = VaultSink(vault, ingest_request("att-1"), PBX, max_chunks=2)
    pieces = [wav_header(None)] + [stereo_s16(bytes([0x90 + i]) * 160, bytes([0x70]) * 160) for i in range(20)]
    for piece in pieces:  # more pieces than the queue holds: the vault reads while we write
        await sink.write(piece)
    recording_id = await sink.seal(final_header=wav_header(sum(map(len, pieces[1:]))), duration=0.4)
    assert recording_id
    rec = await vault.get(recording_id, QA)
    assert (rec.case_id, rec.agent, rec.source_id) == ("C-1", "col-a", "att-1")
    audio = await vault.open_audio(recording_id, QA, reason="unit test")
    assert audio.read_all() == wav_header(sum(map(len, pieces[1:]))) + b"".join(pieces[1:])


async def test_an_aborted_recording_leaves_nothing_in_the_vault(vault: Vault) -> None:
    sink = VaultSink(vault, ingest_request("att-2"), PBX)
    await sink.write(wav_header(None))
    await sink.write(stereo_s16(b"\x90" * 160, b"\x70" * 160))
    await sink.abort("call ended")
    assert await vault.list(QA) == []
    with pytest.raises(NoSuchRecording):
        await vault.get("att-2", QA)


async def test_a_vault_refusing_the_stream_surfaces_on_write(vault: Vault) -> None:
    sink = VaultSink(vault, ingest_request("att-3"), PBX, max_chunks=1)
    with pytest.raises(Exception) as exc:  # noqa: PT011 - the vault's own error type
        for _ in range(10):
            await sink.write(b"NOT A WAV FILE AT ALL")
    assert "wav" in str(exc.value).lower()


async def test_a_sealed_call_is_stored_with_its_final_wav_header_duration_and_sha256(vault: Vault) -> None:
    import hashlib
    import io
    import wave

    sink = VaultSink(vault, ingest_request("att-final"), PBX, max_chunks=4)
    frames = [stereo_s16(bytes([0x80 + (i % 64)]) * 160, bytes([0x60]) * 160) for i in range(2000)]  # 40 s, > one batch
    await sink.write(wav_header(None))
    for frame in frames:
        await sink.write(frame)
    audio = b"".join(frames)
    recording_id = await sink.seal(final_header=wav_header(len(audio)), duration=len(audio) / 32000)
    rec = await vault.get(recording_id, QA)
    stored = (await vault.open_audio(recording_id, QA, reason="unit test")).read_all()
    assert stored == wav_header(len(audio)) + audio  # not the streaming header
    with wave.open(io.BytesIO(stored)) as w:
        assert w.getnframes() == len(audio) // 4
    assert rec.duration_s == 40.0
    assert rec.sha256 == hashlib.sha256(stored).hexdigest()
    assert list(vault.blobs.blobs) == [recording_id]  # the draft is gone
