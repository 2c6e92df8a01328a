"""A legal hold is never lost or overridden: by a write that started before the hold
(key rotation, linking), or by a purge that checked the recording just before the
hold came."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from recordings.errors import Conflict
from recordings.model import Link
from recordings.testing import ADMIN, COMPLIANCE, PBX, QA_A, SUP_A, ingest_as_of, request, wav_bytes


async def test_a_hold_placed_while_a_key_rotation_runs_survives_it(vault, repo) -> None:
    rec = (await vault.ingest(request("kh-3"), [wav_bytes(1)], PBX)).recording
    original = repo.update
    fired = []

    async def update(recording, events=()):
        if not fired:  # the hold lands between the rotation's read and its write
            fired.append(True)
            await vault.place_hold(rec.recording_id, COMPLIANCE, "诉讼 lawsuit 2026-10")
        await original(recording, events)

    repo.update = update
    await vault.rotate_keys("bank-a", ADMIN)
    assert fired
    after = await vault.get(rec.recording_id, ADMIN)
    assert after.hold is not None and after.hold.reason == "诉讼 lawsuit 2026-10"


async def test_a_hold_placed_while_an_unmatched_recording_is_linked_survives_it(vault, repo) -> None:
    rec = (await vault.ingest(request("kh-4", kind="call", creditor=None), [wav_bytes(1)], PBX)).recording
    original = repo.update

    async def update(recording, events=()):
        if recording.state == "stored" and (await repo.get(rec.recording_id)).hold is None:
            await vault.place_hold(rec.recording_id, ADMIN, "complaint 投诉 12")
        await original(recording, events)

    repo.update = update
    await vault.link(rec.recording_id, ADMIN, Link(creditor="bank-a", case_id="C-1"))
    assert (await vault.get(rec.recording_id, ADMIN)).hold is not None


async def test_a_hold_placed_just_before_the_purge_destroys_the_recording_protects_it(vault, repo, blobs, clock) -> None:
    old = datetime(2023, 1, 5, 9, 0, tzinfo=timezone.utc)
    rec = await ingest_as_of(vault, request("kh-5", started_at=old))
    purge = (await vault.request_purge(ADMIN)).request
    assert purge is not None and purge.recording_ids == (rec.recording_id,)
    original = repo.destroy

    async def destroy(recording, entry, events=(), head=None):
        if (await repo.get(rec.recording_id)).hold is None:  # after the purge's last check
            await vault.place_hold(rec.recording_id, COMPLIANCE, "诉讼 lawsuit 2026-11")
        await original(recording, entry, events, head)

    repo.destroy = destroy
    done = await vault.approve_purge(purge.purge_id, COMPLIANCE)
    assert done.destroyed == () and done.skipped == (rec.recording_id,)
    after = await vault.get(rec.recording_id, ADMIN)
    assert after.state == "stored" and after.hold is not None and after.wrapped_key is not None
    assert rec.recording_id in blobs.blobs
    assert await vault.destruction_register(ADMIN) == []


async def test_a_rotation_does_not_bring_back_a_recording_destroyed_meanwhile(vault, repo, clock) -> None:
    old = datetime(2023, 1, 5, 9, 0, tzinfo=timezone.utc)
    rec = await ingest_as_of(vault, request("kh-6", started_at=old))
    purge = (await vault.request_purge(ADMIN)).request
    assert purge is not None
    original = repo.update
    fired = []

    async def update(recording, events=()):
        if not fired:  # the purge is approved between the rotation's read and its write
            fired.append(True)
            await vault.approve_purge(purge.purge_id, COMPLIANCE)
        await original(recording, events)

    repo.update = update
    report = await vault.rotate_keys("bank-a", ADMIN)
    assert fired and report.rewrapped == 0
    after = await repo.get(rec.recording_id)
    assert after.state == "destroyed" and after.wrapped_key is None
