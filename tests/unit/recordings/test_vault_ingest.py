"""Ingest: sealing, idempotency, unmatched recordings, media checks, retention."""

from __future__ import annotations

import io
import wave
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone

import pytest

from recordings.errors import ConfigError, Forbidden, InvalidRequest, RecordingTooLarge, UnsupportedMediaType
from recordings.model import Link, RecordingFilter
from recordings.retention import RetentionPolicy
from recordings.testing import wav_stream

from recordings.testing import ADMIN, COMPLIANCE, PBX, QA_A, QA_B, request, wav_bytes


async def test_a_wav_recording_comes_back_as_the_same_playable_wav(vault, blobs) -> None:
    audio = wav_bytes(10.0, tone_hz=440)
    result = await vault.ingest(request("att-1"), wav_stream(10.0, tone_hz=440, piece=4000), PBX)
    assert result.created
    rec = result.recording
    assert rec.size == len(audio) and rec.state == "stored"
    assert rec.number_masked == "138****0001"
    # only ciphertext is stored
    assert audio[44:1044] not in blobs.blobs[rec.recording_id]
    got = (await vault.open_audio(rec.recording_id, QA_A, reason="weekly QA 周检")).read_all()
    assert got == audio
    with wave.open(io.BytesIO(got)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (2, 8000, 80000)


async def test_the_same_attempt_uploaded_twice_is_stored_once(vault, blobs) -> None:
    first = await vault.ingest(request("att-2"), [wav_bytes(1)], PBX)
    second = await vault.ingest(request("att-2"), [wav_bytes(2)], PBX)
    assert not second.created
    assert second.recording.recording_id == first.recording.recording_id
    assert list(blobs.blobs) == [first.recording.recording_id]
    assert len(await vault.list(ADMIN)) == 1


async def test_a_pbx_of_another_creditor_reusing_a_source_gets_a_conflict_not_the_recording(vault) -> None:
    from recordings.errors import Conflict
    from recordings.model import Actor

    first = await vault.ingest(request("call-shared", kind="call"), [wav_bytes(1)], PBX)
    pbx_b = Actor("pbx-b", "pbx", frozenset({"bank-b"}))
    with pytest.raises(Conflict) as caught:
        await vault.ingest(request("call-shared", kind="call", creditor="bank-b"), [wav_bytes(1)], pbx_b)
    assert first.recording.recording_id not in str(caught.value.message)
    assert first.recording.sha256 not in str(caught.value.details)
    pbx_a = Actor("pbx-a", "pbx", frozenset({"bank-a"}))
    again = await vault.ingest(request("call-shared", kind="call"), [wav_bytes(1)], pbx_a)
    assert not again.created and again.recording.recording_id == first.recording.recording_id


async def test_the_same_id_as_attempt_and_as_call_are_different_sources(vault) -> None:
    a = await vault.ingest(request("x-1", kind="attempt"), [wav_bytes(1)], PBX)
    c = await vault.ingest(request("x-1", kind="call"), [wav_bytes(1)], PBX)
    assert a.recording.recording_id != c.recording.recording_id


async def test_a_recording_of_an_unknown_call_is_kept_encrypted_and_listed_for_admins(vault, blobs) -> None:
    audio = wav_bytes(2)
    rec = (await vault.ingest(request("unknown-call@pbx", kind="call", creditor=None), [audio], PBX)).recording
    assert rec.state == "unmatched" and rec.creditor is None
    assert rec.recording_id in blobs.blobs
    assert [r.recording_id for r in await vault.list(ADMIN, RecordingFilter(state="unmatched"))] == [rec.recording_id]
    assert await vault.list(QA_A) == [] and await vault.list(COMPLIANCE) == []


async def test_linking_an_unmatched_recording_makes_it_readable_by_its_creditor_only(vault) -> None:
    audio = wav_bytes(2)
    rec = (await vault.ingest(request("lost-call", kind="call", creditor=None), [audio], PBX)).recording
    linked = await vault.link(rec.recording_id, ADMIN, Link("bank-a", "case-9", "agent-1", "+8613900000002"))
    assert linked.state == "stored" and linked.kek_id != rec.kek_id
    assert linked.number_masked == "139****0002"
    assert (await vault.open_audio(rec.recording_id, QA_A, reason="complaint 投诉")).read_all() == audio
    assert await vault.list(QA_B) == []


async def test_a_recording_masks_a_foreign_number_by_the_services_one_rule(vault) -> None:
    rec = (await vault.ingest(request("lost-abroad", kind="call", creditor=None), [wav_bytes(1)], PBX)).recording
    linked = await vault.link(rec.recording_id, ADMIN, Link("bank-a", "case-10", "agent-1", "+12125550100"))
    assert linked.number_masked == "+121****0100"


async def test_a_body_of_another_media_type_is_refused_and_leaves_nothing(vault, blobs, repo) -> None:
    with pytest.raises(UnsupportedMediaType):
        await vault.ingest(request("att-3", media_type="video/mp4"), [wav_bytes(1)], PBX)
    with pytest.raises(UnsupportedMediaType):
        await vault.ingest(request("att-4", media_type="audio/ogg"), [wav_bytes(1)], PBX)
    assert blobs.blobs == {} and blobs.temporaries() == [] and repo.recordings == {}


async def test_mp3_and_ogg_bodies_are_accepted_by_their_signature(vault) -> None:
    mp3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(5000)
    ogg = b"OggS\x00\x02" + bytes(5000)
    assert (await vault.ingest(request("m-1", media_type="audio/mpeg"), [mp3], PBX)).created
    assert (await vault.ingest(request("o-1", media_type="audio/ogg"), [ogg], PBX)).created


async def test_a_recording_over_the_size_limit_is_refused_and_leaves_no_temporary(vault, blobs, repo) -> None:
    vault.max_size = 100_000
    with pytest.raises(RecordingTooLarge):
        await vault.ingest(request("att-5"), wav_stream(10.0), PBX)
    assert blobs.blobs == {} and blobs.temporaries() == [] and repo.recordings == {}


async def test_only_the_pbx_or_an_admin_may_upload(vault) -> None:
    with pytest.raises(Forbidden):
        await vault.ingest(request("att-6"), [wav_bytes(1)], QA_A)


async def test_retention_is_the_call_date_plus_the_creditor_retention(vault, clock) -> None:
    started = datetime(2026, 3, 1, 23, 0, tzinfo=timezone.utc)
    clock.now = started + timedelta(minutes=5)  # uploaded as the call ended
    a = (await vault.ingest(request("r-a", creditor="bank-a", started_at=started), [wav_bytes(1)], PBX)).recording
    b = (await vault.ingest(request("r-b", creditor="bank-b", started_at=started), [wav_bytes(1)], PBX)).recording
    assert a.retain_until == date(2028, 2, 29)  # 730 days
    assert b.retain_until == date(2029, 2, 28)  # 1095 days


async def test_a_backdated_call_is_still_kept_the_creditors_retention_from_the_day_of_upload(vault, clock) -> None:
    old = datetime(2001, 1, 1, 9, tzinfo=timezone.utc)
    rec = (await vault.ingest(request("r-old", creditor="bank-b", started_at=old), [wav_bytes(1)], PBX)).recording
    assert rec.retain_until == clock().date() + timedelta(days=1095)


async def test_a_known_attempts_recording_is_kept_from_the_attempts_time(vault, clock) -> None:
    attempt_at = clock() - timedelta(minutes=3)
    req = replace(request("r-att", started_at=attempt_at + timedelta(seconds=20)), attempt_at=attempt_at)
    rec = (await vault.ingest(req, [wav_bytes(1)], PBX)).recording
    assert rec.retain_until == attempt_at.date() + timedelta(days=730)


@pytest.mark.parametrize("offset", [timedelta(hours=-2), timedelta(days=-3650), timedelta(hours=1, seconds=1)])
async def test_a_started_at_far_from_the_known_attempts_time_is_refused_before_anything_is_stored(
    vault, repo, blobs, clock, offset,
) -> None:
    attempt_at = clock() - timedelta(minutes=3)
    req = replace(request("r-far", started_at=attempt_at + offset), attempt_at=attempt_at)
    with pytest.raises(InvalidRequest, match="started_at") as caught:
        await vault.ingest(req, [wav_bytes(1)], PBX)
    assert caught.value.details == {"field": "started_at"}
    assert repo.recordings == {} and blobs.blobs == {}


@pytest.mark.parametrize("bad", ["365d", "2y", "", "730", -1])
def test_a_retention_shorter_than_two_years_or_not_in_days_is_refused(bad) -> None:
    with pytest.raises(ConfigError, match="recordings.creditors.bank-x.retention"):
        RetentionPolicy.from_config("730d", {"bank-x": bad})


async def test_a_cut_upload_leaves_no_recording_and_no_temporary(vault, blobs, repo) -> None:
    class CutUpload(Exception):
        pass

    def body():
        yield wav_bytes(3)[:50_000]
        raise CutUpload

    with pytest.raises(CutUpload):
        await vault.ingest(request("att-7"), body(), PBX)
    assert blobs.blobs == {} and blobs.temporaries() == [] and repo.recordings == {}
    # and the PBX can retry the same attempt
    assert (await vault.ingest(request("att-7"), [wav_bytes(3)], PBX)).created


def test_the_recordings_table_is_typed_with_defaults_and_per_creditor_retention() -> None:
    from pathlib import Path

    from recordings.config import parse_recordings_config

    cfg = parse_recordings_config({"creditors": {"bank-b": {"retention": "1095d"}}}, "/srv/dg")
    assert cfg.data_dir == Path("/srv/dg/recordings") and cfg.key_file == Path("/srv/dg/keys/recordings.keys")
    assert cfg.retention.days_for("bank-b") == 1095 and cfg.retention.days_for("bank-a") == 730
    assert cfg.max_size == 2048 * 1024 * 1024 and cfg.inbox is None and cfg.creditors == ("bank-b",)


@pytest.mark.parametrize(
    ("raw", "path"),
    [({"retension": "730d"}, "recordings.retension"),
     ({"keys": "vault"}, "recordings.keys"),
     ({"max_size_mb": "big"}, "recordings.max_size_mb"),
     ({"creditors": {"bank-b": {"retain": "1095d"}}}, "recordings.creditors.bank-b.retain"),
     ({"creditors": {"Bank-B": {"retention": "1095d"}}}, "recordings.creditors.Bank-B"),
     ({"retention": "30d"}, "recordings.retention")],
)
def test_a_wrong_recordings_key_is_refused_with_its_path(raw, path) -> None:
    from recordings.config import parse_recordings_config

    with pytest.raises(ConfigError, match=path.replace(".", r"\.")):
        parse_recordings_config(raw)


async def test_two_concurrent_uploads_of_one_attempt_leave_one_recording_and_one_blob(vault, blobs, repo) -> None:
    import asyncio

    both_started = asyncio.Barrier(2)
    audio = wav_bytes(2)

    async def body():
        yield audio[:1000]
        await both_started.wait()  # both are past the idempotency check and streaming
        yield audio[1000:]

    a, b = await asyncio.gather(
        vault.ingest(request("att-race"), body(), PBX), vault.ingest(request("att-race"), body(), PBX)
    )
    assert a.recording.recording_id == b.recording.recording_id
    assert sorted([a.created, b.created]) == [False, True]
    assert list(blobs.blobs) == [a.recording.recording_id] and len(repo.recordings) == 1


# -- the sealing pipeline inside ingest ------------------------------------------------

import asyncio  # noqa: E402
import hashlib  # noqa: E402
import threading  # noqa: E402

from recordings.memory import InMemoryBlobStore  # noqa: E402
from recordings.vault import Vault  # noqa: E402

WAIT = 10.0  # an upper bound against hanging, never a pacing sleep


class _StoreWithWriter(InMemoryBlobStore):
    """An in-memory store whose temporaries run `hook(writer, data)` on every write."""

    def __init__(self, hook) -> None:
        super().__init__()
        self.hook = hook

    def begin(self, key: str, **_lock: object):
        inner = super().begin(key)
        hook = self.hook

        class Writer:
            def write(self, data) -> int:
                hook(data)
                return inner.write(bytes(data))

            def sync(self) -> None:
                inner.sync()

            def publish(self) -> None:
                inner.publish()

            def abort(self) -> None:
                inner.abort()

        return Writer()


def _vault_on(blobs, repo, keys, clock, **kw) -> Vault:
    return Vault(repo, blobs, keys, clock=clock, max_size=64 * 1024 * 1024, **kw)


async def test_a_disk_failure_mid_upload_is_raised_as_itself_and_leaves_nothing(repo, keys, clock) -> None:
    written = 0

    def hook(data) -> None:
        nonlocal written
        written += len(data)
        if written > 3 * 1024 * 1024:  # on the writer's thread, a few batches in
            raise OSError(28, "No space left on device")

    blobs = _StoreWithWriter(hook)
    vault = _vault_on(blobs, repo, keys, clock)
    with pytest.raises(OSError, match="No space left"):
        await vault.ingest(request("att-disk-full"), wav_stream(300, tone_hz=330), PBX)
    assert blobs.blobs == {} and blobs.temporaries() == [] and repo.recordings == {}
    assert not [t for t in threading.enumerate() if t.name.startswith("envelope-")]


@pytest.mark.parametrize("parallel_hash", [False, True])
async def test_a_long_upload_is_sealed_and_hashed_exactly_with_the_hash_on_either_thread(
    repo, keys, clock, parallel_hash: bool
) -> None:
    blobs = InMemoryBlobStore()
    vault = _vault_on(blobs, repo, keys, clock, parallel_hash=parallel_hash)
    expected = hashlib.sha256(b"".join(wav_stream(200, tone_hz=523))).hexdigest()  # 6.4 MB
    rec = (await vault.ingest(request(f"att-long-{parallel_hash}"), wav_stream(200, tone_hz=523), PBX)).recording
    assert rec.sha256 == expected
    got = (await vault.open_audio(rec.recording_id, QA_A, reason="pipeline check")).read_all()
    assert hashlib.sha256(got).hexdigest() == expected


async def test_a_stalled_disk_holds_the_upload_back_without_blocking_the_event_loop(repo, keys, clock) -> None:
    gate = threading.Event()
    entered = threading.Event()

    def hook(data) -> None:
        if len(data) > 1000:  # sealed batches (the header goes through)
            entered.set()
            assert gate.wait(WAIT), "test never opened the gate"

    blobs = _StoreWithWriter(hook)
    vault = _vault_on(blobs, repo, keys, clock)
    offered = 0

    def body():
        nonlocal offered
        for piece in wav_stream(600, tone_hz=262):  # 19 MB
            offered += len(piece)
            yield piece

    task = asyncio.create_task(vault.ingest(request("att-stalled"), body(), PBX))
    assert await asyncio.to_thread(entered.wait, WAIT)
    # The loop still runs other work while the disk is stuck...
    for _ in range(50):
        await asyncio.sleep(0)
    assert not task.done()
    # ...and the upload is held back: a few 1 MiB batches taken, not the whole body.
    assert offered < 6 * 1024 * 1024
    gate.set()
    rec = (await asyncio.wait_for(task, WAIT)).recording
    assert rec.size == offered
    got = (await vault.open_audio(rec.recording_id, QA_A, reason="stall check")).read_all()
    assert got == b"".join(wav_stream(600, tone_hz=262))


async def test_an_upload_cancelled_while_the_disk_is_stalled_waits_for_the_writer_off_the_loop_and_leaves_nothing(
    repo, keys, clock
) -> None:
    gate = threading.Event()
    entered = threading.Event()

    def hook(data) -> None:
        if len(data) > 1000:
            entered.set()
            assert gate.wait(WAIT), "test never opened the gate"

    blobs = _StoreWithWriter(hook)
    vault = _vault_on(blobs, repo, keys, clock)
    task = asyncio.create_task(vault.ingest(request("att-cancelled"), wav_stream(600, tone_hz=294), PBX))
    assert await asyncio.to_thread(entered.wait, WAIT)
    task.cancel()
    for _ in range(50):  # the loop keeps running while the cancelled ingest waits for its writer
        await asyncio.sleep(0)
    assert not task.done()
    assert blobs.temporaries() != []  # not closed under the writer's feet
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT)
    assert blobs.blobs == {} and blobs.temporaries() == [] and repo.recordings == {}
    assert not [t for t in threading.enumerate() if t.name.startswith("envelope-")]
