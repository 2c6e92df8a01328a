"""The real gate service with `[sip]` configured, in-process on a real SQLite file.

``start_service(tmp_path, sip_port=..., route=..., edge=...)`` runs the app's lifespan (which starts
the SIP listener through the composition root), adds users, imports cases through the
HTTP API, and yields a :class:`Running` handle. Time is a fixed Tuesday 10:00 Shanghai.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial
from typing import Any, AsyncIterator

from adapters.db import tables
from sipclient import make_invite
from tests.support.builders import case_doc, users
from tests.support.harness import Service, in_process

USERS = users("col-a", "col-a2", "comp-a", "data-a")


@dataclass
class Running(Service):
    sip_port: int = 0

    async def attempts(self, channel: str | None = None) -> int:
        return await self.rows(tables.attempts, *([tables.attempts.c.channel == channel] if channel else []))

    async def decisions(self) -> int:
        return await self.rows(tables.decisions)

    def invite(self, number: str, **kw: Any) -> bytes:
        return make_invite(number, gate_port=self.sip_port, **kw)


CASES = [case_doc("C-1", "bank-a", "col-a", "13800000001"), case_doc("C-2", "bank-a", "col-a2", "13700000003")]


@contextlib.asynccontextmanager
async def start_service(
    tmp_path: Any, *, sip_port: int, route: str = "sip:{number}@127.0.0.1:5080", cases: list[dict[str, Any]] | None = None,
    edge: str = "inline", trusted_peers: tuple[str, ...] = ("127.0.0.1",), store_url: str | None = None,
) -> AsyncIterator[Running]:
    config = {
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
    async with in_process(config, users=USERS, cases={"data-a": CASES if cases is None else cases},
                          handle=partial(Running, sip_port=sip_port)) as run:
        yield run
