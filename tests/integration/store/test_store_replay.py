"""`dialgate simulate --from-log`: a period of the real decision log replayed under another policy."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from rich.console import Console

from dialer import replay_cli
from dialer.bootstrap import load_policies, open_services
from dialer.auth import add_user
from dialer.clock import FixedClock
from dialer.config import build_config
from dialer.imports import parse_cases_payload
from dialer.usecases import LogOutcome, RequestDial
from tests.support.harness import REPO

SH = ZoneInfo("Asia/Shanghai")
# The policy the traffic was decided under: three calls an hour per number.
LOGGED_POLICY = {"cn_holidays": False, "caps": [{"id": "cap.number_hourly", "limit": 3}, {"id": "cap.case_daily"}]}
CASES = [
    {"case_id": "R-1", "creditor": "bank-a", "debtor_name": "回放", "commission_start": "2026-11-01",
     "commission_end": "2026-12-31", "assigned_agent": "col-r",
     "contacts": [{"number": "13800000101", "relation": "self"}, {"number": "13900000102", "relation": "family"}]},
    {"case_id": "R-2", "creditor": "bank-b", "debtor_name": "回放", "commission_start": "2026-11-01",
     "commission_end": "2026-12-31", "assigned_agent": "col-b",
     "contacts": [{"number": "13800000201", "relation": "self"}]},
]


async def _record_traffic(path: Path) -> None:
    cfg = build_config({"paths": {"data_dir": str(path)}, "policy": LOGGED_POLICY})
    clock = FixedClock(datetime(2026, 11, 24, 9, 0, tzinfo=SH))
    async with open_services(cfg, clock) as svc:
        data, _ = await add_user(svc.store, clock, "data-r", "data", frozenset({"bank-a", "bank-b"}))
        col, _ = await add_user(svc.store, clock, "col-r", "collector", frozenset({"bank-a"}))
        colb, _ = await add_user(svc.store, clock, "col-b", "collector", frozenset({"bank-b"}))
        await svc.gate.import_cases(data, parse_cases_payload({"cases": CASES}, svc.region_of))

        async def dial(actor: Any, case_id: str, number: str, at: datetime) -> Any:
            clock.set(at)
            return await svc.gate.request_dial(RequestDial(actor=actor, case_id=case_id, number=number,
                                                           agent_id=actor.name))

        first = await dial(col, "R-1", "13800000101", datetime(2026, 11, 24, 9, 0, tzinfo=SH))
        clock.set(datetime(2026, 11, 24, 9, 2, tzinfo=SH))
        await svc.gate.log_outcome(LogOutcome(actor=col, attempt_id=first.attempt.attempt_id,
                                              disposition="no_answer", result="none", note="无人接听"))
        await dial(col, "R-1", "13800000101", datetime(2026, 11, 24, 9, 20, tzinfo=SH))
        third = await dial(col, "R-1", "13800000101", datetime(2026, 11, 24, 9, 40, tzinfo=SH))  # allowed at 3/h
        fourth = await dial(col, "R-1", "13800000101", datetime(2026, 11, 24, 9, 50, tzinfo=SH))  # blocked at 3/h
        unknown = await dial(col, "R-1", "13700000000", datetime(2026, 11, 24, 10, 0, tzinfo=SH))
        night = await dial(colb, "R-2", "13800000201", datetime(2026, 11, 24, 21, 30, tzinfo=SH))
        assert third.allowed and not fourth.allowed and not unknown.allowed and not night.allowed
        # Outside the replayed period.
        await dial(colb, "R-2", "13800000201", datetime(2026, 11, 26, 10, 0, tzinfo=SH))


@pytest.fixture
def logged(tmp_path: Path) -> Path:
    import asyncio

    asyncio.run(_record_traffic(tmp_path))
    return tmp_path


def _replay(logged: Path, policy: dict[str, Any]) -> tuple[Any, list[Any]]:
    import asyncio

    log_cfg = build_config({"paths": {"data_dir": str(logged)}})
    book = load_policies(build_config({"policy": policy}))
    start, end = replay_cli.period("2026-11-24", "2026-11-25", SH)
    data = asyncio.run(replay_cli.load_from_store(log_cfg, start, end, None))
    return data, replay_cli.replay(data, book)


def test_the_same_policy_replays_every_logged_dial_to_the_same_answer(logged: Path) -> None:
    data, results = _replay(logged, LOGGED_POLICY)
    assert len(results) == 6  # the 26th is outside the period
    assert [r.changed for r in results] == [False] * 6
    # The unknown number cannot be rebuilt from the masked log: kept as logged, and said so.
    assert results[4].rule_id == "contact.not_authorized" and "masked" in results[4].note


def test_a_stricter_hourly_cap_flips_the_third_call_and_compare_lists_only_it(logged: Path) -> None:
    data, results = _replay(logged, {"cn_holidays": False})
    changed = [r for r in results if r.changed]
    assert [(r.dial.allowed, r.dial.rule_id, r.allowed, r.rule_id) for r in changed] == [
        (True, "allow", False, "cap.number_hourly"),
    ]
    lines: list[str] = []
    summary = replay_cli.report(results, data, compare=True, fmt="jsonl", write=lines.append,
                                err=Console(file=io.StringIO()))
    rows = [json.loads(x) for x in "".join(lines).splitlines()]
    assert rows[0]["change"] == "allowed → blocked" and rows[0]["number"] == "138****0101"
    assert rows[-1]["summary"]["by_rule"] == [{"logged_rule_id": "allow", "rule_id": "cap.number_hourly", "count": 1}]
    assert summary["by_creditor"] == {"bank-a": {"allowed_to_blocked": 1, "blocked_to_allowed": 0, "rule_changed": 0}}


def test_a_wider_window_frees_a_blocked_night_call_and_the_csv_says_so(logged: Path) -> None:
    policy = {**LOGGED_POLICY, "creditors": {"bank-b": {"window": {"end": "22:00"}}}}
    data, results = _replay(logged, policy)
    out: list[str] = []
    replay_cli.report(results, data, compare=True, fmt="csv", write=out.append, err=Console(file=io.StringIO()))
    rows = list(csv.DictReader(io.StringIO("".join(out))))
    assert [(r["creditor"], r["logged_rule_id"], r["rule_id"], r["change"]) for r in rows] == [
        ("bank-b", "window.outside_hours", "allow", "blocked → allowed"),
    ]


@pytest.mark.slow
def test_the_command_replays_a_period_with_compare_as_a_table(logged: Path, tmp_path: Path) -> None:
    log_config = tmp_path / "config.toml"
    log_config.write_text(f'[paths]\ndata_dir = "{logged}"\n', encoding="utf-8")
    new = tmp_path / "new.toml"
    new.write_text('[policy]\ncn_holidays = false\n', encoding="utf-8")
    scenario = tmp_path / "rebuilt.jsonl"
    cmd = [sys.executable, "-m", "dialer.cli", "simulate", "--from-log", "--since", "2026-11-24", "--until",
           "2026-11-25", "--config", str(new), "--log-config", str(log_config), "--compare",
           "--write-scenario", str(scenario)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "allowed → blocked" in done.stdout and "cap.number_hourly" in done.stdout
    assert "per creditor" in done.stdout
    # The rebuilt traffic runs as a scenario: every dial gets an answer line.
    lines = [json.loads(x) for x in scenario.read_text(encoding="utf-8").splitlines()]
    assert lines[0]["op"] == "cases" and sum(1 for x in lines if x["op"] == "dial") == 6
    run = subprocess.run([sys.executable, "-m", "dialer.cli", "simulate", "--config", str(new), "--scenario",
                          str(scenario)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == 6
