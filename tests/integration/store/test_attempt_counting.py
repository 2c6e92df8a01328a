"""Every call placed counts against the caps as the rules say, whatever the order and the
timing of what follows its decision: the consumption of a click-to-dial authorisation by
the SIP gate, the release by the user agent, the expiry sweep and PBX call events."""

from __future__ import annotations

from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, AsyncIterator
from zoneinfo import ZoneInfo

import pytest

from dialer.auth import add_user
from dialer.bootstrap import open_services
from dialer.clock import FixedClock
from dialer.config import build_config
from dialer.imports import parse_cases_payload
from dialer.model import Principal
from dialer.services import Services
from dialer.usecases import RequestDial
from tests.support.builders import one_case
from tests.support.pg import private_pg_database

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture(params=["sqlite", "postgresql"])
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Services, dict[str, Principal]]]:
    if request.param == "sqlite":
        async with _serving(tmp_path) as got:
            yield got
    else:
        async with private_pg_database("counting") as url, _serving(tmp_path, url) as got:
            yield got


@asynccontextmanager
async def _serving(tmp_path: Path, url: str | None = None) -> AsyncIterator[tuple[Services, dict[str, Principal]]]:
    store: dict[str, Any] = {"busy_timeout_ms": 200, "timeout_s": 2.0}
    if url is not None:
        store["url"] = url
    cfg = build_config({
        "paths": {"data_dir": str(tmp_path)}, "store": store,
        "policy": {"allow_unregistered_lines": True},
    })
    clock = FixedClock(datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI))
    async with open_services(cfg, clock) as svc:
        users = {}
        for name, role in (("col-s", "collector"), ("pbx-s", "pbx"), ("data-s", "data")):
            users[name], _ = await add_user(svc.store, clock, name, role, frozenset({"bank-s"}))
        case = one_case("S-1", "bank-s", "col-s", "13800000077")
        case["commission_start"], case["commission_end"] = "2026-11-01", "2026-12-31"
        await svc.gate.import_cases(users["data-s"], parse_cases_payload({"cases": [case]}, svc.region_of))
        yield svc, users


def _click(users: dict[str, Principal]) -> RequestDial:
    return RequestDial(actor=users["col-s"], case_id="S-1", number="13800000077", agent_id="col-s")


def _invite(users: dict[str, Principal], **kw: Any) -> RequestDial:
    return RequestDial(actor=users["pbx-s"], case_id="S-1", number="13800000077", agent_id="col-s", channel="sip",
                       match_pending=True, **kw)


async def test_a_click_placed_late_in_its_validity_counts_from_when_the_call_was_placed_not_from_the_click(
    served: Any,
) -> None:
    svc, users = served
    clock = svc.clock
    start = clock.now()
    clicked = await svc.gate.request_dial(_click(users))
    assert clicked.allowed and clicked.attempt is not None
    # The PBX places the click-to-dial near the end of its validity: the debtor's phone rings now.
    clock.set(start + timedelta(seconds=svc.config.gate.attempt_validity_s - 1))
    placed = await svc.gate.request_dial(_invite(users))
    assert placed.allowed and placed.reused
    clock.set(start + timedelta(minutes=30))
    second = await svc.gate.request_dial(_invite(users))
    assert second.allowed and not second.reused
    # An hour after the click, but not an hour after the first call was placed: two calls
    # within the last hour already, so a third is over the hourly cap.
    clock.set(start + timedelta(hours=1, seconds=30))
    third = await svc.gate.request_dial(_invite(users))
    assert not third.allowed and third.decision.rule_id == "cap.number_hourly"
