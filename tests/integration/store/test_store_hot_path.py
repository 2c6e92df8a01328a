"""The SQLite writer's driver-level hot path (`adapters/db/ledger_sqlite.py`) writes and
reads exactly what the SQLAlchemy Core path does.

The same scenario runs on a SQLite file (decide-and-reserve through plain pysqlite
statements) and on an in-memory SQLite database (the Core statements); the rows it
leaves must be identical, byte for byte in their stored text, once the random ids are
numbered by first appearance — and a chain built half by one path and half by the
other must verify.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text

from adapters.db.ledger_sqlite import SqliteCaseRepository
from adapters.db.store import SqlUnitOfWork
from dialer.bootstrap import open_services
from dialer.services import Services
from dialer.audit import verify
from dialer.auth import add_user
from dialer.clock import FixedClock
from dialer.config import build_config
from dialer.imports import parse_cases_payload
from dialer.usecases import LogOutcome, RequestDial
from tests.support.builders import one_case

SHANGHAI = ZoneInfo("Asia/Shanghai")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
PREV_HASH = re.compile(r'"prev_hash":"[0-9a-f]{64}"')  # follows from the random ids
TABLES = {
    # table: (columns compared, order). Attempts in insertion order (rowid) within one
    # `at`: two UUIDv7 ids made in the same millisecond sort at random.
    "attempts": ("case_pk, creditor, case_id, number, relation, agent_id, channel, state, at, valid_until, "
                 "decision_id, connected, id, typeof(at), typeof(connected)", "at, rowid"),
    "decisions": ("chain, seq, decision_id, kind, at, creditor, case_id, agent_id, allowed, rule_id, attempt_id, "
                  "record, typeof(record), typeof(at), typeof(allowed)", "chain, seq"),
    "outbox": ("event_id, type, creditor, case_id, case_seq, occurred_at, payload, published_at", "id"),
    "chain_heads": ("chain, seq", "chain"),
    "cases": ("id, case_id, event_seq, follow_up_status, next_action_date", "id"),
    "appointments": ("case_pk, number, at, attempt_id", "id"),
}


async def _scenario(svc: Services, clock: FixedClock) -> None:
    users = {}
    for name, role in (("col-h", "collector"), ("data-h", "data"), ("pbx-h", "pbx")):
        users[name], _ = await add_user(svc.store, clock, name, role, frozenset({"bank-h"}))
    cases = [one_case("H-1", "bank-h", "col-h", "13800000081"), one_case("H-2", "bank-h", "col-h", "13800000082")]
    for c in cases:
        c["commission_start"], c["commission_end"] = "2026-11-01", "2026-12-31"
    await svc.gate.import_cases(users["data-h"], parse_cases_payload({"cases": cases}, svc.region_of))
    col = users["col-h"]
    first = await svc.gate.request_dial(RequestDial(actor=col, case_id="H-1", number="13800000081", agent_id="col-h"))
    assert first.allowed and first.attempt is not None
    # A callback appointment, read back by the next decision's appointments query.
    callback = clock.now() + timedelta(hours=2)
    await svc.gate.log_outcome(LogOutcome(actor=col, attempt_id=first.attempt.attempt_id, disposition="connected_self",
                                          result="callback", note="call back later", callback_at=callback))
    clock.advance(minutes=10)
    outcomes = []
    for case_id, number in (("H-1", "13800000081"), ("H-2", "13800000082"), ("H-1", "13800000081"),
                            ("H-1", "13800000081"), ("H-2", "13800000082")):
        r = await svc.gate.request_dial(RequestDial(actor=col, case_id=case_id, number=number, agent_id="col-h"))
        outcomes.append((r.allowed, r.decision.rule_id))
        clock.advance(minutes=1)
    # The history the raw path read back made some of these blocked: both paths agree.
    assert any(not allowed for allowed, _ in outcomes), outcomes
    # The SIP gate's shapes: the agent looked up by name, a click-to-dial authorisation
    # found by agent and number (then by id) and consumed, one with none to find.
    clock.advance(hours=3)
    pbx = users["pbx-h"]
    clicked = await svc.gate.request_dial(RequestDial(actor=col, case_id="H-2", number="13800000082", agent_id="col-h"))
    assert clicked.allowed and clicked.attempt is not None
    sip = dict(actor=pbx, case_id="H-2", number="13800000082", agent_id="col-h", channel="sip", match_pending=True,
               caller_line="1001", lines_by_creditor={"bank-h": frozenset({"1001"})})
    consumed = await svc.gate.request_dial(RequestDial(**sip))
    assert consumed.reused and consumed.attempt.attempt_id == clicked.attempt.attempt_id  # type: ignore[union-attr]
    clicked = await svc.gate.request_dial(RequestDial(actor=col, case_id="H-1", number="13800000081", agent_id="col-h"))
    by_id = await svc.gate.request_dial(RequestDial(**{**sip, "case_id": "H-1", "number": "13800000081",
                                                       "attempt_id": clicked.attempt.attempt_id}))  # type: ignore[union-attr]
    assert by_id.reused
    fresh = await svc.gate.request_dial(RequestDial(**{**sip, "case_id": "H-1", "number": "13800000081"}))
    assert not fresh.reused
    # No case id: resolved inside the write, by the pending authorisation, else by the
    # agent's one active case holding the number.
    clicked = await svc.gate.request_dial(RequestDial(actor=col, case_id="H-2", number="13800000082", agent_id="col-h"))
    by_agent = await svc.gate.request_dial(RequestDial(**{**sip, "case_id": ""}))
    assert by_agent.reused and by_agent.attempt.attempt_id == clicked.attempt.attempt_id  # type: ignore[union-attr]
    clock.advance(hours=2)
    resolved = await svc.gate.request_dial(RequestDial(**{**sip, "case_id": ""}))
    assert resolved.record.case_id == "H-2" and not resolved.reused


async def _dump(svc: Services) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    async with svc.store.read() as uow:
        for table, (cols, order) in TABLES.items():
            rows = (await uow.conn.execute(text(f"SELECT {cols} FROM {table} ORDER BY {order}"))).all()
            out[table] = [tuple(r) for r in rows]
    return out


def _numbered(dump: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    """Random ids replaced by their order of first appearance."""
    seen: dict[str, str] = {}

    def sub(value: Any) -> Any:
        if isinstance(value, str):
            value = PREV_HASH.sub('"prev_hash":"<hash>"', value)
            return UUID.sub(lambda m: seen.setdefault(m.group(0), f"<id{len(seen)}>"), value)
        return value

    return {table: [tuple(sub(v) for v in row) for row in rows] for table, rows in dump.items()}


async def _run(url: str, data_dir: Path) -> tuple[dict[str, list[tuple[Any, ...]]], bool]:
    cfg = build_config({"paths": {"data_dir": str(data_dir)}, "store": {"url": url}})
    clock = FixedClock(datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI))
    async with open_services(cfg, clock) as svc:
        hot = svc.store._writer is not None  # noqa: SLF001 - which path ran is the point of the test
        await _scenario(svc, clock)
        report = await verify(svc.store)
        assert report.ok, report
        return _numbered(await _dump(svc)), hot


async def test_the_sqlite_writers_driver_statements_leave_the_same_rows_as_the_core_statements(tmp_path: Path) -> None:
    raw_rows, raw_hot = await _run(f"sqlite+aiosqlite:///{tmp_path / 'file' / 'dialgate.db'}", tmp_path / "file")
    core_rows, core_hot = await _run("sqlite+aiosqlite://", tmp_path / "memory")
    assert raw_hot and not core_hot
    assert raw_rows["attempts"], "the scenario reserved nothing"
    for table in TABLES:
        for a, b in zip(raw_rows[table], core_rows[table]):
            assert a == b, (table, [(x, y) for x, y in zip(a, b) if x != y])
        assert len(raw_rows[table]) == len(core_rows[table]), table


async def test_a_chain_appended_by_both_paths_verifies(tmp_path: Path) -> None:
    cfg = build_config({"paths": {"data_dir": str(tmp_path)},
                        "store": {"url": f"sqlite+aiosqlite:///{tmp_path / 'dialgate.db'}"}})
    clock = FixedClock(datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI))
    async with open_services(cfg, clock) as svc:
        await _scenario(svc, clock)  # driver statements
        written = len((await _dump(svc))["decisions"])
        async with svc.store.read() as uow:
            record = next(iter((await uow.decisions.get_many(
                [(await uow.conn.execute(text("SELECT decision_id FROM decisions LIMIT 1"))).scalar_one()]
            )).values()))
        # Two more records through the Core statements on an ordinary connection.
        async with svc.store.engine.begin() as conn:
            uow = SqlUnitOfWork(conn, False, evidence=svc.store.evidence)
            for i in range(2):
                await uow.decisions.append(replace(record, decision_id=f"core-{i}"))
        clock.advance(hours=2)
        await svc.gate.request_dial(RequestDial(
            actor=(await _principal(svc, "col-h")), case_id="H-2", number="13800000082", agent_id="col-h"))
        report = await verify(svc.store)
        assert report.ok, report
        async with svc.store.read() as uow:
            kinds = [r[0] for r in (await uow.conn.execute(text("SELECT decision_id FROM decisions ORDER BY seq"))).all()]
        assert kinds[-3:-1] == ["core-0", "core-1"] and len(kinds) == written + 3


async def _principal(svc: Services, name: str) -> Any:
    async with svc.store.read() as uow:
        return await uow.users.by_name(name)


async def test_the_writers_case_read_returns_the_same_case_as_the_core_read(tmp_path: Path) -> None:
    cfg = build_config({"paths": {"data_dir": str(tmp_path)},
                        "store": {"url": f"sqlite+aiosqlite:///{tmp_path / 'dialgate.db'}"}})
    clock = FixedClock(datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI))
    async with open_services(cfg, clock) as svc:
        data, _ = await add_user(svc.store, clock, "data-r", "data", frozenset({"bank-r"}))
        case = one_case("R-1", "bank-r", "col-r", "13800000091")
        case["flags"] = ["dispute"]
        case["contacts"] += [
            {"number": "13800000092", "relation": "family", "name": "李四", "tz": "Asia/Urumqi"},
            {"number": "13800000093", "relation": "third_party", "status": "invalid", "do_not_call": True},
        ]
        await svc.gate.import_cases(data, parse_cases_payload({"cases": [case]}, svc.region_of))
        async with svc.store.write() as uow:
            assert isinstance(uow.cases, SqliteCaseRepository)
            by_driver = await uow.cases.find("R-1", None)
        async with svc.store.read() as uow:
            assert not isinstance(uow.cases, SqliteCaseRepository)
            by_core = await uow.cases.find("R-1", None)
    assert by_driver == by_core
    assert [(c.relation, c.name, c.tz, c.status, c.do_not_call) for c in by_driver[0].contacts] == [
        ("self", None, None, "valid", False), ("family", "李四", "Asia/Urumqi", "valid", False),
        ("third_party", None, None, "invalid", True)]


async def test_the_writers_lookup_of_an_agents_active_cases_by_number_matches_the_core_lookup(tmp_path: Path) -> None:
    cfg = build_config({"paths": {"data_dir": str(tmp_path)},
                        "store": {"url": f"sqlite+aiosqlite:///{tmp_path / 'dialgate.db'}"}})
    clock = FixedClock(datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI))
    async with open_services(cfg, clock) as svc:
        for creditor in ("bank-r", "bank-s"):
            data, _ = await add_user(svc.store, clock, f"data-{creditor}", "data", frozenset({creditor}))
            cases = [one_case("R-1", creditor, "col-r", "13800000091"), one_case("R-2", creditor, "col-r", "13800000095"),
                     one_case("R-3", creditor, "col-x", "13800000091"), one_case("R-4", creditor, "col-r", "13800000091")]
            # Added out of number order: contacts come in id order (the Core lookup's), not
            # in the (case_pk, number) index's.
            cases[0]["contacts"] += [
                {"number": "13800000093", "relation": "third_party", "status": "invalid", "do_not_call": True},
                {"number": "13800000092", "relation": "family", "name": "李四", "tz": "Asia/Urumqi"},
            ]
            cases[3]["status"] = "paused"
            await svc.gate.import_cases(data, parse_cases_payload({"cases": cases}, svc.region_of))
        async with svc.store.write() as uow:
            assert isinstance(uow.cases, SqliteCaseRepository)
            by_driver = await uow.cases.active_for_agent("col-r", "+8613800000091")
            none_by_driver = await uow.cases.active_for_agent("col-r", "+8613800000099")
        async with svc.store.read() as uow:
            assert not isinstance(uow.cases, SqliteCaseRepository)
            by_core = await uow.cases.active_for_agent("col-r", "+8613800000091")
    assert none_by_driver == []
    assert by_driver == by_core
    assert [(c.creditor, c.case_id, len(c.contacts)) for c in by_driver] == [("bank-r", "R-1", 3), ("bank-s", "R-1", 3)]
    assert [k.number for k in by_driver[0].contacts] == ["+8613800000091", "+8613800000093", "+8613800000092"]


async def test_the_writer_finds_the_same_oldest_live_authorisation_as_the_core_lookup(tmp_path: Path) -> None:
    from dialer.model import AttemptRecord

    cfg = build_config({"paths": {"data_dir": str(tmp_path)},
                        "store": {"url": f"sqlite+aiosqlite:///{tmp_path / 'dialgate.db'}"}})
    clock = FixedClock(datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI))
    now = clock.now()
    async with open_services(cfg, clock) as svc:
        data, _ = await add_user(svc.store, clock, "data-p", "data", frozenset({"bank-p"}))
        await svc.gate.import_cases(data, parse_cases_payload(
            {"cases": [one_case("P-1", "bank-p", "col-p", "13800000071")]}, svc.region_of))
        async with svc.store.read() as uow:
            case = (await uow.cases.find("P-1", None))[0]

        def attempt(name: str, minutes_ago: int, state: str = "authorised", valid_for: int = 10) -> AttemptRecord:
            at = now - timedelta(minutes=minutes_ago)
            return AttemptRecord(attempt_id=name, case_pk=case.pk, creditor="bank-p", case_id="P-1",
                                 number="+8613800000071", relation="self", agent_id="col-p", channel="api",
                                 state=state, at=at, valid_until=at + timedelta(minutes=valid_for), decision_id=f"d-{name}")

        # Inserted out of time order, the oldest valid longest (its index orders by expiry);
        # two that must not count.
        async with svc.store.write() as uow:
            for a in (attempt("a-3m", 3), attempt("a-5m", 5, valid_for=30), attempt("a-1m", 1),
                      attempt("a-9m-dialing", 9, "dialing"),
                      attempt("a-20m-stale", 20)):
                await uow.attempts.add(a)
        async with svc.store.write() as uow:
            by_driver = await uow.attempts.find_pending("col-p", "+8613800000071", now)
            none_by_driver = await uow.attempts.find_pending("col-p", "+8613800000072", now)
        async with svc.store.read() as uow:
            by_core = await uow.attempts.find_pending("col-p", "+8613800000071", now)
    assert none_by_driver is None
    assert by_driver == by_core and by_driver is not None and by_driver.attempt_id == "a-5m"
