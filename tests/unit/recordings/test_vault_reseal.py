"""Re-sealing a streamed recording with its final header: what is left when it fails,
and that the draft never outlives the ingest."""

from __future__ import annotations

import pytest

from recordings.errors import InvalidRequest
from recordings.testing import PBX, QA_A, request, wav_header, wav_stream


def streamed(seconds: float) -> tuple[list[bytes], int]:
    pieces = list(wav_stream(seconds, tone_hz=350))
    data = len(b"".join(pieces)) - 44
    pieces[0] = b"RIFF\xff\xff\xff\xff" + pieces[0][8:40] + b"\xff\xff\xff\xff" + pieces[0][44:]
    return pieces, data


async def test_a_replacement_head_longer_than_the_first_chunk_is_refused_and_nothing_stays(vault) -> None:
    pieces, _ = streamed(5.0)
    with pytest.raises(InvalidRequest, match="head"):
        await vault.ingest(request("reseal-long"), pieces, PBX, finalize=lambda: (b"x" * 70000, 5.0))
    assert vault.blobs.blobs == {} and await vault.list(QA_A) == []


async def test_a_failing_finalize_removes_the_draft_and_stores_nothing(vault) -> None:
    pieces, _ = streamed(5.0)

    def broken():
        raise RuntimeError("the bridge died before sealing")

    with pytest.raises(RuntimeError):
        await vault.ingest(request("reseal-broken"), pieces, PBX, finalize=broken)
    assert vault.blobs.blobs == {} and vault.blobs.temporaries() == []


async def test_finalize_returning_none_keeps_the_streamed_bytes(vault) -> None:
    pieces, _ = streamed(3.0)
    rec = (await vault.ingest(request("reseal-none"), pieces, PBX, finalize=lambda: None)).recording
    assert (await vault.open_audio(rec.recording_id, QA_A, reason="t")).read_all() == b"".join(pieces)
    assert list(vault.blobs.blobs) == [rec.recording_id]


async def test_a_draft_left_by_a_dead_process_has_no_row_and_recover_deletes_it(vault, clock) -> None:
    pieces, data = streamed(3.0)
    kept = (await vault.ingest(request("reseal-kept"), pieces, PBX, finalize=lambda: (wav_header(data), 3.0))).recording
    draft = kept.recording_id[:-1] + "0" + "-draft"  # what a process killed mid-reseal leaves
    vault.blobs.blobs[draft] = b"ciphertext whose data key died with the process"
    clock.advance(minutes=1)
    vault.blobs._clock = clock
    report = await vault.recover()
    assert report["orphans"] == 1 and list(vault.blobs.blobs) == [kept.recording_id]
