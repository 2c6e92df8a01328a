"""Chain heads exported outside the database, and what a copy of them proves later: a
chain rolled back by someone holding the key (who can re-MAC a shorter chain and its
head) is behind the exported line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
from datetime import datetime
from pathlib import Path
from typing import AsyncIterator
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, select, update

from adapters.db import tables
from dialer.app import build_app
from dialer.bootstrap import open_services
from dialer.services import Services
from dialer.audit import compare_heads, current_heads, export_heads, verify
from dialer.auth import add_user
from dialer.clock import FixedClock
from dialer.config import build_config
from dialer.imports import parse_cases_payload
from dialer.usecases import RequestDial
from gate_store_support import pg_url
from tests.support.builders import one_case

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def svc(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Services]:
    if request.param == "sqlite":
        async for s in _services(tmp_path, {}):
            yield s
        return
    databases = pg_url.__wrapped__()  # the private-database fixture, driven by hand
    url = await databases.__anext__()
    try:
        async for s in _services(tmp_path, {"url": url}):
            yield s
    finally:
        with contextlib.suppress(StopAsyncIteration):
            await databases.__anext__()  # drops the database


async def _services(tmp_path: Path, store: dict[str, str]) -> AsyncIterator[Services]:
    cfg = build_config({"paths": {"data_dir": str(tmp_path)}, "store": store})
    clock = FixedClock(NOW)
    async with open_services(cfg, clock) as services:
        users = {}
        for name, role in (("col-e", "collector"), ("data-e", "data")):
            users[name], _ = await add_user(services.store, clock, name, role, frozenset({"bank-e"}))
        case = one_case("E-1", "bank-e", "col-e", "13800000071")
        case["commission_start"], case["commission_end"] = "2026-11-01", "2026-12-31"
        await services.gate.import_cases(users["data-e"], parse_cases_payload({"cases": [case]}, services.region_of))
        for _ in range(4):
            await services.gate.request_dial(RequestDial(actor=users["col-e"], case_id="E-1", number="13800000071",
                                                         agent_id="col-e"))
            clock.advance(minutes=1)
        yield services


async def test_exported_heads_are_appended_as_json_lines_to_a_0600_file(svc: Services, tmp_path: Path) -> None:
    path = tmp_path / "out" / "heads.jsonl"
    await export_heads(svc.store, path, NOW)
    await export_heads(svc.store, path, NOW)
    lines = [json.loads(ln) for ln in path.read_text().splitlines()]
    assert len(lines) == 2 and stat.S_IMODE(path.stat().st_mode) == 0o600
    [head] = lines[0]["heads"]
    assert (head["chain"], head["seq"], lines[0]["key_id"]) == ("bank-e", 4, svc.store.evidence.key_id)
    assert await compare_heads(svc.store, path) == []


async def test_a_chain_rolled_back_and_re_macd_with_the_key_verifies_but_is_behind_the_export(
    svc: Services, tmp_path: Path,
) -> None:
    path = tmp_path / "heads.jsonl"
    await export_heads(svc.store, path, NOW)
    key = svc.store.evidence
    async with svc.store.write() as uow:
        d = tables.decisions.c
        await uow.conn.execute(delete(tables.decisions).where(d.seq == 4))
        row = (await uow.conn.execute(select(d.seq, d.hash).where(d.seq == 3))).one()
        await uow.conn.execute(update(tables.chain_heads).values(
            seq=3, hash=row[1], mac=key.head_mac("bank-e", 3, row[1], 1)))
    assert (await verify(svc.store)).ok  # a key holder's rollback is invisible in the database...
    assert await compare_heads(svc.store, path) == ["bank-e: exported at seq 4, now at 3: rolled back"]


async def test_a_decision_flipped_to_allowed_and_rehashed_without_the_key_is_detected_on_either_store(
    svc: Services,
) -> None:
    from dialer.chain import canonical_json, chain_hash

    assert (await verify(svc.store)).ok
    async with svc.store.write() as uow:
        d = tables.decisions.c
        row = (await uow.conn.execute(select(d.id, d.record, d.prev_hash).where(d.seq == 4))).one()
        body = json.loads(row[1])
        body.update(allowed=True, rule_id="allow")
        record = canonical_json(body)
        digest = chain_hash(row[2], record)
        await uow.conn.execute(update(tables.decisions).where(d.id == row[0]).values(
            record=record, hash=digest, allowed=True, rule_id="allow"))
        await uow.conn.execute(update(tables.chain_heads).values(hash=digest))
    problems = (await verify(svc.store)).problems
    assert [(p.kind, p.seq) for p in problems] == [("edited", 4)]


async def test_the_register_head_is_among_the_exported_heads_once_something_was_destroyed(svc: Services) -> None:
    key = svc.store.evidence
    async with svc.store.write() as uow:
        await uow.conn.execute(tables.evidence_heads.insert().values(
            chain="recordings.destruction_register", seq=1, hash="ab" * 32, keyed_from=1,
            mac=key.head_mac("recordings.destruction_register", 1, "ab" * 32, 1)))
    assert [h.chain for h in await current_heads(svc.store)] == ["bank-e", "recordings.destruction_register"]


async def test_the_primary_exports_the_heads_on_its_schedule(tmp_path: Path) -> None:
    out = tmp_path / "anchor" / "heads.jsonl"
    cfg = build_config({"paths": {"data_dir": str(tmp_path)},
                        "audit": {"heads_file": str(out), "export_interval_s": 0.05}})
    app = build_app(cfg, clock=FixedClock(NOW))
    async with app.router.lifespan_context(app):
        async with asyncio.timeout(30):
            while not (out.exists() and out.read_text().count("\n") >= 2):
                await asyncio.sleep(0.05)
    doc = json.loads(out.read_text().splitlines()[0])
    assert doc["scheme"] == "hmac-sha256/v1" and doc["heads"] == []


def test_a_negative_export_interval_is_refused_with_its_key() -> None:
    from dialer.errors import ConfigError

    with pytest.raises(ConfigError, match="audit.export_interval_s"):
        build_config({"audit": {"export_interval_s": -1}})


async def test_the_evidence_migration_downgrades_and_upgrades_again_on_sqlite(tmp_path: Path) -> None:
    import sqlite3

    from alembic import command

    from adapters.db.migrate import alembic_config, upgrade
    from adapters.db.store import SqlAlchemyCaseStore

    path = tmp_path / "m.db"
    cfg = build_config({"paths": {"data_dir": str(tmp_path)}, "store": {"url": f"sqlite+aiosqlite:///{path}"}})
    async with SqlAlchemyCaseStore(cfg.store) as store:
        await upgrade(store)

        def down(sync_conn: object) -> None:
            alembic = alembic_config()
            alembic.attributes["connection"] = sync_conn
            command.downgrade(alembic, "1951_evidence@-1")

        async with store.engine.begin() as conn:
            await conn.run_sync(down)
        con = sqlite3.connect(path)
        try:
            columns = [r[1] for r in con.execute("PRAGMA table_info(chain_heads)")]
            tables_now = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
        assert columns == ["chain", "seq", "hash"] and "evidence_heads" not in tables_now
        await upgrade(store)
    con = sqlite3.connect(path)
    try:
        assert [r[1] for r in con.execute("PRAGMA table_info(chain_heads)")] == ["chain", "seq", "hash", "keyed_from", "mac"]
    finally:
        con.close()
