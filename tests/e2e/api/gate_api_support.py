"""The gate's HTTP API in-process: a real app on a real SQLite file, a fixed clock.

`api` gives a client, tokens for users of every role on two creditors, and three cases
imported through the API. Time is a Tuesday 10:00 in Shanghai unless a test moves it.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

import pytest

from adapters.db import tables
from tests.support.builders import case_doc, users
from tests.support.harness import Service, in_process

USERS = users("col-a", "col-a2", "col-b", "sup-a", "qa-a", "comp-a", "comp-b", "data-a", "data-b", "pbx", "admin")

CASES_A = [
    case_doc("C-1", "bank-a", "col-a", ("13800000001", "self"), ("13900000002", "family")),
    case_doc("C-2", "bank-a", "col-a2", ("13700000003", "self")),
]
CASES_B = [case_doc("B-1", "bank-b", "col-b", ("18600000006", "self"))]


class Api(Service):
    async def snapshot(self) -> dict[str, int]:
        """Row counts of every table that a request could write."""
        return {
            name: await self.rows(getattr(tables, name))
            for name in ("cases", "contacts", "attempts", "outcomes", "appointments", "decisions", "outbox",
                         "repayments", "audit_log", "users")
        }


def _keep_events(svc: Any) -> None:
    # As with `[mqtt] url` set, minus the broker: these tests read the events the
    # use cases put in the outbox (without a bus the store keeps none).
    svc.store.events = True


@pytest.fixture
async def api(tmp_path: Any) -> AsyncIterator[Api]:
    config = {"paths": {"data_dir": str(tmp_path)}, "log": {"json": True}}
    async with in_process(config, users=USERS, cases={"data-a": CASES_A, "data-b": CASES_B}, handle=Api,
                          prepare=_keep_events) as api:
        yield api
