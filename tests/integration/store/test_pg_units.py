"""PostgreSQL's decision units on their own asyncpg connections (adapters/db/pg_units.py):
a pooled connection the server dropped costs no decision, the unit's first locks taken as
literals are the locks every other unit takes, and a transaction that failed is never
answered as committed."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any, AsyncIterator
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from adapters.db.leader import asyncpg_dsn
from dialer.auth import add_user
from dialer.bootstrap import open_services
from dialer.clock import FixedClock
from dialer.config import build_config
from dialer.errors import StoreUnavailable
from dialer.imports import parse_cases_payload
from dialer.services import Services
from dialer.usecases import RequestDial
from tests.support.builders import one_case

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
async def served(workdir: Path, pg_url: str) -> AsyncIterator[tuple[Services, Any, str]]:
    cfg = build_config({
        "paths": {"data_dir": str(workdir)}, "store": {"url": pg_url},
        "policy": {"allow_unregistered_lines": True},
    })
    clock = FixedClock(datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI))
    async with open_services(cfg, clock) as svc:
        collector, _ = await add_user(svc.store, clock, "col-u", "collector", frozenset({"bank-u"}))
        data, _ = await add_user(svc.store, clock, "data-u", "data", frozenset({"bank-u"}))
        row = one_case("U-1", "bank-u", "col-u", "13800001001")
        row["commission_start"], row["commission_end"] = "2026-11-01", "2026-12-31"
        await svc.gate.import_cases(data, parse_cases_payload({"cases": [row]}, svc.region_of))
        yield svc, collector, asyncpg_dsn(pg_url)


def _dial(collector: Any) -> RequestDial:
    return RequestDial(actor=collector, case_id="U-1", number="13800001001", agent_id="col-u")


async def test_a_dial_whose_pooled_connection_the_server_dropped_is_decided_on_a_new_one(served: Any) -> None:
    svc, collector, dsn = served
    first = await svc.gate.request_dial(_dial(collector))
    assert first.allowed  # and its connection went back to the pool
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        while await admin.fetchval("SELECT count(*) FROM pg_stat_activity "
                                   "WHERE datname = current_database() AND pid <> pg_backend_pid()"):
            await asyncio.sleep(0.01)  # until every other backend of the database has exited
    finally:
        await admin.close()
    second = await svc.gate.request_dial(_dial(collector))
    assert second.allowed, second.decision.rule_id
    assert second.attempt is not None and second.attempt.attempt_id != first.attempt.attempt_id


@pytest.mark.parametrize("key", ["case:O'Brien", "case:a\\'b", "number:'); SELECT 1; --"])
async def test_a_units_first_locks_are_the_locks_every_unit_takes_whatever_the_key_holds(
    served: Any, key: str
) -> None:
    svc, _, dsn = served
    other = await asyncpg.connect(dsn)
    try:
        async with svc.store.ledger([key, "number:+8613800001001"]):
            held = await other.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", key)
        free = await other.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", key)
    finally:
        await other.close()
    assert (held, free) == (False, True)


async def test_a_unit_whose_transaction_failed_is_not_answered_as_committed(served: Any) -> None:
    svc, _, _ = served
    with pytest.raises(StoreUnavailable, match="ROLLBACK"):
        async with svc.store.ledger(["case:U-1"]) as ledger:
            with pytest.raises(asyncpg.DivisionByZeroError):
                await ledger.raw.execute("SELECT 1 / 0")



class _StuckConnection:
    """A pooled connection as asyncpg can leave it when its server went away while it
    consumed an error: idle and open to every check, refusing the next operation."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def is_closed(self) -> bool:
        return False

    def is_in_transaction(self) -> bool:
        return False

    async def execute(self, *args: Any, **kwargs: Any) -> str:
        raise asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress")

    def terminate(self) -> None:
        self.real.terminate()


async def test_a_dial_whose_pooled_connection_is_stuck_mid_operation_is_decided_on_another_one(served: Any) -> None:
    # Seen under a primary's loss: that connection must cost no decision and never a 500.
    svc, collector, _ = served
    first = await svc.gate.request_dial(_dial(collector))
    assert first.allowed
    pool = svc.store._pg_units.connections
    stuck = _StuckConnection(pool._idle.pop())  # the first dial's connection, back in the pool
    pool._idle.append(stuck)
    second = await svc.gate.request_dial(_dial(collector))
    assert second.allowed, second.decision.rule_id
    assert stuck not in pool._idle  # set aside, not handed out again
