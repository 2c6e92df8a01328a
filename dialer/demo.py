"""Demo data for `dialgate serve --demo`: two banks, a user of every role, some cases.

Seeding is idempotent: run again, it re-imports the cases and keeps the demo users'
tokens. They are written once to `<data_dir>/demo-tokens.json` (mode 0600) and reused
while they still open their account; a token that no longer does (rotated with
`dialgate users rotate-token`, or the file deleted) is replaced by a fresh one.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from dialer.auth import hash_token, new_token
from dialer.imports import parse_cases_payload

if TYPE_CHECKING:
    from dialer.services import Services

DEMO_USERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("agent-a1", "collector", ("bank-a",)),
    ("agent-b1", "collector", ("bank-b",)),
    ("sup-a", "supervisor", ("bank-a",)),
    ("qa-a", "qa", ("bank-a",)),
    ("comp-a", "compliance", ("bank-a",)),
    ("comp-b", "compliance", ("bank-b",)),
    ("data-a", "data", ("bank-a",)),
    ("data-b", "data", ("bank-b",)),
    ("pbx", "pbx", ("bank-a", "bank-b")),
    ("admin", "admin", ()),
)


def demo_cases(today: Any) -> list[dict[str, Any]]:
    start, end = (today - timedelta(days=30)).isoformat(), (today + timedelta(days=60)).isoformat()
    base = {"commission_start": start, "commission_end": end, "status": "active"}
    return [
        {**base, "case_id": "A-1001", "creditor": "bank-a", "debtor_name": "张三", "assigned_agent": "agent-a1",
         "amount_due": "12800.50", "overdue_days": 45,
         "contacts": [{"number": "13800000001", "relation": "self", "name": "张三"},
                      {"number": "13900000002", "relation": "family", "name": "李四"}]},
        {**base, "case_id": "A-1002", "creditor": "bank-a", "debtor_name": "王五", "assigned_agent": "agent-a1",
         "amount_due": "5300", "overdue_days": 92,
         "contacts": [{"number": "13700000003", "relation": "self"},
                      {"number": "02161234567", "relation": "work", "name": "单位前台"}]},
        {**base, "case_id": "A-1003", "creditor": "bank-a", "debtor_name": "赵六", "assigned_agent": "agent-a1",
         "status": "paused", "contacts": [{"number": "13600000004", "relation": "self"}]},
        {**base, "case_id": "A-1004", "creditor": "bank-a", "debtor_name": "孙七", "assigned_agent": "agent-a1",
         "flags": ["dispute"], "contacts": [{"number": "13500000005", "relation": "self"}]},
        {**base, "case_id": "B-2001", "creditor": "bank-b", "debtor_name": "周八", "assigned_agent": "agent-b1",
         "amount_due": "8800", "overdue_days": 30,
         "contacts": [{"number": "13800000001", "relation": "guarantor"},
                      {"number": "18600000006", "relation": "self"}]},
    ]


async def seed_demo(services: Services) -> list[tuple[str, str, str, str]]:
    """Seed and return (name, role, creditors, token) rows."""
    clock, store = services.clock, services.store
    today = clock.now().astimezone(ZoneInfo(services.policies.default.timezone)).date()
    cases = parse_cases_payload({"cases": demo_cases(today)}, services.region_of)
    kept_file = demo_tokens_file(services.config.paths.data_dir)
    kept = _read_tokens(kept_file)
    rows = []
    async with store.write() as uow:
        for name, role, creditors in DEMO_USERS:
            token = kept.get(name, "")
            owner = await uow.users.by_token_hash(hash_token(token)) if token else None
            if owner is None or owner.name != name:
                token = new_token()
                if await uow.users.by_name(name) is None:
                    await uow.users.add(name, role, frozenset(creditors), hash_token(token), clock.now())
                else:
                    await uow.users.set_token(name, hash_token(token))
            rows.append((name, role, ",".join(creditors) or "*", token))
        for c in cases:
            await uow.cases.upsert(c, clock.now())
        await uow.audit.add(at=clock.now(), actor="demo", action="demo.seeded", creditor=None, case_id=None,
                            details={"users": len(rows), "cases": len(cases)})
    _write_tokens(kept_file, {name: token for name, _, _, token in rows})
    return rows


def demo_tokens_file(data_dir: Path) -> Path:
    return Path(data_dir) / "demo-tokens.json"


def _read_tokens(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(data, dict) else {}


def _write_tokens(path: Path, tokens: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # Created 0600 from the start: the file holds live credentials.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(tokens, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
