"""The recordings API in-process: the real app on a real SQLite file and a real
filesystem vault with a key file, a fixed clock, users of every role on two creditors,
and cases imported through the API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, AsyncIterator
from zoneinfo import ZoneInfo

import httpx
import pytest

from dialer.app import build_app
from dialer.services import Services
from dialer.auth import add_user
from dialer.clock import FixedClock
from dialer.config import build_config

SHANGHAI = ZoneInfo("Asia/Shanghai")
TUESDAY_10AM = datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI)

USERS = (
    ("col-a", "collector", ("bank-a",)),
    ("sup-a", "supervisor", ("bank-a",)),
    ("qa-a", "qa", ("bank-a",)),
    ("qa-b", "qa", ("bank-b",)),
    ("comp-a", "compliance", ("bank-a",)),
    ("comp-b", "compliance", ("bank-b",)),
    ("data-a", "data", ("bank-a",)),
    ("data-b", "data", ("bank-b",)),
    ("pbx", "pbx", ("bank-a", "bank-b")),
    ("admin", "admin", ()),
    ("admin2", "admin", ()),
)


def case_doc(case_id: str, creditor: str, agent: str, *numbers: str) -> dict[str, Any]:
    return {
        "case_id": case_id, "creditor": creditor, "debtor_name": "李四", "status": "active",
        "commission_start": "2026-11-01", "commission_end": "2027-01-31", "assigned_agent": agent,
        "flags": [], "amount_due": "500.00", "overdue_days": 30,
        "contacts": [{"number": n, "relation": "self"} for n in numbers],
    }


@dataclass
class Api:
    client: httpx.AsyncClient
    svc: Services
    clock: FixedClock
    tokens: dict[str, str]
    data_dir: Path

    def auth(self, who: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}", **extra}

    async def get(self, path: str, who: str, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", {})
        return await self.client.get(path, headers=self.auth(who, **headers), **kw)

    async def post(self, path: str, who: str, json: Any = None, **kw: Any) -> httpx.Response:
        return await self.client.post(path, json=json, headers=self.auth(who), **kw)

    async def delete(self, path: str, who: str, **kw: Any) -> httpx.Response:
        return await self.client.delete(path, headers=self.auth(who), **kw)

    async def upload(self, body: Any, *, who: str = "pbx", content_type: str = "audio/wav", **params: Any) -> httpx.Response:
        return await self.client.post(
            "/v1/recordings", params=params, content=body,
            headers=self.auth(who, **{"Content-Type": content_type}),
        )

    async def dial(self, case_id: str, number: str, agent: str = "col-a") -> str:
        r = await self.post("/v1/dials", agent, {"case_id": case_id, "number": number, "agent_id": agent})
        assert r.status_code == 201, r.text
        return r.json()["attempt_id"]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    cfg = build_config({
        "paths": {"data_dir": str(tmp_path)},
        "log": {"json": True},
        "recordings": {"max_size_mb": 8, "creditors": {"bank-b": {"retention": "1095d"}}},
    })
    clock = FixedClock(TUESDAY_10AM)
    app = build_app(cfg, clock=clock)
    async with app.router.lifespan_context(app):
        svc: Services = app.state.services
        tokens = {}
        for name, role, creditors in USERS:
            _, tokens[name] = await add_user(svc.store, clock, name, role, frozenset(creditors))
        transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gate", timeout=30) as client:
            a = Api(client, svc, clock, tokens, tmp_path)
            for who, cases in (("data-a", [case_doc("C-1", "bank-a", "col-a", "13800000001"),
                                           case_doc("C-2", "bank-a", "col-a", "13700000003")]),
                               ("data-b", [case_doc("B-1", "bank-b", "col-b", "18600000006")])):
                r = await a.post("/v1/cases:import", who, {"cases": cases})
                assert r.status_code == 200, r.text
            yield a
        await svc.gate.drain()
