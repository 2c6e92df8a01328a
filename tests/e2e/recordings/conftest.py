"""The recordings API in-process: the real app on a real SQLite file and a real
filesystem vault with a key file, a fixed clock, users of every role on two creditors,
and cases imported through the API."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest

from tests.support.builders import case_doc, users
from tests.support.harness import Service, in_process

USERS = users("col-a", "sup-a", "qa-a", "qa-b", "comp-a", "comp-b", "data-a", "data-b", "pbx", "admin", "admin2")


@dataclass
class Api(Service):
    data_dir: Path | None = None

    async def upload(self, body: Any, *, who: str = "pbx", content_type: str = "audio/wav", **params: Any) -> httpx.Response:
        return await self.client.post(
            "/v1/recordings", params=params, content=body,
            headers=self.auth(who, **{"Content-Type": content_type}),
        )

    async def dial(self, case_id: str, number: str, agent: str = "col-a") -> str:  # type: ignore[override]
        r = await self.post("/v1/dials", agent, {"case_id": case_id, "number": number, "agent_id": agent})
        assert r.status_code == 201, r.text
        return r.json()["attempt_id"]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    config = {
        "paths": {"data_dir": str(tmp_path)},
        "log": {"json": True},
        "recordings": {"max_size_mb": 8, "creditors": {"bank-b": {"retention": "1095d"}}},
    }
    cases = {"data-a": [case_doc("C-1", "bank-a", "col-a", "13800000001"), case_doc("C-2", "bank-a", "col-a", "13700000003")],
             "data-b": [case_doc("B-1", "bank-b", "col-b", "18600000006")]}
    async with in_process(config, users=USERS, cases=cases, handle=partial(Api, data_dir=tmp_path),
                          client_address=("10.1.2.3", 40000)) as api:
        yield api
