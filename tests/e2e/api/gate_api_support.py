"""The gate's HTTP API in-process: a real app on a real SQLite file, a fixed clock.

`api` gives a client, tokens for users of every role on two creditors, and three cases
imported through the API. Time is a Tuesday 10:00 in Shanghai unless a test moves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, AsyncIterator
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import func, select

from adapters.db import tables
from dialer.app import build_app
from dialer.services import Services
from dialer.auth import add_user
from dialer.clock import FixedClock
from dialer.config import build_config

SHANGHAI = ZoneInfo("Asia/Shanghai")
TUESDAY_10AM = datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI)

USERS = (
    ("col-a", "collector", ("bank-a",)),
    ("col-a2", "collector", ("bank-a",)),
    ("col-b", "collector", ("bank-b",)),
    ("sup-a", "supervisor", ("bank-a",)),
    ("qa-a", "qa", ("bank-a",)),
    ("comp-a", "compliance", ("bank-a",)),
    ("comp-b", "compliance", ("bank-b",)),
    ("data-a", "data", ("bank-a",)),
    ("data-b", "data", ("bank-b",)),
    ("pbx", "pbx", ("bank-a", "bank-b")),
    ("admin", "admin", ()),
)


def case_doc(case_id: str, creditor: str, agent: str, *contacts: tuple[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "case_id": case_id,
        "creditor": creditor,
        "debtor_name": "张三",
        "status": "active",
        "commission_start": "2026-11-01",
        "commission_end": "2027-01-31",
        "assigned_agent": agent,
        "flags": [],
        "amount_due": "1000.00",
        "overdue_days": 40,
        "contacts": [{"number": n, "relation": r} for n, r in contacts],
        **extra,
    }


CASES_A = [
    case_doc("C-1", "bank-a", "col-a", ("13800000001", "self"), ("13900000002", "family")),
    case_doc("C-2", "bank-a", "col-a2", ("13700000003", "self")),
]
CASES_B = [case_doc("B-1", "bank-b", "col-b", ("18600000006", "self"))]


@dataclass
class Api:
    client: httpx.AsyncClient
    svc: Services
    clock: FixedClock
    tokens: dict[str, str]

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def post(self, path: str, who: str, json: Any = None, **kw: Any) -> httpx.Response:
        return await self.client.post(path, json=json, headers=self.auth(who), **kw)

    async def get(self, path: str, who: str, **kw: Any) -> httpx.Response:
        return await self.client.get(path, headers=self.auth(who), **kw)

    async def dial(self, who: str, case_id: str, number: str, agent: str | None = None) -> httpx.Response:
        return await self.post("/v1/dials", who, {"case_id": case_id, "number": number, "agent_id": agent or who})

    async def rows(self, table: Any) -> int:
        async with self.svc.store.read() as uow:
            return (await uow.conn.execute(select(func.count()).select_from(table))).scalar_one()

    async def snapshot(self) -> dict[str, int]:
        """Row counts of every table that a request could write."""
        return {
            name: await self.rows(getattr(tables, name))
            for name in ("cases", "contacts", "attempts", "outcomes", "appointments", "decisions", "outbox",
                         "repayments", "audit_log", "users")
        }


@pytest.fixture
async def api(tmp_path: Any) -> AsyncIterator[Api]:
    cfg = build_config({"paths": {"data_dir": str(tmp_path)}, "log": {"json": True}})
    clock = FixedClock(TUESDAY_10AM)
    app = build_app(cfg, clock=clock)
    async with app.router.lifespan_context(app):
        svc: Services = app.state.services
        # As with `[mqtt] url` set, minus the broker: these tests read the events the
        # use cases put in the outbox (without a bus the store keeps none).
        svc.store.events = True
        tokens = {}
        for name, role, creditors in USERS:
            _, tokens[name] = await add_user(svc.store, clock, name, role, frozenset(creditors))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gate", timeout=30) as client:
            a = Api(client, svc, clock, tokens)
            r = await a.post("/v1/cases:import", "data-a", {"cases": CASES_A})
            assert r.status_code == 200, r.text
            r = await a.post("/v1/cases:import", "data-b", {"cases": CASES_B})
            assert r.status_code == 200, r.text
            yield a
        await svc.gate.drain()
