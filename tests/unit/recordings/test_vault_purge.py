"""Retention end: legal holds, purge under dual control, the destruction register."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recordings import register
from recordings.errors import (
    DualControlViolation,
    Forbidden,
    InvalidRequest,
    NoSuchPurge,
    PurgeNotPending,
    RecordingDestroyed,
    ReasonRequired,
)
from recordings.memory import InMemoryBlobStore, InMemoryKeyProvider, InMemoryRecordingRepository
from recordings.model import Actor
from recordings.retention import RetentionPolicy
from recordings.testing import ADMIN, COMPLIANCE, PBX, QA_A, SUP_A, ingest_as_of, request, wav_bytes
from recordings.vault import Vault

OLD = datetime(2024, 1, 10, 9, tzinfo=timezone.utc)  # retain_until 2026-01-09: due on 2026-11-23
RECENT = datetime(2026, 11, 1, 9, tzinfo=timezone.utc)
ADMIN_2 = Actor("ops-liu", "admin")


async def ingest(vault, sid, *, started_at=OLD, case_id="case-1", creditor="bank-a"):
    return await ingest_as_of(vault, request(sid, started_at=started_at, case_id=case_id, creditor=creditor))


async def test_a_dry_run_lists_what_is_due_and_destroys_nothing(vault, repo, blobs) -> None:
    old = await ingest(vault, "p-1")
    await ingest(vault, "p-2", started_at=RECENT)
    plan = await vault.request_purge(ADMIN, dry_run=True)
    assert [r.recording_id for r in plan.due] == [old.recording_id]
    assert plan.request is None and repo.purges == {}
    assert len(blobs.blobs) == 2 and repo.register == []


async def test_purge_needs_two_distinct_people(vault, blobs) -> None:
    old = await ingest(vault, "p-3")
    plan = await vault.request_purge(ADMIN)
    same_person = Actor(ADMIN.user, "compliance")
    with pytest.raises(DualControlViolation):
        await vault.approve_purge(plan.request.purge_id, same_person)
    assert old.recording_id in blobs.blobs
    with pytest.raises(Forbidden):
        await vault.approve_purge(plan.request.purge_id, ADMIN_2)  # an admin cannot approve
    with pytest.raises(Forbidden):
        await vault.request_purge(COMPLIANCE)  # compliance cannot request
    done = await vault.approve_purge(plan.request.purge_id, COMPLIANCE)
    assert done.destroyed == (old.recording_id,) and done.approved_by == "comp-sun"
    assert old.recording_id not in blobs.blobs
    with pytest.raises(PurgeNotPending):
        await vault.approve_purge(plan.request.purge_id, SUP_A)


async def test_a_destroyed_recording_is_unreadable_and_written_in_the_register(vault, repo, blobs) -> None:
    old = await ingest(vault, "p-4")
    plan = await vault.request_purge(ADMIN)
    await vault.approve_purge(plan.request.purge_id, SUP_A)
    gone = repo.recordings[old.recording_id]
    assert gone.state == "destroyed" and gone.wrapped_key is None and gone.kek_id is None
    with pytest.raises(RecordingDestroyed):
        await vault.open_audio(old.recording_id, QA_A, reason="too late")
    [entry] = await vault.destruction_register(COMPLIANCE)
    assert (entry.recording_id, entry.case_id, entry.sha256, entry.retain_until) == (
        old.recording_id, "case-1", old.sha256, old.retain_until)
    assert (entry.operator, entry.approver, entry.seq) == ("ops-wang", "sup-chen", 1)
    assert register.verify_chain(await vault.destruction_register(ADMIN)) == []


async def test_held_recordings_survive_a_purge(vault, blobs) -> None:
    held = await ingest(vault, "h-1", case_id="case-h1")
    case_held = await ingest(vault, "h-2", case_id="case-h2")
    free = await ingest(vault, "h-3", case_id="case-h3")
    await vault.place_hold(held.recording_id, COMPLIANCE, "投诉 complaint #12")
    await vault.place_case_hold("bank-a", "case-h2", SUP_A, "诉讼 lawsuit 2026-77")
    plan = await vault.request_purge(ADMIN)
    assert [r.recording_id for r in plan.due] == [free.recording_id]
    assert {r.recording_id for r in plan.held} == {held.recording_id, case_held.recording_id}
    await vault.approve_purge(plan.request.purge_id, COMPLIANCE)
    assert held.recording_id in blobs.blobs and case_held.recording_id in blobs.blobs
    assert free.recording_id not in blobs.blobs


async def test_a_hold_placed_after_the_request_still_protects_the_recording(vault, blobs) -> None:
    rec = await ingest(vault, "h-4", case_id="case-h4")
    plan = await vault.request_purge(ADMIN)
    await vault.place_case_hold("bank-a", "case-h4", COMPLIANCE, "new complaint 新投诉")
    done = await vault.approve_purge(plan.request.purge_id, SUP_A)
    assert done.destroyed == () and done.skipped == (rec.recording_id,)
    assert rec.recording_id in blobs.blobs


async def test_a_released_hold_lets_the_recording_go_at_the_next_purge(vault, blobs) -> None:
    rec = await ingest(vault, "h-5")
    await vault.place_hold(rec.recording_id, COMPLIANCE, "dispute 争议")
    await vault.release_hold(rec.recording_id, COMPLIANCE, "结案 case closed")
    plan = await vault.request_purge(ADMIN)
    await vault.approve_purge(plan.request.purge_id, SUP_A)
    assert rec.recording_id not in blobs.blobs


async def test_a_hold_needs_a_reason(vault) -> None:
    rec = await ingest(vault, "h-6")
    with pytest.raises(ReasonRequired):
        await vault.place_hold(rec.recording_id, COMPLIANCE, " ")


async def test_nothing_due_means_no_request(vault) -> None:
    await ingest(vault, "p-5", started_at=RECENT)
    with pytest.raises(InvalidRequest, match="nothing is due"):
        await vault.request_purge(ADMIN)


async def test_the_register_chains_across_purges_and_any_edit_breaks_it(vault, clock) -> None:
    for i in range(3):
        await ingest(vault, f"c-{i}", case_id=f"case-c{i}")
    plan = await vault.request_purge(ADMIN)
    await vault.approve_purge(plan.request.purge_id, SUP_A)
    await ingest(vault, "c-late", case_id="case-late")
    clock.advance(days=1)
    plan2 = await vault.request_purge(ADMIN_2)
    await vault.approve_purge(plan2.request.purge_id, COMPLIANCE)
    entries = await vault.destruction_register(ADMIN)
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    assert entries[3].prev_hash == entries[2].entry_hash
    assert register.verify_chain(entries) == []
    edited = list(entries)
    edited[1] = replace(edited[1], approver="someone-else")
    assert register.verify_chain(edited) != []
    assert register.verify_chain(entries[:1] + entries[2:]) != []  # a removed entry


async def test_each_creditor_keeps_its_own_retention_when_purging(vault, blobs) -> None:
    a = await ingest(vault, "s-1", creditor="bank-a")
    b = await ingest(vault, "s-2", creditor="bank-b", case_id="case-b")
    # bank-b keeps 1095 days: from 2024-01-10 that is 2027-01-09, not due yet
    plan = await vault.request_purge(ADMIN)
    assert [r.recording_id for r in plan.due] == [a.recording_id]
    assert b.recording_id in blobs.blobs


async def test_a_case_hold_covers_only_that_creditors_case_of_that_id(vault, blobs) -> None:
    a = await ingest(vault, "same-a", case_id="C-100", creditor="bank-a")
    b = await ingest(vault, "same-b", case_id="C-100", creditor="bank-b",
                     started_at=datetime(2023, 1, 2, 9, tzinfo=timezone.utc))  # due for bank-b too
    await vault.place_case_hold("bank-a", "C-100", COMPLIANCE, "lawsuit 诉讼")
    plan = await vault.request_purge(ADMIN)
    assert [r.recording_id for r in plan.due] == [b.recording_id]
    assert [r.recording_id for r in plan.held] == [a.recording_id]
    assert await vault.release_case_hold("bank-a", "C-100", SUP_A, "结案 case closed")
    assert (await vault.plan_purge(ADMIN)).held == ()


def test_a_register_entry_hashes_the_same_whatever_offset_its_time_comes_back_in() -> None:
    from datetime import date, timedelta

    shanghai = timezone(timedelta(hours=8))
    entry = register.seal(register.DestructionEntry(
        seq=1, recording_id="r", case_id="c", creditor="bank-a", sha256="0" * 64, retain_until=date(2026, 1, 1),
        operator="a", approver="b", purge_id="p", destroyed_at=datetime(2026, 11, 24, 10, tzinfo=shanghai),
        method="m", prev_hash=register.GENESIS, entry_hash=""))
    as_utc = replace(entry, destroyed_at=entry.destroyed_at.astimezone(timezone.utc))
    assert register.verify_chain([as_utc]) == []


async def test_an_approver_must_be_cleared_for_every_creditor_in_the_request(vault, blobs) -> None:
    a = await ingest(vault, "sc-a", creditor="bank-a")
    b = await ingest(vault, "sc-b", creditor="bank-b", case_id="case-b",
                     started_at=datetime(2023, 1, 2, 9, tzinfo=timezone.utc))
    plan = await vault.request_purge(ADMIN)
    # bank-a's supervisor does not see a request that also covers bank-b
    assert await vault.pending_purges(SUP_A) == []
    with pytest.raises(NoSuchPurge):
        await vault.approve_purge(plan.request.purge_id, SUP_A)
    assert a.recording_id in blobs.blobs and b.recording_id in blobs.blobs
    assert [p.purge_id for p in await vault.pending_purges(COMPLIANCE)] == [plan.request.purge_id]
    done = await vault.approve_purge(plan.request.purge_id, COMPLIANCE)  # bank-a and bank-b
    assert set(done.destroyed) == {a.recording_id, b.recording_id}
    assert await vault.pending_purges(COMPLIANCE) == []


_REC = st.tuples(
    st.sampled_from(["bank-a", "bank-b"]),
    st.sampled_from(["K-1", "K-2", "K-3"]),
    st.integers(0, 1500),  # days before "today"
    st.booleans(),  # recording hold
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_REC, max_size=8), st.sets(st.tuples(st.sampled_from(["bank-a", "bank-b"]), st.sampled_from(["K-1", "K-2", "K-3"]))))
async def test_a_purge_destroys_exactly_what_is_due_and_unheld_and_registers_each_one(recs, case_holds) -> None:
    today = datetime(2026, 11, 23, 10, tzinfo=timezone.utc)
    keys = InMemoryKeyProvider(lambda: today)
    for s in ("bank-a", "bank-b"):
        keys.create(s)
    repo, blobs = InMemoryRecordingRepository(), InMemoryBlobStore()
    vault = Vault(repo, blobs, keys, clock=lambda: today,
                  retention=RetentionPolicy.from_config("730d", {"bank-b": "1095d"}))
    expected = set()
    for i, (creditor, case_id, age, held) in enumerate(recs):
        started = today - timedelta(days=age)
        rec = await ingest_as_of(vault, request(f"h-{i}", creditor=creditor, case_id=case_id, started_at=started),
                                 [wav_bytes(0.1)])
        if held:
            await vault.place_hold(rec.recording_id, COMPLIANCE, "complaint")
        days = 1095 if creditor == "bank-b" else 730
        if age > days and not held and (creditor, case_id) not in case_holds:
            expected.add(rec.recording_id)
    for creditor, case_id in case_holds:
        await vault.place_case_hold(creditor, case_id, COMPLIANCE, "lawsuit")
    plan = await vault.plan_purge(ADMIN)
    assert {r.recording_id for r in plan.due} == expected
    if expected:
        purge = (await vault.request_purge(ADMIN)).request
        done = await vault.approve_purge(purge.purge_id, COMPLIANCE)
        assert set(done.destroyed) == expected
    assert set(blobs.blobs) == {r.recording_id for r in repo.recordings.values()} - expected
    entries = await vault.destruction_register(ADMIN)
    assert {e.recording_id for e in entries} == expected and register.verify_chain(entries) == []


async def test_an_unmatched_recording_past_retention_can_be_purged_by_any_approver(vault, blobs) -> None:
    u = await ingest_as_of(vault, request("u-old", kind="call", creditor=None, started_at=OLD))
    plan = await vault.request_purge(ADMIN)
    assert [r.recording_id for r in plan.due] == [u.recording_id]
    done = await vault.approve_purge(plan.request.purge_id, SUP_A)
    assert done.destroyed == (u.recording_id,) and u.recording_id not in blobs.blobs
    [entry] = await vault.destruction_register(ADMIN)
    assert entry.creditor is None and entry.approver == "sup-chen"
