"""A creditor's dial decisions on several chains (`[store] chain_shards`, PostgreSQL):
concurrent dials of unrelated cases commit on different chains, each case stays on one,
and every chain verifies; a tampered record on one is still named."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any, AsyncIterator
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from adapters.db import tables
from adapters.db.ledger_pg import chain_for
from dialer.audit import verify
from dialer.auth import add_user
from dialer.bootstrap import open_services
from dialer.clock import FixedClock
from dialer.config import build_config
from dialer.imports import parse_cases_payload
from dialer.services import Services
from dialer.usecases import RequestDial
from tests.support.builders import one_case

SHANGHAI = ZoneInfo("Asia/Shanghai")
SHARDS = 4
CASES = [f"Z-{i}" for i in range(16)]


@pytest.fixture
async def sharded(tmp_path: Path, pg_url: str) -> AsyncIterator[tuple[Services, Any]]:
    cfg = build_config({
        "paths": {"data_dir": str(tmp_path)}, "store": {"url": pg_url, "chain_shards": SHARDS},
        "mqtt": {"url": "mqtt://127.0.0.1:1883"},  # an event bus is configured: the store keeps events
        "policy": {"allow_unregistered_lines": True},
    })
    clock = FixedClock(datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI))
    async with open_services(cfg, clock) as svc:
        collector, _ = await add_user(svc.store, clock, "col-z", "collector", frozenset({"bank-z"}))
        data, _ = await add_user(svc.store, clock, "data-z", "data", frozenset({"bank-z"}))
        rows = []
        for i, case_id in enumerate(CASES):
            row = one_case(case_id, "bank-z", "col-z", f"1380000{i:04d}")
            row["commission_start"], row["commission_end"] = "2026-11-01", "2026-12-31"
            rows.append(row)
        await svc.gate.import_cases(data, parse_cases_payload({"cases": rows}, svc.region_of))
        yield svc, collector


async def _dial_all(svc: Services, collector: Any) -> list[Any]:
    return await asyncio.gather(*(
        svc.gate.request_dial(RequestDial(actor=collector, case_id=case_id, number=f"1380000{i:04d}",
                                          agent_id="col-z"))
        for i, case_id in enumerate(CASES)
    ))


async def test_concurrent_dials_of_one_creditor_spread_over_its_chains_and_every_chain_verifies(sharded: Any) -> None:
    svc, collector = sharded
    first = await _dial_all(svc, collector)
    second = await _dial_all(svc, collector)
    assert all(r.allowed for r in first + second)
    expected = {chain_for("bank-z", c, SHARDS) for c in CASES}
    assert len(expected) > 1  # the cases do spread
    for r in first + second:
        assert r.record.chain == chain_for("bank-z", r.record.case_id, SHARDS)
    report = await verify(svc.store)
    assert report.ok, report.problems
    assert set(report.chains) == expected
    assert sum(report.chains.values()) == 2 * len(CASES)
    async with svc.store.read() as uow:
        d = tables.decisions.c
        rows = (await uow.conn.execute(select(d.case_id, d.chain, d.seq).order_by(d.chain, d.seq))).all()
    by_case: dict[str, set[str]] = {}
    for case_id, chain, _ in rows:
        by_case.setdefault(case_id, set()).add(chain)
    assert all(len(chains) == 1 for chains in by_case.values())
    for chain in expected:  # each chain numbered 1..n without a gap or a repeat
        seqs = [s for _, c, s in rows if c == chain]
        assert seqs == list(range(1, len(seqs) + 1))


async def test_an_edited_record_on_a_second_chain_is_named_by_audit_verify(sharded: Any) -> None:
    svc, collector = sharded
    await _dial_all(svc, collector)
    other = next(chain_for("bank-z", c, SHARDS) for c in CASES if chain_for("bank-z", c, SHARDS) != "bank-z")
    d = tables.decisions.c
    async with svc.store.write() as uow:
        await uow.conn.execute(update(tables.decisions).where(d.chain == other, d.seq == 1).values(rule_id="edited"))
    report = await verify(svc.store)
    assert [(p.chain, p.kind, p.seq) for p in report.problems] == [(other, "edited", 1)]


async def test_concurrent_dials_that_name_no_case_join_their_cases_chains_and_every_chain_verifies(
    sharded: Any,
) -> None:
    # The SIP gate's usual INVITE: the case is learned inside the unit, its locks and its
    # chain's head taken after the first read.
    svc, collector = sharded
    results = await asyncio.gather(*(
        svc.gate.request_dial(RequestDial(actor=collector, case_id="", number=f"1380000{i:04d}", agent_id="col-z",
                                          channel="sip"))
        for _ in range(2) for i in range(len(CASES))
    ))
    assert all(r.allowed for r in results), {r.decision.rule_id for r in results}
    assert sorted(r.record.case_id for r in results) == sorted(CASES * 2)
    for r in results:
        assert r.record.chain == chain_for("bank-z", r.record.case_id, SHARDS)
    report = await verify(svc.store)
    assert report.ok, report.problems
    assert sum(report.chains.values()) == 2 * len(CASES)
