"""Seed a real gate service for the console's end-to-end tests, through its HTTP API.

Two creditors; users of every console role; cases imported with `POST /v1/cases:import`;
dials through `POST /v1/dials` at chosen times (a fixed clock the seed moves), so the
decision log holds real allowed and blocked decisions; one outcome with a call note.
"""

from __future__ import annotations

import re
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import httpx

from tests.support.builders import case_doc, users
from tests.support.harness import Service, in_process

USERS = users("comp-a", "sup-a", "qa-a", "comp-b", "data-a", "data-b", "col-a", "col-a2", "col-b", "pbx", "admin")


@dataclass
class Seeded(Service):
    attempts: list[str] = field(default_factory=list)

    async def blocked_api(self, who: str = "comp-a", **params: str) -> list[dict[str, Any]]:
        """The service's own answer (JSON API): blocked dial decisions (dials and PBX
        rechecks, never what-if checks), newest first."""
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            q = {**params, "limit": "1000", **({"cursor": cursor} if cursor else {})}
            r = await self.client.get("/v1/blocked-dials", params=q, headers=self.auth(who))
            assert r.status_code == 200, r.text
            items += r.json()["items"]
            cursor = r.json()["next"]
            if not cursor:
                break
        # Dials and PBX rechecks (blocked at ring time) alike: the console must list the same.
        return sorted(items, key=lambda i: (i["at"], i["seq"]), reverse=True)

    @asynccontextmanager
    async def console(self, who: str) -> AsyncIterator[httpx.AsyncClient]:
        """A second client (own cookie jar) signed in to the console as `who`."""
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://gate", timeout=30) as c:
            page = await c.get("/console/sign-in")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
            r = await c.post("/console/sign-in", data={"csrf": csrf, "token": self.tokens[who]})
            assert r.status_code == 303, r.text
            yield c


def include_console(app: Any) -> None:
    """The console's router, unless the service's routers already include it."""
    if not any(getattr(r, "path", "").startswith("/console") for r in app.routes):
        from dialer.bootstrap import console_router

        app.include_router(console_router())


async def seed(s: Seeded) -> None:
    c, clock = s.client, s.clock
    await s.import_cases("data-a", [
        case_doc("C-1", "bank-a", "col-a", ("13800000001", "self"), ("13900000002", "family")),
        case_doc("C-2", "bank-a", "col-a2", ("13700000003", "self")),
    ])
    await s.import_cases("data-b", [case_doc("B-1", "bank-b", "col-b", ("18600000006", "self"))])
    # Tuesday 10:00: two allowed, then the hourly cap blocks.
    for _ in range(3):
        r = await s.dial("col-a", "C-1", "13800000001")
        if r.status_code == 201:
            s.attempts.append(r.json()["attempt_id"])
        clock.advance(minutes=1)
    assert len(s.attempts) == 2
    r = await c.post(f"/v1/attempts/{s.attempts[0]}/outcome", headers=s.auth("col-a"), json={
        "disposition": "connected_self", "result": "promise_to_pay", "note": "客户承诺周五还款 500 元",
        "promise": {"amount": "500.00", "date": "2026-11-27"},
    })
    assert r.status_code in (200, 201), r.text
    await s.dial("col-a", "C-2", "13700000003")  # not assigned
    await s.dial("col-a2", "C-2", "13600000000")  # not on the case's list
    # Tuesday 22:00: outside the calling window, several times.
    clock.advance(hours=11)
    for i in range(12):
        await s.dial("col-a" if i % 3 else "col-a2", "C-1" if i % 3 else "C-2", "13900000002" if i % 3 else "13700000003")
        clock.advance(minutes=2)
    await s.dial("col-b", "B-1", "18600000006")
    # Back to Wednesday 10:00 for the reviewers.
    clock.advance(hours=11, minutes=36)


@asynccontextmanager
async def seed_service(tmp_path: Path, console: dict[str, Any] | None = None) -> AsyncIterator[Seeded]:
    config = {"paths": {"data_dir": str(tmp_path)}, "log": {"json": True, "level": "warning"},
              "console": console or {"page_size": 10}}
    async with in_process(config, users=USERS, handle=Seeded, with_app=include_console) as s:
        await seed(s)
        yield s
