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
from tests.support.builders import one_case

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


async def test_an_upsert_without_a_source_is_recorded_as_an_import_of_an_unknown_row(tmp_path: Path) -> None:
    from adapters.db.store import SqlAlchemyCaseStore
    from dialer.imports import parse_cases_payload
    from dialer.model import ChangeSource

    cfg = build_config({"paths": {"data_dir": str(tmp_path)}})
    now = datetime(2026, 11, 24, 2, 0, tzinfo=ZoneInfo("UTC"))
    (case,) = parse_cases_payload({"cases": [one_case("U-1", "bank-u", "col-u", "13800000055")]}, lambda _c: "CN")
    async with SqlAlchemyCaseStore(cfg.store) as store:
        from adapters.db.migrate import upgrade

        await upgrade(store)
        async with store.write() as uow:
            rec, created = await uow.cases.upsert(case, now)  # the importer's call, unchanged
            assert created and rec.history_seq == 1
            src = ChangeSource(kind="import", actor="data-u", role="data", ref="imp-7", row=42)
            rec, created = await uow.cases.upsert(replace_amount(case, "1.00"), now, source=src)
            assert not created
            first, second = await uow.cases.history(rec.pk)
        assert (first.source, first.actor, first.source_ref, first.source_row) == ("import", "import", None, None)
        assert (second.actor, second.source_ref, second.source_row, second.field) == ("data-u", "imp-7", 42,
                                                                                       "amount_due")
        assert second.prev_hash == first.hash


def replace_amount(case: Any, amount: str) -> Any:
    from dataclasses import replace

    return replace(case, amount_due=amount)
