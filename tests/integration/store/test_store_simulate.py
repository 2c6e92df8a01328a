"""`dialgate simulate`: a JSONL scenario through the same use cases, in-memory SQLite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dialer.config import build_config
from dialer.simulate import ScenarioError, run
from tests.support.harness import REPO

CASE = {"case_id": "S1", "creditor": "bank-a", "debtor_name": "张三", "commission_start": "2026-11-01",
        "commission_end": "2026-12-31", "assigned_agent": "a1",
        "contacts": [{"number": "13800000001", "relation": "self"}]}


def _dial(ref: str, at: str, op: str = "dial") -> str:
    return json.dumps({"op": op, "ref": ref, "at": at, "case_id": "S1", "number": "13800000001", "agent_id": "a1"})


SCENARIO = [
    json.dumps({"op": "cases", "cases": [CASE]}),
    _dial("d1", "2026-11-24T08:00:00+08:00"),
    json.dumps({"op": "outcome", "ref": "d1", "at": "2026-11-24T08:01:00+08:00", "disposition": "no_answer"}),
    _dial("d2", "2026-11-24T08:10:00+08:00"),
    _dial("d3", "2026-11-24T08:20:00+08:00"),
    _dial("c1", "2026-11-24T09:00:01+08:00", op="check"),
    json.dumps({"op": "repayment", "at": "2026-11-24T10:00:00+08:00", "creditor": "bank-a", "case_id": "S1",
                "settled": True}),
    _dial("d4", "2026-11-24T10:10:00+08:00"),
]


async def _run(lines: list[str], policy: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    await run(build_config({"policy": policy or {"cn_holidays": False}}), lines, out.append)
    return out


async def test_a_scenario_prints_one_line_per_dial_and_check_with_the_deciding_rule() -> None:
    out = await _run(SCENARIO)
    assert [(o["ref"], o["op"], o["allowed"], o["rule_id"]) for o in out] == [
        ("d1", "dial", True, "allow"),
        ("d2", "dial", True, "allow"),
        ("d3", "dial", False, "cap.number_hourly"),
        ("c1", "check", True, "allow"),
        ("d4", "dial", False, "case.closed"),
    ]
    assert out[2]["next_allowed_at"] == "2026-11-24T09:00:00+08:00"
    assert set(out[0]) == {"ref", "op", "at", "allowed", "rule_id", "next_allowed_at", "decision_id"}


async def test_a_policy_change_is_tried_on_the_same_traffic() -> None:
    strict = {"cn_holidays": False, "caps": [
        {"id": "cap.number_hourly", "scope": "number", "relations": ["self"], "count": "attempts", "limit": 1,
         "window": "1h"}]}
    out = await _run(SCENARIO, strict)
    assert [o["rule_id"] for o in out][:3] == ["allow", "cap.number_hourly", "cap.number_hourly"]


@pytest.mark.parametrize("bad,reason", [
    ('{"op":"dial"', "not JSON"),
    ('{"op":"teleport","at":"2026-11-24T08:00:00+08:00"}', "op: expected one of"),
    (_dial("x", "2026-11-24T07:00:00+08:00"), "earlier than the previous line"),
    (json.dumps({"op": "dial", "ref": "x", "at": "2026-11-24T11:00:00", "case_id": "S1", "number": "1",
                 "agent_id": "a1"}), "needs a UTC offset"),
    (json.dumps({"op": "outcome", "ref": "nope", "at": "2026-11-24T11:00:00+08:00", "disposition": "busy"}),
     "no earlier dial"),
])
async def test_a_malformed_line_stops_the_run_with_its_line_number_and_reason(bad: str, reason: str) -> None:
    lines = SCENARIO[:2] + [bad] + SCENARIO[2:]
    with pytest.raises(ScenarioError) as caught:
        await _run(lines)
    assert caught.value.line == 3
    assert reason in caught.value.reason


async def test_an_outcome_of_a_dial_the_tried_policy_blocked_is_skipped() -> None:
    lines = [SCENARIO[0], _dial("d1", "2026-11-24T22:00:00+08:00"),
             json.dumps({"op": "outcome", "ref": "d1", "at": "2026-11-24T22:01:00+08:00", "disposition": "busy"})]
    out = await _run(lines)
    assert [o["rule_id"] for o in out] == ["window.outside_hours"]


@pytest.mark.slow
def test_the_simulate_command_prints_json_lines_and_exits_2_on_a_bad_line(tmp_path: Path) -> None:
    scenario = tmp_path / "s.jsonl"
    policy = tmp_path / "p.toml"
    policy.write_text("[policy]\ncn_holidays = false\n", encoding="utf-8")
    scenario.write_text("\n".join(SCENARIO) + "\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "dialer.cli", "simulate", "--config", str(policy), "--scenario", str(scenario)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["ref"] for line in done.stdout.splitlines()] == ["d1", "d2", "d3", "c1", "d4"]
    scenario.write_text("\n".join(SCENARIO[:2] + ["{oops"]) + "\n", encoding="utf-8")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2
    assert "s.jsonl:3" in done.stderr


async def test_every_dial_gets_an_answer_line_even_when_the_gate_refuses_it_before_the_policy() -> None:
    other = {**CASE, "case_id": "B9", "creditor": "bank-b", "assigned_agent": "b1",
             "contacts": [{"number": "13900000009", "relation": "self"}]}
    lines = [
        json.dumps({"op": "cases", "cases": [CASE, other]}),
        # a1 dials bank-b's case: a1 cannot see bank-b's data.
        json.dumps({"op": "dial", "ref": "x1", "at": "2026-11-24T09:00:00+08:00", "case_id": "B9",
                    "number": "13900000009", "agent_id": "a1"}),
        # An unknown number on a1's own case.
        json.dumps({"op": "dial", "ref": "x2", "at": "2026-11-24T09:01:00+08:00", "case_id": "S1",
                    "number": "13700000000", "agent_id": "a1"}),
        # S1 is reassigned to b1 (re-imported); a1 dials it afterwards.
        json.dumps({"op": "cases", "at": "2026-11-24T09:02:00+08:00", "cases": [{**CASE, "assigned_agent": "b1"}]}),
        _dial("x3", "2026-11-24T09:03:00+08:00"),
        # A collector who holds no case of the scenario at all.
        json.dumps({"op": "dial", "ref": "x4", "at": "2026-11-24T09:04:00+08:00", "case_id": "S1",
                    "number": "13800000001", "agent_id": "nobody"}),
        json.dumps({"op": "outcome", "ref": "x4", "at": "2026-11-24T09:05:00+08:00", "disposition": "busy"}),
        json.dumps({"op": "dial", "ref": "x5", "at": "2026-11-24T09:06:00+08:00", "case_id": "S1",
                    "number": "13800000001", "agent_id": "b1"}),
    ]
    out = await _run(lines)
    assert [(o["ref"], o["allowed"], o["rule_id"]) for o in out] == [
        ("x1", False, "case.not_found"),
        ("x2", False, "contact.not_authorized"),
        ("x3", False, "agent.not_assigned"),
        ("x4", False, "agent.not_assigned"),
        ("x5", True, "allow"),
    ]
    assert out[0]["decision_id"] is None and out[1]["decision_id"]


@pytest.mark.slow
def test_the_documented_example_scenario_runs_as_written_and_answers_every_dial() -> None:
    cmd = [sys.executable, "-m", "dialer.cli", "simulate", "--config", "examples/policy-new.toml",
           "--scenario", "examples/scenario.jsonl"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    answers = {a["ref"]: (a["allowed"], a["rule_id"]) for a in map(json.loads, done.stdout.splitlines())}
    scenario = (REPO / "examples" / "scenario.jsonl").read_text(encoding="utf-8").splitlines()
    asked = [json.loads(x)["ref"] for x in scenario if json.loads(x)["op"] in ("dial", "check")]
    assert sorted(answers) == sorted(asked)
    assert answers["d3"] == (False, "cap.number_hourly")  # the debtor's number, called as a relative's too
    assert answers["d4"] == (False, "case.not_found")  # another creditor's case
    assert answers["d5"] == (False, "contact.not_authorized")  # an unknown number
    assert answers["d6"] == (False, "agent.not_assigned")  # the former collector of a reassigned case
    assert answers["d8"] == (False, "window.outside_hours")  # bank-b's window ends at 20:30 under the new policy
