"""The vault's `recording.stored` / `recording.purged` events land in the service's
transactional outbox in the same transaction as the metadata change — on SQLite and
on PostgreSQL — with the payload schemas/events/v1 defines and no number in clear.

The in-memory repository records the same events (the vault's unit tests see them).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from adapters.db import tables
from adapters.db.migrate import upgrade
from adapters.db.recordings_repo import SqlAlchemyRecordingRepository
from adapters.db.store import SqlAlchemyCaseStore
from dialer.config import build_config
from dialer.errors import StoreUnavailable
from dialer.model import CaseInput, ContactRecord
from recordings.errors import DuplicateSource
from recordings.memory import InMemoryBlobStore, InMemoryKeyProvider, InMemoryRecordingRepository
from recordings.model import Link
from recordings.testing import ADMIN, COMPLIANCE, PBX, ingest_as_of, request, wav_bytes
from recordings.vault import Vault
from tests.support.pg import private_pg_database
from tests.unit.mqtt.event_schemas import event_errors

SHANGHAI = timezone(timedelta(hours=8))
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI)
OLD = datetime(2024, 1, 5, 10, 0, tzinfo=SHANGHAI)  # due for purge at NOW
UNMASKED_MOBILE = re.compile(r"(?<![0-9A-Za-z*])1[3-9]\d{9}(?![0-9A-Za-z])")  # not inside an id or a hash


class Env:
    def __init__(self, store: SqlAlchemyCaseStore) -> None:
        self.store = store
        self.repo = SqlAlchemyRecordingRepository(store)
        keys = InMemoryKeyProvider()
        for scope in ("bank-a", "bank-b", "_unmatched"):
            keys.create(scope)
        self.vault = Vault(self.repo, InMemoryBlobStore(), keys, clock=lambda: NOW)

    async def events(self, type_prefix: str = "recording.") -> list[dict[str, Any]]:
        """Outbox rows (as the relay will publish them), in commit order."""
        o = tables.outbox.c
        async with self.store.read() as uow:
            rows = (await uow.conn.execute(select(tables.outbox).order_by(o.id))).all()
        out = []
        for r in rows:
            if not r.type.startswith(type_prefix):
                continue
            doc = json.loads(r.payload)
            # The row's columns and its payload agree (the relay reads both).
            assert (doc["event_id"], doc["type"], doc["creditor"], doc["case_id"], doc["case_seq"]) == (
                r.event_id, r.type, r.creditor, r.case_id, r.case_seq)
            assert r.published_at is None
            out.append(doc)
        return out

    async def add_case(self, creditor: str, case_id: str) -> None:
        case = CaseInput(
            creditor=creditor, case_id=case_id, debtor_name="张三", status="active",
            commission_start=date(2026, 11, 1), commission_end=date(2027, 1, 31), assigned_agent="agent-7",
            flags=frozenset(), amount_due="1000.00", overdue_days=40,
            contacts=(ContactRecord(number="+8613800000001", relation="self"),),
        )
        async with self.store.write() as uow:
            await uow.cases.ensure_creditor(creditor)
            record, _ = await uow.cases.upsert(case, NOW)
            # One gate event of the case before any recording: the vault's events
            # must continue the same per-case sequence.
            await uow.outbox.add("case.updated", creditor=creditor, case_pk=record.pk, case_id=case_id,
                                 occurred_at=NOW, payload={"status": "active"})


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def env(request, tmp_path: Path) -> AsyncIterator[Env]:
    async def run(url: str | None) -> AsyncIterator[Env]:
        cfg = build_config({"paths": {"data_dir": str(tmp_path)}, **({"store": {"url": url}} if url else {})})
        async with SqlAlchemyCaseStore(cfg.store) as store:
            await upgrade(store)
            yield Env(store)

    if request.param == "sqlite":
        async for e in run(None):
            yield e
        return
    async with private_pg_database() as url:
        async for e in run(url):
            yield e


def assert_publishable(doc: dict[str, Any]) -> None:
    assert event_errors(doc) == [], doc
    assert not UNMASKED_MOBILE.search(json.dumps(doc, ensure_ascii=False)), doc


async def test_an_ingested_recording_puts_one_schema_valid_recording_stored_event_in_the_outbox(env) -> None:
    await env.add_case("bank-a", "C-1")
    rec = (await env.vault.ingest(request("att-1", case_id="C-1"), [wav_bytes(1)], PBX)).recording

    [ev] = await env.events()
    assert_publishable(ev)
    assert ev["type"] == "recording.stored"
    assert (ev["creditor"], ev["case_id"], ev["case_seq"]) == ("bank-a", "C-1", 2)  # after the case's own event
    assert ev["recording_id"] == rec.recording_id and ev["attempt_id"] == "att-1"
    assert (ev["sha256"], ev["bytes"], ev["duration_s"]) == (rec.sha256, rec.size, 10.0)
    assert ev["state"] == "stored" and ev["number"] == "138****0001" and ev["agent_id"] == "agent-7"
    assert datetime.fromisoformat(ev["occurred_at"]) == NOW


async def test_a_repeated_upload_of_the_same_source_announces_nothing_new(env) -> None:
    first = await env.vault.ingest(request("att-2"), [wav_bytes(1)], PBX)
    again = await env.vault.ingest(request("att-2"), [wav_bytes(1)], PBX)
    assert again.created is False
    assert [e["recording_id"] for e in await env.events()] == [first.recording.recording_id]


async def test_concurrent_uploads_of_one_source_announce_exactly_one_recording(env) -> None:
    results = await asyncio.gather(*(env.vault.ingest(request("race-1"), [wav_bytes(1)], PBX) for _ in range(4)))
    [winner] = {r.recording.recording_id for r in results}
    assert [e["recording_id"] for e in await env.events()] == [winner]


async def test_a_row_that_fails_to_insert_leaves_no_event_behind(env) -> None:
    rec = (await env.vault.ingest(request("dup-1"), [wav_bytes(1)], PBX)).recording
    from recordings.events import stored

    clash = rec.evolve(recording_id="f" * 32)
    with pytest.raises(DuplicateSource):
        await env.repo.add(clash, events=(stored(clash, NOW),))
    assert [e["recording_id"] for e in await env.events()] == [rec.recording_id]


async def test_when_the_event_cannot_be_written_the_recording_is_not_committed_either(env) -> None:
    async with env.store.write() as uow:
        await uow.conn.execute(text("ALTER TABLE outbox RENAME TO outbox_away"))
    try:
        with pytest.raises(StoreUnavailable):
            await env.vault.ingest(request("att-lost"), [wav_bytes(1)], PBX)
    finally:
        async with env.store.write() as uow:
            await uow.conn.execute(text("ALTER TABLE outbox_away RENAME TO outbox"))
    assert await env.repo.by_source("attempt", "att-lost") is None
    assert list(env.vault.blobs.keys()) == []  # nor its audio
    assert await env.events() == []


async def test_an_unmatched_recording_is_announced_under_the_unmatched_scope_and_again_under_its_case_when_linked(
    env,
) -> None:
    await env.add_case("bank-b", "B-7")
    rec = (await env.vault.ingest(request("sip-call-1@pbx", kind="call", creditor=None, number=None),
                                  [wav_bytes(1)], PBX)).recording
    linked = await env.vault.link(rec.recording_id, ADMIN,
                                  Link(creditor="bank-b", case_id="B-7", agent="col-b", number="+8613900000009"))

    unmatched, stored = await env.events()
    for ev in (unmatched, stored):
        assert_publishable(ev)
        assert ev["type"] == "recording.stored" and ev["recording_id"] == rec.recording_id
        assert ev["attempt_id"] is None  # a SIP call, not an attempt
    assert (unmatched["creditor"], unmatched["case_id"], unmatched["case_seq"], unmatched["state"]) == (
        "_unmatched", None, None, "unmatched")
    assert (stored["creditor"], stored["case_id"], stored["case_seq"], stored["state"]) == ("bank-b", "B-7", 2, "stored")
    assert stored["number"] == "139****0009" and stored["retain_until"] == linked.retain_until.isoformat()


async def test_a_purge_approval_writes_one_recording_purged_event_per_destroyed_recording_and_none_for_held(
    env,
) -> None:
    await env.add_case("bank-a", "C-9")
    gone = await ingest_as_of(env.vault, request("old-1", case_id="C-9", started_at=OLD))
    orphan = await ingest_as_of(env.vault, request("old-call", kind="call", creditor=None, started_at=OLD))
    held = await ingest_as_of(env.vault, request("old-2", case_id="C-9", started_at=OLD))
    await env.vault.place_hold(held.recording_id, COMPLIANCE, "投诉 complaint")
    plan = await env.vault.request_purge(ADMIN)
    done = await env.vault.approve_purge(plan.request.purge_id, COMPLIANCE)
    assert set(done.destroyed) == {gone.recording_id, orphan.recording_id}

    purged = await env.events("recording.purged")
    assert sorted(e["recording_id"] for e in purged) == sorted(done.destroyed)
    register = {e.recording_id: e for e in await env.repo.destruction_register()}
    for ev in purged:
        assert_publishable(ev)
        entry = register[ev["recording_id"]]
        assert (ev["purge_id"], ev["approved_by"], ev["requested_by"], ev["register_seq"], ev["sha256"]) == (
            plan.request.purge_id, "comp-sun", "ops-wang", entry.seq, entry.sha256)
        assert datetime.fromisoformat(ev["occurred_at"]) == entry.destroyed_at
    by_id = {e["recording_id"]: e for e in purged}
    assert (by_id[gone.recording_id]["creditor"], by_id[gone.recording_id]["case_id"]) == ("bank-a", "C-9")
    # C-9: its case.updated (1), two recording.stored (2, 3), then the purge (4).
    assert by_id[gone.recording_id]["case_seq"] == 4
    assert (by_id[orphan.recording_id]["creditor"], by_id[orphan.recording_id]["case_seq"]) == ("_unmatched", None)


async def test_the_in_memory_repository_records_the_same_events_in_commit_order() -> None:
    repo = InMemoryRecordingRepository()
    keys = InMemoryKeyProvider()
    keys.create("bank-a")
    vault = Vault(repo, InMemoryBlobStore(), keys, clock=lambda: NOW)
    rec = await ingest_as_of(vault, request("mem-1", started_at=OLD))
    await ingest_as_of(vault, request("mem-1", started_at=OLD))  # idempotent: no event
    plan = await vault.request_purge(ADMIN)
    await vault.approve_purge(plan.request.purge_id, COMPLIANCE)
    assert [(e.type, e.creditor, e.case_id, e.payload["recording_id"]) for e in repo.events] == [
        ("recording.stored", "bank-a", "case-1", rec.recording_id),
        ("recording.purged", "bank-a", "case-1", rec.recording_id),
    ]
    assert repo.events[1].payload["purge_id"] == plan.request.purge_id
