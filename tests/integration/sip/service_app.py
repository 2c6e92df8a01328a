"""The real gate service with `[sip]` configured, in-process on a real SQLite file.

``start_service(tmp_path, sip_port=..., route=..., edge=...)`` runs the app's lifespan (which starts
the SIP listener through the composition root), adds users, imports cases through the
HTTP API, and yields a :class:`Running` handle. Time is a fixed Tuesday 10:00 Shanghai.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, AsyncIterator
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import func, select

from adapters.db import tables
from dialer.app import Services, build_app
from dialer.auth import add_user
from dialer.clock import FixedClock
from dialer.config import build_config
from sipclient import make_invite

SHANGHAI = ZoneInfo("Asia/Shanghai")
TUESDAY_10AM = datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI)
USERS = (
    ("col-a", "collector", ("bank-a",)),
    ("col-a2", "collector", ("bank-a",)),
    ("comp-a", "compliance", ("bank-a",)),
    ("data-a", "data", ("bank-a",)),
)


def case_doc(case_id: str, agent: str, *numbers: str) -> dict[str, Any]:
    return {
        "case_id": case_id, "creditor": "bank-a", "debtor_name": "张三", "status": "active",
        "commission_start": "2026-11-01", "commission_end": "2027-01-31", "assigned_agent": agent,
        "flags": [], "amount_due": "1000.00", "overdue_days": 40,
        "contacts": [{"number": n, "relation": "self"} for n in numbers],
    }


@dataclass
class Running:
    client: httpx.AsyncClient
    svc: Services
    tokens: dict[str, str]
    sip_port: int

    async def get(self, path: str, who: str, **kw: Any) -> httpx.Response:
        return await self.client.get(path, headers={"Authorization": f"Bearer {self.tokens[who]}"}, **kw)

    async def post(self, path: str, who: str, json: Any) -> httpx.Response:
        return await self.client.post(path, json=json, headers={"Authorization": f"Bearer {self.tokens[who]}"})

    async def attempts(self, channel: str | None = None) -> int:
        q = select(func.count()).select_from(tables.attempts)
        if channel:
            q = q.where(tables.attempts.c.channel == channel)
        async with self.svc.store.read() as uow:
            return (await uow.conn.execute(q)).scalar_one()

    async def decisions(self) -> int:
        async with self.svc.store.read() as uow:
            return (await uow.conn.execute(select(func.count()).select_from(tables.decisions))).scalar_one()

    def invite(self, number: str, **kw: Any) -> bytes:
        return make_invite(number, gate_port=self.sip_port, **kw)


CASES = [case_doc("C-1", "col-a", "13800000001"), case_doc("C-2", "col-a2", "13700000003")]


@contextlib.asynccontextmanager
async def start_service(
    tmp_path: Any, *, sip_port: int, route: str = "sip:{number}@127.0.0.1:5080", cases: list[dict[str, Any]] | None = None,
    edge: str = "inline", trusted_peers: tuple[str, ...] = ("127.0.0.1",), store_url: str | None = None,
) -> AsyncIterator[Running]:
    cfg = build_config(
        {
            "paths": {"data_dir": str(tmp_path)},
            **({"store": {"url": store_url}} if store_url else {}),
            "sip": {
                "listen": f"127.0.0.1:{sip_port}",
                "route": route,
                "extensions": {"1001": "col-a", "1002": "col-a2"},
                "registered_lines": {"bank-a": ["+862161234567", "1001", "1002"]},
                "edge": edge,
                "trusted_peers": trusted_peers,
            },
        }
    )
    clock = FixedClock(TUESDAY_10AM)
    app = build_app(cfg, clock=clock)
    async with app.router.lifespan_context(app):
        svc: Services = app.state.services
        tokens = {}
        for name, role, creditors in USERS:
            _, tokens[name] = await add_user(svc.store, clock, name, role, frozenset(creditors))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gate", timeout=30) as client:
            run = Running(client, svc, tokens, sip_port)
            r = await run.post(
                "/v1/cases:import", "data-a",
                {"cases": CASES if cases is None else cases},
            )
            assert r.status_code == 200, r.text
            yield run
        await svc.gate.drain()
