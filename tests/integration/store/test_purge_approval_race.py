"""Dual control without races: simultaneous approvals of one purge over the HTTP API,
on SQLite and PostgreSQL. Exactly one approval wins, the rest get 409, and the
destruction register gets one entry per recording, which `recordings verify` accepts;
a register entry deleted afterwards (with the recording left destroyed) is caught."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import delete, func, select, update

from adapters.db import tables
from adapters.db.recordings_repo import recording_destruction_register as register_table
from dialer.app import build_app
from dialer.auth import add_user
from dialer.clock import FixedClock
from dialer.config import build_config
from dialer.audit import register_problems
from gate_store_support import pg_url
from recordings.testing import ingest_as_of, request

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
OLD = datetime(2024, 1, 5, 2, 0, tzinfo=timezone.utc)  # retained until 2026-01-04: due
APPROVERS = [f"comp-{i}" for i in range(10)]


async def _service(url: str, data_dir: Path) -> AsyncIterator[Any]:
    cfg = build_config({"paths": {"data_dir": str(data_dir)}, "store": {"url": url}, "recordings": {}})
    clock = FixedClock(NOW)
    app = build_app(cfg, clock=clock)
    async with app.router.lifespan_context(app):
        svc = app.state.services
        tokens = {}
        for name, role in [("admin", "admin"), *((a, "compliance") for a in APPROVERS)]:
            _, tokens[name] = await add_user(svc.store, clock, name, role, frozenset() if role == "admin" else frozenset({"bank-a"}))
        for i in range(3):  # uploaded back then: due now
            await ingest_as_of(svc.vault, request(f"race-{i}", kind="call", started_at=OLD), actor=_pbx_actor())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gate", timeout=60) as client:
            yield svc, client, tokens


def _pbx_actor() -> Any:
    from recordings.model import Actor

    return Actor("pbx", "pbx", frozenset({"bank-a"}))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def service(request: Any, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "sqlite":
        async for s in _service(f"sqlite+aiosqlite:///{tmp_path / 'gate.db'}", tmp_path):
            yield s
        return
    databases = pg_url.__wrapped__()  # the private-database fixture, driven by hand
    url = await databases.__anext__()
    try:
        async for s in _service(url, tmp_path):
            yield s
    finally:
        with contextlib.suppress(StopAsyncIteration):
            await databases.__anext__()  # drops the database


async def _approve_all_at_once(svc: Any, client: httpx.AsyncClient, tokens: dict[str, str]) -> tuple[str, list[int]]:
    req = await client.post("/v1/purges", json={}, headers={"Authorization": f"Bearer {tokens['admin']}"})
    assert req.status_code == 201, req.text
    purge_id = req.json()["purge"]["purge_id"]
    assert len(req.json()["due"]) == 3
    answers = await asyncio.gather(*(
        client.post(f"/v1/purges/{purge_id}/approve", headers={"Authorization": f"Bearer {tokens[a]}"})
        for a in APPROVERS
    ))
    return purge_id, sorted(r.status_code for r in answers)


async def test_ten_simultaneous_approvals_of_one_purge_give_one_200_and_one_register_entry_per_recording(
    service: Any,
) -> None:
    svc, client, tokens = service
    purge_id, statuses = await _approve_all_at_once(svc, client, tokens)
    assert statuses == [200] + [409] * 9
    entries = await svc.vault.repo.destruction_register()
    assert sorted(e.recording_id for e in entries) == sorted(
        r.recording_id for r in await svc.vault.repo.find(_destroyed()))
    assert len(entries) == 3 and len({e.approver for e in entries}) == 1
    purge = await svc.vault.repo.get_purge(purge_id)
    assert purge.state == "approved" and purge.approved_by == entries[0].approver and len(purge.destroyed) == 3
    assert await register_problems(svc.vault.repo, svc.store.evidence) == []


async def test_a_deleted_last_register_entry_is_caught_though_the_recording_stays_destroyed(service: Any) -> None:
    svc, client, tokens = service
    await _approve_all_at_once(svc, client, tokens)
    async with svc.store.write() as uow:
        await uow.conn.execute(delete(register_table).where(register_table.c.seq == 3))
    problems = await register_problems(svc.vault.repo, svc.store.evidence)
    assert any(p.startswith("deleted: records 3..3 are missing") for p in problems), problems
    assert any("is destroyed with 0 register entries" in p for p in problems), problems


async def test_a_register_entry_rewritten_with_another_approver_and_rehashed_without_the_key_is_caught(
    service: Any,
) -> None:
    from recordings import register

    svc, client, tokens = service
    await _approve_all_at_once(svc, client, tokens)
    entries = await svc.vault.repo.destruction_register()
    forged, prev = [], entries[0].prev_hash
    for e in entries:  # the forger re-chains every entry in the old, unkeyed way
        e = register.seal(e.__class__(**{**{f: getattr(e, f) for f in e.__slots__}, "approver": "comp-9",
                                         "prev_hash": prev}))
        forged.append(e)
        prev = e.entry_hash
    async with svc.store.write() as uow:
        for e in forged:
            await uow.conn.execute(update(register_table).where(register_table.c.seq == e.seq).values(
                approver=e.approver, prev_hash=e.prev_hash, entry_hash=e.entry_hash))
        await uow.conn.execute(update(tables.evidence_heads).values(hash=prev))
    problems = await register_problems(svc.vault.repo, svc.store.evidence)
    assert problems and problems[0].startswith("edited: record 1"), problems


def _destroyed() -> Any:
    from recordings.model import RecordingFilter

    return RecordingFilter(state="destroyed", include_destroyed=True, limit=None)


async def test_the_register_head_row_counts_every_entry(service: Any) -> None:
    svc, client, tokens = service
    await _approve_all_at_once(svc, client, tokens)
    async with svc.store.read() as uow:
        head = (await uow.conn.execute(select(tables.evidence_heads.c.seq, tables.evidence_heads.c.mac))).one()
        count = (await uow.conn.execute(select(func.count()).select_from(register_table))).scalar_one()
    assert head[0] == count == 3 and head[1] is not None


async def test_two_purges_of_the_same_recordings_approved_at_once_in_two_workers_destroy_each_once(
    service: Any,
) -> None:
    from adapters.db.recordings_repo import SqlAlchemyRecordingRepository
    from recordings.model import Actor
    from recordings.vault import Vault

    svc, client, tokens = service
    first = await client.post("/v1/purges", json={}, headers={"Authorization": f"Bearer {tokens['admin']}"})
    second = await client.post("/v1/purges", json={}, headers={"Authorization": f"Bearer {tokens['admin']}"})
    ids = [r.json()["purge"]["purge_id"] for r in (first, second)]
    # A second vault over the same database, as another worker process has: its own
    # in-process register lock, so only the database keeps the two apart.
    other = Vault(SqlAlchemyRecordingRepository(svc.store), svc.vault.blobs, svc.vault.keys, clock=svc.clock.now,
                  retention=svc.vault.retention, sealer=svc.store.evidence)
    done = await asyncio.gather(
        svc.vault.approve_purge(ids[0], Actor("comp-1", "compliance", frozenset({"bank-a"}))),
        other.approve_purge(ids[1], Actor("comp-2", "compliance", frozenset({"bank-a"}))),
    )
    assert sum(len(d.destroyed) for d in done) == 3 and sum(len(d.skipped) for d in done) == 3
    entries = await svc.vault.repo.destruction_register()
    assert sorted(e.seq for e in entries) == [1, 2, 3] and len({e.recording_id for e in entries}) == 3
    assert await register_problems(svc.vault.repo, svc.store.evidence) == []
