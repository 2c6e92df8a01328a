"""Key rotation and destruction of a creditor's keys."""

from __future__ import annotations

from datetime import timedelta

import pytest

from recordings.errors import Conflict, KeyDestroyed, NoSuchKey
from recordings.model import Actor
from recordings.testing import ADMIN, COMPLIANCE, PBX, QA_A, QA_B, SUP_A, request, wav_bytes


async def test_rotation_rewraps_every_data_key_and_everything_stays_readable(vault, keys, blobs) -> None:
    audios = {}
    for i in range(3):
        audio = wav_bytes(1, tone_hz=200 + i * 100)
        rec = (await vault.ingest(request(f"k-{i}"), [audio], PBX)).recording
        audios[rec.recording_id] = audio
    old_kek = (await vault.list(ADMIN))[0].kek_id
    blobs_before = dict(blobs.blobs)
    report = await vault.rotate_keys("bank-a", ADMIN)
    assert report.rewrapped == 3
    assert blobs.blobs == blobs_before  # audio untouched
    assert {r.kek_id for r in await vault.list(ADMIN)} == {report.new_key_id}
    assert (await vault.retire_keys("bank-a", ADMIN)).retired == ()  # within the grace: kept
    retired = await vault.retire_keys("bank-a", ADMIN, grace=timedelta(0))
    assert retired.retired == (old_kek,)
    with pytest.raises(NoSuchKey):
        keys.get("bank-a", old_kek)  # the old KEK is gone
    for rid, audio in audios.items():
        assert (await vault.open_audio(rid, QA_A, reason="after rotation")).read_all() == audio
    assert all(r.ok for r in await vault.verify(ADMIN))


async def test_rotation_of_one_creditor_leaves_the_others_keys_alone(vault) -> None:
    b = (await vault.ingest(request("k-b", creditor="bank-b", case_id="cb"), [wav_bytes(1)], PBX)).recording
    await vault.ingest(request("k-a"), [wav_bytes(1)], PBX)
    await vault.rotate_keys("bank-a", ADMIN)
    assert (await vault.get(b.recording_id, ADMIN)).kek_id == b.kek_id


async def test_a_destroyed_creditor_key_makes_its_recordings_unreadable_and_nothing_else(vault) -> None:
    a_audio, b_audio, u_audio = wav_bytes(1, 300), wav_bytes(1, 400), wav_bytes(1, 500)
    a = (await vault.ingest(request("d-a"), [a_audio], PBX)).recording
    b = (await vault.ingest(request("d-b", creditor="bank-b", case_id="cb"), [b_audio], PBX)).recording
    u = (await vault.ingest(request("d-u", kind="call", creditor=None), [u_audio], PBX)).recording
    assert await vault.destroy_creditor_keys("bank-a", ADMIN) == 1
    with pytest.raises(KeyDestroyed):
        await vault.open_audio(a.recording_id, QA_A, reason="after commission end")
    assert (await vault.open_audio(b.recording_id, QA_B, reason="still ours")).read_all() == b_audio
    results = {r.recording_id: r.ok for r in await vault.verify(ADMIN)}
    assert results == {a.recording_id: False, b.recording_id: True, u.recording_id: True}
    with pytest.raises(KeyDestroyed):
        await vault.ingest(request("d-a2"), [a_audio], PBX)
    assert {r.recording_id for r in await vault.list(COMPLIANCE)} == {a.recording_id, b.recording_id}


async def test_a_creditor_without_a_key_is_refused_before_the_upload_is_read(vault, blobs) -> None:
    from recordings.errors import KeyUnavailable

    consumed = []

    def body():
        consumed.append(True)
        yield wav_bytes(1)

    with pytest.raises(KeyUnavailable, match="keys init --creditor bank-new"):
        await vault.ingest(request("nk-1", creditor="bank-new"), body(), PBX)
    assert consumed == [] and blobs.blobs == {}


async def test_with_a_key_file_a_creditors_first_recording_creates_its_key(vault, keys) -> None:
    vault.create_missing_keys = True
    audio = wav_bytes(1)
    rec = (await vault.ingest(request("nk-2", creditor="bank-new", case_id="N-1"), [audio], PBX)).recording
    assert keys.active("bank-new")[0] == rec.kek_id
    reader = Actor("qa-n", "qa", frozenset({"bank-new"}))
    assert (await vault.open_audio(rec.recording_id, reader, reason="first")).read_all() == audio


async def test_retiring_rewraps_what_is_still_under_the_old_key_before_destroying_it(vault, keys) -> None:
    audio = wav_bytes(1, 330)
    rec = (await vault.ingest(request("late-1"), [audio], PBX)).recording
    keys.rotate("bank-a")  # as if this recording committed after the rotation's rewrap
    report = await vault.retire_keys("bank-a", ADMIN, grace=timedelta(0))
    assert report.retired == (rec.kek_id,) and report.rewrapped == 1
    assert (await vault.open_audio(rec.recording_id, QA_A, reason="after retire")).read_all() == audio


async def test_an_ingest_whose_key_was_retired_before_it_committed_rewraps_itself(vault, keys, repo) -> None:
    audio = wav_bytes(1, 350)
    original_add = repo.add

    async def add_after_a_rotation_and_retire(rec, events=()):
        new = keys.rotate("bank-a")
        keys.retire("bank-a", rec.kek_id)
        await original_add(rec, events)
        assert new != rec.kek_id

    repo.add = add_after_a_rotation_and_retire
    rec = (await vault.ingest(request("race-key"), [audio], PBX)).recording
    assert rec.kek_id == keys.active("bank-a")[0]
    assert (await vault.open_audio(rec.recording_id, QA_A, reason="self-healed")).read_all() == audio


async def test_creditor_keys_are_not_destroyed_while_one_of_its_recordings_is_held(vault, keys) -> None:
    audio = wav_bytes(1, 300)
    rec = (await vault.ingest(request("kh-1"), [audio], PBX)).recording
    await vault.place_hold(rec.recording_id, COMPLIANCE, "诉讼 lawsuit 2026-9")
    with pytest.raises(Conflict, match="legal hold"):
        await vault.destroy_creditor_keys("bank-a", ADMIN)
    assert (await vault.open_audio(rec.recording_id, QA_A, reason="still evidence")).read_all() == audio


async def test_creditor_keys_are_not_destroyed_while_one_of_its_cases_is_held(vault) -> None:
    audio = wav_bytes(1, 310)
    rec = (await vault.ingest(request("kh-2", case_id="C-9"), [audio], PBX)).recording
    await vault.place_case_hold("bank-a", "C-9", SUP_A, "complaint 投诉 77")
    with pytest.raises(Conflict, match="C-9"):
        await vault.destroy_creditor_keys("bank-a", ADMIN)
    assert (await vault.open_audio(rec.recording_id, QA_A, reason="still evidence")).read_all() == audio
