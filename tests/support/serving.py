"""A gate on either engine with one case and its users, in process: what the store-level
race, counting and gate tests start from."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from dialer.auth import add_user
from dialer.bootstrap import open_services
from dialer.clock import FixedClock
from dialer.config import build_config
from dialer.imports import parse_cases_payload
from dialer.model import Principal
from dialer.services import Services
from tests.support.builders import one_case
from tests.support.pg import private_pg_database

START = datetime(2026, 11, 24, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


@asynccontextmanager
async def store_url(engine: str, prefix: str) -> AsyncIterator[str | None]:
    """None for "sqlite" (the file in the data directory), else a private PostgreSQL database."""
    if engine == "sqlite":
        yield None
    else:
        async with private_pg_database(prefix) as url:
            yield url


@asynccontextmanager
async def one_case_gate(
    tmp_path: Path, url: str | None, *, creditor: str, case_id: str, number: str,
    users: Sequence[tuple[str, str]], store: dict[str, Any], config: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[Services, dict[str, Principal]]]:
    """Services at `START` (a fixed clock) with `users` (name, role) of `creditor` and its
    case `case_id` on `number`, imported by the data user and assigned to the first
    collector. SIP dials here present no caller line: the registered-line rule has its
    own tests. `config` adds sections; its `policy` goes beside that setting."""
    extra = dict(config or {})
    policy = {"allow_unregistered_lines": True, **extra.pop("policy", {})}
    cfg = build_config({
        "paths": {"data_dir": str(tmp_path)}, "store": {**store, **({"url": url} if url else {})},
        "policy": policy, **extra,
    })
    clock = FixedClock(START)
    async with open_services(cfg, clock) as svc:
        principals = {}
        for name, role in users:
            principals[name], _ = await add_user(svc.store, clock, name, role, frozenset({creditor}))
        agent = next(name for name, role in users if role == "collector")
        data = next(name for name, role in users if role == "data")
        case = one_case(case_id, creditor, agent, number)
        case["commission_start"], case["commission_end"] = "2026-11-01", "2026-12-31"
        await svc.gate.import_cases(principals[data], parse_cases_payload({"cases": [case]}, svc.region_of))
        yield svc, principals
