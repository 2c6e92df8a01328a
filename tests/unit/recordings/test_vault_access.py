"""Retrieval: reasons, the access log, creditor scoping, ranges, integrity on read."""

from __future__ import annotations

import pytest

from recordings.errors import (
    Forbidden,
    IntegrityError,
    NoSuchRecording,
    RangeNotSatisfiable,
    ReasonRequired,
)
from recordings.model import Actor, RecordingFilter
from recordings.vault import parse_http_range

from recordings.testing import ADMIN, COMPLIANCE, PBX, QA_A, QA_B, SUP_A, request, wav_bytes


@pytest.fixture
async def stored(vault):
    audio = wav_bytes(10.0, tone_hz=300)
    rec = (await vault.ingest(request("acc-1"), [audio], PBX)).recording
    return rec, audio


async def test_every_audio_read_is_logged_with_user_reason_range_and_client(vault, stored, clock) -> None:
    rec, audio = stored
    (await vault.open_audio(rec.recording_id, QA_A, reason="周检抽查 weekly QA", client="10.0.0.5")).read_all()
    clock.advance(minutes=5)
    part = await vault.open_audio(rec.recording_id, SUP_A, reason="complaint 投诉 #88", byte_range="bytes=1000-1999", client="10.0.0.6")
    assert part.read_all() == audio[1000:2000]
    log = await vault.access_log(rec.recording_id, COMPLIANCE)
    assert [(e.user, e.reason, e.range_start, e.range_end, e.client) for e in log] == [
        ("qa-li", "周检抽查 weekly QA", 0, len(audio) - 1, "10.0.0.5"),
        ("sup-chen", "complaint 投诉 #88", 1000, 1999, "10.0.0.6"),
    ]
    assert log[1].at > log[0].at


@pytest.mark.parametrize("reason", [None, "", "   "])
async def test_a_read_without_a_reason_is_refused_and_not_logged(vault, stored, reason) -> None:
    rec, _ = stored
    with pytest.raises(ReasonRequired, match="借阅原因"):
        await vault.open_audio(rec.recording_id, QA_A, reason=reason)
    assert await vault.access_log(rec.recording_id, COMPLIANCE) == []


async def test_another_creditors_user_cannot_see_list_or_hear_the_recording(vault, stored) -> None:
    rec, _ = stored
    with pytest.raises(NoSuchRecording):
        await vault.open_audio(rec.recording_id, QA_B, reason="curious")
    with pytest.raises(NoSuchRecording):
        await vault.access_log(rec.recording_id, QA_B)
    assert await vault.list(QA_B) == []
    assert await vault.list(QA_B, RecordingFilter(creditors=frozenset({"bank-a"}))) == []
    assert [r.recording_id for r in await vault.list(QA_A)] == [rec.recording_id]


async def test_collectors_may_not_listen(vault, stored) -> None:
    rec, _ = stored
    with pytest.raises(Forbidden):
        await vault.open_audio(rec.recording_id, Actor("c-1", "collector", frozenset({"bank-a"})), reason="x")


async def test_recordings_are_found_by_case_agent_number_and_date(vault, clock) -> None:
    from datetime import datetime, timezone

    day1 = datetime(2026, 11, 20, 9, tzinfo=timezone.utc)
    day2 = datetime(2026, 11, 22, 9, tzinfo=timezone.utc)
    r1 = (await vault.ingest(request("f-1", case_id="c-1", agent="ag-1", number="+8613800000001", started_at=day1), [wav_bytes(1)], PBX)).recording
    r2 = (await vault.ingest(request("f-2", case_id="c-2", agent="ag-2", number="+8613800000002", started_at=day2), [wav_bytes(1)], PBX)).recording
    ids = lambda rs: [r.recording_id for r in rs]  # noqa: E731
    assert ids(await vault.list(QA_A, RecordingFilter(case_id="c-2"))) == [r2.recording_id]
    assert ids(await vault.list(QA_A, RecordingFilter(agent="ag-1"))) == [r1.recording_id]
    assert ids(await vault.list(QA_A, number="+8613800000002")) == [r2.recording_id]
    assert ids(await vault.list(QA_A, RecordingFilter(started_from=datetime(2026, 11, 21, tzinfo=timezone.utc)))) == [r2.recording_id]
    assert ids(await vault.list(QA_A, RecordingFilter(started_to=datetime(2026, 11, 21, tzinfo=timezone.utc)))) == [r1.recording_id]


@pytest.mark.parametrize(
    ("header", "expected"),
    [("bytes=0-99", (0, 99)), ("bytes=500-", (500, 999)), ("bytes=-100", (900, 999)),
     ("bytes=900-5000", (900, 999)), (None, None)],
)
def test_http_ranges_resolve_to_inclusive_byte_spans(header, expected) -> None:
    assert parse_http_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5-1", "bytes=0-1,5-9", "lines=1-2", "bytes=-0"])
def test_unsatisfiable_or_multi_ranges_are_refused(header) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_http_range(header, 1000)


async def test_the_last_second_can_be_read_alone(vault, stored) -> None:
    rec, audio = stored
    second = 8000 * 2 * 2
    stream = await vault.open_audio(rec.recording_id, QA_A, reason="seek", byte_range=f"bytes=-{second}")
    assert stream.partial and stream.start == len(audio) - second
    assert stream.read_all() == audio[-second:]


async def test_a_whole_read_fails_when_the_stored_sha256_does_not_match(vault, stored, repo) -> None:
    rec, _ = stored
    await repo.update(rec.evolve(sha256="0" * 64))
    stream = await vault.open_audio(rec.recording_id, QA_A, reason="audit")
    with pytest.raises(IntegrityError, match="SHA-256"):
        stream.read_all()


async def test_a_tampered_blob_is_reported_on_read_and_by_verify(vault, stored, blobs) -> None:
    rec, _ = stored
    bad = bytearray(blobs.blobs[rec.recording_id])
    bad[-100] ^= 0x01
    blobs.blobs[rec.recording_id] = bytes(bad)
    with pytest.raises(IntegrityError):
        (await vault.open_audio(rec.recording_id, QA_A, reason="audit")).read_all()
    other = (await vault.ingest(request("acc-2"), [wav_bytes(1)], PBX)).recording
    results = {r.recording_id: r for r in await vault.verify(ADMIN)}
    assert not results[rec.recording_id].ok and results[other.recording_id].ok


async def test_a_truncated_blob_is_reported_before_any_audio_is_produced(vault, stored, blobs) -> None:
    rec, _ = stored
    blobs.blobs[rec.recording_id] = blobs.blobs[rec.recording_id][:-(64 * 1024 + 16)]
    with pytest.raises(IntegrityError, match="truncated"):
        await vault.open_audio(rec.recording_id, QA_A, reason="audit")
