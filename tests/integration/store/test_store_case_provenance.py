"""A stop set by a call outcome survives re-imports racing with it, on SQLite and on a
real PostgreSQL; every change lands on the case's history chain, which verifies."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from dialer.app import build_app
from dialer.audit import verify
from dialer.auth import add_user
from dialer.clock import FixedClock
from dialer.config import build_config
from gate_store_support import one_case

REIMPORTS = 12


async def _race(cfg: Any) -> None:
    clock = FixedClock(datetime(2026, 11, 24, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai")))
    app = build_app(cfg, clock=clock)
    async with app.router.lifespan_context(app):
        svc = app.state.services
        _, col = await add_user(svc.store, clock, "col-p", "collector", frozenset({"bank-p"}))
        _, data = await add_user(svc.store, clock, "data-p", "data", frozenset({"bank-p"}))
        as_col, as_data = {"Authorization": f"Bearer {col}"}, {"Authorization": f"Bearer {data}"}
        case = one_case("P-1", "bank-p", "col-p", "13800000077")
        case["commission_start"], case["commission_end"] = "2026-11-01", "2026-12-31"
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gate", timeout=60) as c:
            assert (await c.post("/v1/cases:import", json={"cases": [case]}, headers=as_data)).status_code == 200
            r = await c.post("/v1/dials", json={"case_id": "P-1", "number": "13800000077", "agent_id": "col-p"},
                             headers=as_col)
            aid = r.json()["attempt_id"]

            async def reimport(i: int) -> int:
                doc = {**case, "amount_due": f"{900 - i}.00"}
                return (await c.post("/v1/cases:import", json={"cases": [doc]}, headers=as_data)).status_code

            outcome = c.post(f"/v1/attempts/{aid}/outcome", headers=as_col,
                             json={"disposition": "connected_self", "result": "dispute", "note": "否认欠款"})
            answers = await asyncio.gather(outcome, *(reimport(i) for i in range(REIMPORTS)))
            assert answers[0].status_code == 201, answers[0].text
            assert answers[1:] == [200] * REIMPORTS
            clock.advance(hours=3)
            r = await c.post("/v1/dials", json={"case_id": "P-1", "number": "13800000077", "agent_id": "col-p"},
                             headers=as_col)
            assert r.status_code == 403 and r.json()["decision"]["rule_id"] == "case.dispute"
            history = (await c.get("/v1/cases/P-1/history", headers=as_col)).json()["items"]
            assert [e["seq"] for e in history] == list(range(1, len(history) + 1))
            assert sum(1 for e in history if e["field"] == "amount_due") == REIMPORTS
        report = await verify(svc.store)
        assert report.ok, report.to_dict()
        await svc.gate.drain()


async def test_a_dispute_survives_re_imports_racing_with_it_on_sqlite(tmp_path: Path) -> None:
    await _race(build_config({"paths": {"data_dir": str(tmp_path)}}))


@pytest.mark.postgres
async def test_a_dispute_survives_re_imports_racing_with_it_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    await _race(build_config({"paths": {"data_dir": str(tmp_path)}, "store": {"url": pg_url}}))
