"""Decide-and-reserve is atomic: 50 concurrent click-to-dials on one number allow
exactly the hourly cap (2) and block the rest with `cap.number_hourly`.

In one process on SQLite; across processes on one SQLite file; and with four separate
`dialgate serve` processes sharing a real PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from adapters.db import tables
from adapters.db.store import SqlAlchemyCaseStore
from tests.support.harness import start_cluster, stop_cluster, write_config
from tests.support.builders import one_case
from dialer.app import build_app
from dialer.auth import add_user
from dialer.clock import FixedClock
from dialer.config import build_config

N = 50
CAP = 2  # cap.number_hourly for a debtor's own number


async def _attempts_in(url: str) -> int:
    cfg = build_config({"store": {"url": url}})
    async with SqlAlchemyCaseStore(cfg.store) as store:
        async with store.read() as uow:
            n = (await uow.conn.execute(select(func.count()).select_from(tables.attempts))).scalar_one()
            d = (await uow.conn.execute(select(func.count()).select_from(tables.decisions))).scalar_one()
    assert d == N, f"every decision is logged: {d} of {N}"
    return n


async def test_fifty_concurrent_dials_in_one_process_on_sqlite_allow_exactly_the_cap(tmp_path: Path) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    cfg = build_config({"paths": {"data_dir": str(tmp_path)}})
    clock = FixedClock(datetime(2026, 11, 24, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai")))
    app = build_app(cfg, clock=clock)
    async with app.router.lifespan_context(app):
        svc = app.state.services
        _, col = await add_user(svc.store, clock, "col-c", "collector", frozenset({"bank-c"}))
        _, data = await add_user(svc.store, clock, "data-c", "data", frozenset({"bank-c"}))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gate", timeout=60) as c:
            case = one_case("CC-1", "bank-c", "col-c", "13800000099")
            case["commission_start"], case["commission_end"] = "2026-11-01", "2026-12-31"
            r = await c.post("/v1/cases:import", json={"cases": [case]}, headers={"Authorization": f"Bearer {data}"})
            assert r.status_code == 200, r.text
            body = {"case_id": "CC-1", "number": "13800000099", "agent_id": "col-c"}
            answers = await asyncio.gather(*(
                c.post("/v1/dials", json=body, headers={"Authorization": f"Bearer {col}"}) for _ in range(N)
            ))
    statuses = Counter(r.status_code for r in answers)
    assert statuses == {201: CAP, 403: N - CAP}
    rules = Counter(r.json()["decision"]["rule_id"] for r in answers if r.status_code == 403)
    assert rules == {"cap.number_hourly": N - CAP}
    assert await _attempts_in(cfg.store.url) == CAP


async def _hammer(cluster: Any) -> list[httpx.Response]:
    data, col = cluster.tokens["data-c"], cluster.tokens["col-c"]
    async with httpx.AsyncClient(timeout=60) as client:
        r = await client.post(cluster.url(0) + "/v1/cases:import", headers={"Authorization": f"Bearer {data}"},
                              json={"cases": [one_case("CC-1", "bank-c", "col-c", "13800000099")]})
        assert r.status_code == 200, r.text
        body = {"case_id": "CC-1", "number": "13800000099", "agent_id": "col-c"}
        return await asyncio.gather(*(
            client.post(cluster.url(i) + "/v1/dials", json=body, headers={"Authorization": f"Bearer {col}"})
            for i in range(N)
        ))


def _assert_exactly_cap(answers: list[httpx.Response]) -> None:
    statuses = Counter(r.status_code for r in answers)
    assert statuses == {201: CAP, 403: N - CAP}, [r.text[:200] for r in answers if r.status_code not in (201, 403)]
    rules = Counter(r.json()["decision"]["rule_id"] for r in answers if r.status_code == 403)
    assert rules == {"cap.number_hourly": N - CAP}


USERS = [("data-c", "data", "bank-c"), ("col-c", "collector", "bank-c")]


@pytest.mark.slow
async def test_fifty_concurrent_dials_across_two_processes_on_one_sqlite_file_allow_exactly_the_cap(
    workdir: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{workdir / 'var' / 'dialgate.db'}"
    cluster = await start_cluster(write_config(workdir, url), 2, USERS)
    try:
        answers = await _hammer(cluster)
    finally:
        stop_cluster(cluster)
    _assert_exactly_cap(answers)
    assert await _attempts_in(url) == CAP


@pytest.mark.slow
@pytest.mark.postgres
async def test_fifty_concurrent_dials_across_four_serve_processes_on_postgresql_allow_exactly_the_cap(
    workdir: Path, pg_url: str
) -> None:
    cluster = await start_cluster(write_config(workdir, pg_url), 4, USERS)
    try:
        answers = await _hammer(cluster)
    finally:
        stop_cluster(cluster)
    _assert_exactly_cap(answers)
    assert await _attempts_in(pg_url) == CAP
