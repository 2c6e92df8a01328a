"""The history a decision reads is bounded by what its caps need: the newest `limit`
attempts per (relation, answered) group of the number and of the case. Against a
history far larger than any cap (hundreds of attempts on one number, answered and not,
other cases and creditors on the same number, other numbers of the case, released
attempts), every decision from the bounded read equals the one from the full read:
allowed, rule, earliest lawful time and every check's outcome, at many instants. On
SQLite through both statement paths (the writer's driver-level one and Core) and on
PostgreSQL."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert

from adapters.db import tables
from dialer.bootstrap import open_services
from dialer.auth import add_user
from dialer.clock import FixedClock
from dialer.config import build_config
from dialer.imports import parse_cases_payload
from dialer.usecases import history_bound
from policy import AgentSnapshot, DialRequest, evaluate

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI)
N, M = "+8613800000091", "+8613800000092"  # the heavy number; the case's other number


def case(case_id: str, creditor: str, contacts: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "case_id": case_id, "creditor": creditor, "debtor_name": "历史", "status": "active",
        "commission_start": "2026-11-01", "commission_end": "2027-01-31", "assigned_agent": "col-b",
        "contacts": [{"number": n, "relation": r} for n, r in contacts],
    }


def seeded_attempts(pks: dict[str, tuple[int, str]], rnd: random.Random) -> list[dict[str, Any]]:
    """900 attempts: a third in the last two hours, the rest 2-8 days ago (so the day
    before is quiet: instants there are allowed)."""
    rows = []
    for i in range(900):
        case_id, number, relation = rnd.choice([("B-1", N, "self")] * 5 + [("C-9", N, "third_party")] * 3
                                               + [("B-1", M, "family")] * 2)
        pk, creditor = pks[case_id]
        back = timedelta(minutes=rnd.uniform(0, 120)) if i % 3 == 0 else timedelta(hours=rnd.uniform(48, 8 * 24))
        at = (NOW - back).astimezone(timezone.utc)
        rows.append({
            "id": str(uuid.UUID(int=rnd.getrandbits(128))), "case_pk": pk, "creditor": creditor, "case_id": case_id,
            "number": number, "relation": relation, "agent_id": "col-b", "channel": "api",
            "state": "released" if rnd.random() < 0.05 else "dialing", "at": at, "valid_until": at,
            "decision_id": f"d-{i}", "connected": rnd.random() < 0.3,
        })
    return rows


def outcome(decision: Any) -> tuple[Any, ...]:
    return (decision.allowed, decision.rule_id, decision.next_allowed_at,
            tuple((c.rule_id, c.passed) for c in decision.checks))


@pytest.mark.parametrize("url", ["", "sqlite+aiosqlite:///:memory:"], ids=["sqlite-file-driver-path", "sqlite-core-path"])
async def test_a_bounded_history_read_decides_exactly_as_the_full_read_on_sqlite(url: str, tmp_path: Path):
    await compare_bounded_and_full(url, tmp_path)


async def test_a_bounded_history_read_decides_exactly_as_the_full_read_on_postgres(pg_url: str, tmp_path: Path):
    await compare_bounded_and_full(pg_url, tmp_path)


async def compare_bounded_and_full(url: str, tmp_path: Path) -> None:
    cfg = build_config({"paths": {"data_dir": str(tmp_path)}, "store": {"url": url}})
    clock = FixedClock(NOW)
    async with open_services(cfg, clock) as svc:
        data, _ = await add_user(svc.store, clock, "data-b", "data", frozenset({"bank-b", "bank-c"}))
        await svc.gate.import_cases(data, parse_cases_payload({"cases": [
            case("B-1", "bank-b", [(N, "self"), (M, "family")]), case("C-9", "bank-c", [(N, "third_party")]),
        ]}, svc.region_of))
        async with svc.store.read() as uow:
            [b1] = await uow.cases.find("B-1", None)
            [c9] = await uow.cases.find("C-9", None)
        rows = seeded_attempts({"B-1": (b1.pk, "bank-b"), "C-9": (c9.pk, "bank-c")}, random.Random(21))
        async with svc.store.write() as uow:
            await uow.conn.execute(insert(tables.attempts), rows)
        pol = svc.gate.policies.for_creditor("bank-b")
        bound = history_bound(pol)
        assert bound < 20  # far below the ~300 attempts per group seeded
        agent = AgentSnapshot("col-b", "collector", frozenset({"bank-b"}))
        compared = blocked = 0
        smallest = 1.0
        rules: list[str] = []
        # instants from before the newest attempts (later ones counted: clock skew) to days
        # after them (the caps free up): refusals and answers
        for minutes in range(-8 * 60, 4 * 24 * 60, 97):
            now = NOW + timedelta(minutes=minutes)
            since = now - pol.lookback
            async with svc.store.write() as uow:  # the writer's path (driver-level on a SQLite file)
                for number in (N, M):
                    full = await uow.attempts.history(number, b1.pk, "bank-b", since)
                    bounded = await uow.attempts.history(number, b1.pk, "bank-b", since, bound, now)
                    # at most `bound` attempts (with their answers) per group up to now
                    assert len([e for e in bounded if e.at <= now]) <= 2 * 2 * 5 * bound
                    assert {(e.at, e.case_id, e.number, e.kind) for e in bounded} <= {
                        (e.at, e.case_id, e.number, e.kind) for e in full}
                    smallest = min(smallest, len(bounded) / max(len(full), 1))
                    req = DialRequest(case=b1.snapshot(), number=number, agent=agent, channel="api")
                    expected = evaluate(req, full, pol, now)
                    got = evaluate(req, bounded, pol, now)
                    diff = [(a, b) for a, b in zip(outcome(got)[3], outcome(expected)[3]) if a != b]
                    assert outcome(got) == outcome(expected), (number, now, diff, [c for c in got.checks if c.rule_id in {d[0][0] for d in diff}])
                    compared += 1
                    blocked += not expected.allowed
                    rules.append(expected.rule_id)
    assert compared > 100 and 0 < blocked < compared, sorted(set(rules))  # both outcomes were compared
    assert smallest < 0.25  # and the bound did cut the history
