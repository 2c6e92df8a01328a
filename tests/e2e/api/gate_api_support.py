"""The gate's HTTP API in-process: a real app on a real SQLite file or PostgreSQL
database (every test runs on both), a fixed clock.

`api` gives a client, tokens for users of every role on two creditors, and three cases
imported through the API. Time is a Tuesday 10:00 in Shanghai unless a test moves it.
"""

from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, AsyncIterator

import pytest

from adapters.db import tables
from tests.support.builders import case_doc, users
from tests.support.harness import Service, in_process
from tests.support.pg import private_pg_database

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


@asynccontextmanager
async def _serving(tmp_path: Any, engine: str) -> AsyncIterator[Api]:
    config: dict[str, Any] = {"paths": {"data_dir": str(tmp_path)}, "log": {"json": True}}
    async with AsyncExitStack() as stack:
        if engine == "postgresql":
            config["store"] = {"url": await stack.enter_async_context(private_pg_database("api"))}
        api = await stack.enter_async_context(in_process(
            config, users=USERS, cases={"data-a": CASES_A, "data-b": CASES_B}, handle=Api, prepare=_keep_events))
        yield api


@pytest.fixture(params=["sqlite", "postgresql"])
async def api(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Api]:
    """The API on the SQLite file (the embedded default) and on PostgreSQL."""
    async with _serving(tmp_path, request.param) as api:
        yield api


@pytest.fixture
async def sqlite_api(tmp_path: Any) -> AsyncIterator[Api]:
    """The API on the SQLite file only, for what only that engine has (its files)."""
    async with _serving(tmp_path, "sqlite") as api:
        yield api
