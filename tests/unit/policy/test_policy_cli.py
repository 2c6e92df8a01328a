"""`dialgate policy lint` and `dialgate policy explain` (dialer/policy_cli.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from dialer.policy_cli import app

runner = CliRunner()

GOOD = """
[policy]
timezone = "Asia/Shanghai"

[policy.creditors.bank-b]
window = { end = "20:30" }
cn_holidays = true
preset = "cn-cba-2026"
caps = [{ id = "cap.number_daily", limit = 3 }]

[sip.registered_lines]
bank-b = ["+862161234567", "1001"]
"""


ARRANGEMENT_2027 = """# a test arrangement (not the State Council's)
year 2027
off  2027-01-01 2027-01-03  元旦 New Year's Day
off  2027-02-05 2027-02-11  春节 Spring Festival
work 2027-02-20             春节调休
off  2027-04-03 2027-04-05  清明节 Qingming
off  2027-05-01 2027-05-05  劳动节 Labour Day
off  2027-06-09 2027-06-09  端午节 Dragon Boat Festival
off  2027-09-15 2027-09-15  中秋节 Mid-Autumn Festival
off  2027-10-01 2027-10-07  国庆节 National Day
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_lint_prints_the_book_version_and_each_creditors_effective_policy(tmp_path: Path) -> None:
    cfg = write(tmp_path, "config.toml", GOOD)
    result = runner.invoke(app, ["lint", str(cfg), "--today", "2026-06-01"])
    assert result.exit_code == 0, result.output
    assert "book version " in result.output
    assert "creditor bank-b" in result.output and "08:00–20:30" in result.output
    assert "cap.cba_unanswered_daily" in result.output
    assert "warning" not in result.output


def test_lint_json_lists_every_effective_policy(tmp_path: Path) -> None:
    cfg = write(tmp_path, "config.toml", GOOD)
    result = runner.invoke(app, ["lint", "--config", str(cfg), "--json", "--today", "2026-06-01"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["creditors"]["bank-b"]["window"] == {"start": "08:00", "end": "20:30"}
    assert [c["id"] for c in data["default"]["caps"]][0] == "cap.number_hourly"
    assert len(data["version"]) == 64 and data["warnings"] == []


def test_lint_warns_sixty_days_before_a_year_whose_holiday_arrangement_is_missing(tmp_path: Path) -> None:
    cfg = write(tmp_path, "config.toml", GOOD)
    result = runner.invoke(app, ["lint", str(cfg), "--today", "2026-11-23"])
    assert result.exit_code == 0, result.output
    assert "2027 holiday arrangement is not imported yet (39 days left" in result.output
    assert runner.invoke(app, ["lint", str(cfg), "--today", "2026-11-23", "--strict"]).exit_code == 1
    # 60 days before the year it warns; 61 days before, not yet.
    assert "2027 holiday arrangement" in runner.invoke(app, ["lint", str(cfg), "--today", "2026-11-02"]).output
    assert "2027 holiday arrangement" not in runner.invoke(app, ["lint", str(cfg), "--today", "2026-11-01"]).output
    # Without any creditor using cn_holidays there is nothing to warn about.
    plain = write(tmp_path, "plain.toml", GOOD.replace("cn_holidays = true", ""))
    assert json.loads(runner.invoke(app, ["lint", str(plain), "--today", "2026-11-23", "--json"]).output)["warnings"] == []


def test_lint_fails_naming_the_year_from_thirty_days_before_a_year_without_an_arrangement(tmp_path: Path) -> None:
    cfg = write(tmp_path, "config.toml", GOOD)
    result = runner.invoke(app, ["lint", str(cfg), "--today", "2026-12-02"])
    assert result.exit_code == 1, result.output
    assert "2027 holiday arrangement is missing" in result.output and "bank-b" in result.output
    # The day before the 30 days begin it only warns.
    assert runner.invoke(app, ["lint", str(cfg), "--today", "2026-12-01"]).exit_code == 0
    # Inside the year too, until the arrangement is imported.
    late = runner.invoke(app, ["lint", str(cfg), "--today", "2027-01-05", "--json"])
    assert late.exit_code == 1
    assert any("2027" in p and "bank-b" in p for p in json.loads(late.output)["problems"])


def test_lint_passes_once_the_missing_year_is_imported_from_the_holiday_file(tmp_path: Path) -> None:
    arrangement = write(tmp_path, "holidays.txt", ARRANGEMENT_2027)
    cfg = write(tmp_path, "config.toml", GOOD.replace('timezone = "Asia/Shanghai"', f'holiday_file = "{arrangement}"'))
    result = runner.invoke(app, ["lint", str(cfg), "--today", "2026-12-02"])
    assert result.exit_code == 0, result.output
    assert "holiday arrangement" not in result.output


def test_lint_refuses_a_holiday_file_with_a_make_up_day_on_a_weekday_naming_the_line(tmp_path: Path) -> None:
    arrangement = write(tmp_path, "holidays.txt", ARRANGEMENT_2027 + "work 2027-03-03\n")
    cfg = write(tmp_path, "config.toml", GOOD.replace('timezone = "Asia/Shanghai"', f'holiday_file = "{arrangement}"'))
    result = runner.invoke(app, ["lint", str(cfg), "--today", "2026-12-02"])
    assert result.exit_code == 2
    assert f"{arrangement}:{ARRANGEMENT_2027.count(chr(10)) + 1}" in result.output.replace("\n", "")
    assert "Wednesday" in result.output


def test_lint_reports_a_creditor_that_drops_an_agency_cap(tmp_path: Path) -> None:
    cfg = write(tmp_path, "config.toml", GOOD.replace('preset = "cn-cba-2026"', 'preset = "cn-cba-2026"\ndrop_caps = ["cap.number_hourly"]'))
    warnings = json.loads(runner.invoke(app, ["lint", str(cfg), "--today", "2026-06-01", "--json"]).output)["warnings"]
    assert any("bank-b drops agency cap(s) cap.number_hourly" in w for w in warnings)


def test_lint_warns_loudly_about_a_creditor_allowed_unregistered_lines(tmp_path: Path) -> None:
    # TOML tables must not be reopened after [sip...]: put the creditor before it.
    text = GOOD.replace("[sip.registered_lines]", "[policy.creditors.bank-z]\nallow_unregistered_lines = true\n\n[sip.registered_lines]")
    cfg = write(tmp_path, "config.toml", text)
    warnings = json.loads(runner.invoke(app, ["lint", str(cfg), "--today", "2026-06-01", "--json"]).output)["warnings"]
    assert any(w.startswith("!!! 委托方 bank-z") and "ANY line" in w for w in warnings)


def test_lint_warns_about_a_creditor_without_registered_lines(tmp_path: Path) -> None:
    cfg = write(tmp_path, "config.toml", GOOD.replace('bank-b = ["+862161234567", "1001"]', ""))
    result = runner.invoke(app, ["lint", str(cfg), "--today", "2026-06-01"])
    assert result.exit_code == 0
    assert "creditor bank-b has no [sip.registered_lines] list" in result.output


def test_lint_refuses_a_bad_configuration_naming_the_key_path(tmp_path: Path) -> None:
    cfg = write(tmp_path, "config.toml", '[policy.creditors.bank-b]\ncaps = [{ id = "cap.number_daily", limit = -1 }]\n')
    result = runner.invoke(app, ["lint", str(cfg)])
    assert result.exit_code == 2
    assert "policy.creditors.bank-b.caps[0].limit: must be 0 or more" in result.output


def test_lint_refuses_a_missing_file_and_broken_toml(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["lint", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 2 and "cannot read" in missing.output
    broken = runner.invoke(app, ["lint", str(write(tmp_path, "broken.toml", "[policy\n"))])
    assert broken.exit_code == 2 and "not valid TOML" in broken.output


def test_explain_shows_every_check_and_the_next_lawful_time(tmp_path: Path) -> None:
    history = write(
        tmp_path,
        "history.jsonl",
        '{"at": "2026-11-24T20:10:00+08:00"}\n{"at": "2026-11-24T20:40:00", "kind": "attempt"}\n',
    )
    result = runner.invoke(
        app,
        ["explain", "--creditor", "bank-a", "--relation", "self", "--number", "13800000001",
         "--at", "2026-11-24T20:59:00+08:00", "--history", str(history), "--json"],
    )
    assert result.exit_code == 0, result.output
    decision = json.loads(result.output)
    assert decision["rule_id"] == "cap.number_hourly"
    assert decision["next_allowed_at"] == "2026-11-25T08:00:00+08:00"
    assert len(decision["checks"]) == 25


def test_explain_uses_the_creditors_policy_from_the_config(tmp_path: Path) -> None:
    cfg = write(tmp_path, "config.toml", GOOD)
    args = ["explain", "--creditor", "bank-b", "--number", "+8613800000001", "--at", "2026-11-24T20:45:00+08:00", "-c", str(cfg)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "BLOCKED" in result.output and "window.outside_hours" in result.output
    assert "08:00–20:30" in result.output


def test_explain_judges_a_new_york_number_in_new_york_time() -> None:
    result = runner.invoke(
        app, ["explain", "--creditor", "bank-a", "--relation", "family", "--number", "+12125550100",
              "--at", "2026-11-24T21:30:00+08:00", "--json"],
    )
    decision = json.loads(result.output)
    assert decision["allowed"] is True
    assert decision["inputs_used"]["zone"] == "America/New_York"


def test_explain_refuses_bad_arguments_and_history_lines_with_their_line_number(tmp_path: Path) -> None:
    bad_number = runner.invoke(app, ["explain", "--creditor", "bank-a", "--number", "12345"])
    assert bad_number.exit_code == 2 and "--number" in bad_number.output
    bad_at = runner.invoke(app, ["explain", "--creditor", "bank-a", "--number", "13800000001", "--at", "tomorrow"])
    assert bad_at.exit_code == 2 and "--at" in bad_at.output
    history = write(tmp_path, "h.jsonl", '{"at": "2026-11-24T10:00:00+08:00"}\n{"at": "2026-11-24T11:00:00+08:00", "kind": "ring"}\n')
    bad_history = runner.invoke(
        app, ["explain", "--creditor", "bank-a", "--number", "13800000001", "--history", str(history)]
    )
    assert bad_history.exit_code == 2 and "h.jsonl:2: kind 'ring'" in bad_history.output


def test_the_policy_cli_runs_on_its_own_as_a_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dialer.policy_cli", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "lint" in result.stdout and "explain" in result.stdout


def test_explain_reads_a_history_json_array_with_events_of_other_numbers(tmp_path: Path) -> None:
    events = [
        {"at": "2026-11-24T09:00:00+08:00", "number": "+8613700000003", "relation": "family"},
        {"at": "2026-11-24T09:30:00+08:00", "number": "+8613700000003", "relation": "family", "kind": "connected"},
    ] + [{"at": f"2026-11-24T{h:02d}:00:00+08:00", "number": "+8615000000004"} for h in range(10, 19)]
    history = write(tmp_path, "history.json", json.dumps(events))
    result = runner.invoke(
        app, ["explain", "--creditor", "bank-a", "--number", "13800000001", "--at", "2026-11-24T19:00:00+08:00",
              "--history", str(history), "--json"],
    )
    decision = json.loads(result.output)
    # 1 family + 9 friend attempts today: the case cap of 10 is reached; the connected
    # event is not an attempt and the debtor's own number caps are untouched.
    assert decision["rule_id"] == "cap.case_daily"
    assert decision["inputs_used"]["counters"]["cap.case_daily"]["count"] == 10
    assert decision["inputs_used"]["counters"]["cap.number_daily"]["count"] == 0


def test_explain_does_not_name_its_stand_in_collector() -> None:
    result = runner.invoke(app, ["explain", "--creditor", "bank-a", "--number", "13800000001", "--at", "2026-11-24T10:00:00+08:00", "--json"])
    assert result.exit_code == 0, result.output
    agent = next(c for c in json.loads(result.output)["checks"] if c["rule_id"] == "agent.not_assigned")
    assert "explain" not in agent["detail"] and "assigned collector" in agent["detail"]


def test_explain_counts_a_relatives_number_against_the_number_caps_too(tmp_path: Path) -> None:
    history = write(tmp_path, "h.jsonl", "\n".join(
        json.dumps({"at": f"2026-11-24T09:{m}:00+08:00", "relation": "self", "case_id": "OTHER"}) for m in ("00", "10")
    ))
    result = runner.invoke(app, ["explain", "--creditor", "bank-a", "--number", "13800000001", "--relation", "family",
                                 "--at", "2026-11-24T09:30:00+08:00", "--history", str(history), "--json"])
    decision = json.loads(result.output)
    assert decision["rule_id"] == "cap.number_hourly"
    assert decision["inputs_used"]["counters"]["cap.number_hourly"]["count"] == 2


def test_lint_passes_on_the_shipped_config_toml_even_under_strict() -> None:
    shipped = Path(__file__).resolve().parents[3] / "config.toml"
    result = runner.invoke(app, ["lint", str(shipped), "--strict", "--today", "2026-12-07"])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output and "problem" not in result.output


def test_lint_warns_that_sip_dials_of_a_creditor_without_registered_lines_are_blocked(tmp_path: Path) -> None:
    text = GOOD.replace("[sip.registered_lines]", "[policy.creditors.bank-y]\ncn_holidays = false\n\n[sip.registered_lines]")
    cfg = write(tmp_path, "config.toml", text)
    warnings = json.loads(runner.invoke(app, ["lint", str(cfg), "--today", "2026-06-01", "--json"]).output)["warnings"]
    assert any("bank-y" in w and "blocked with line.not_registered" in w for w in warnings)


def test_lint_reports_the_agency_caps_a_top_level_cap_list_leaves_out(tmp_path: Path) -> None:
    text = GOOD.replace('timezone = "Asia/Shanghai"\n', 'timezone = "Asia/Shanghai"\ncaps = [{ id = "cap.case_daily", limit = 8 }]\n')
    cfg = write(tmp_path, "config.toml", text)
    result = runner.invoke(app, ["lint", str(cfg), "--today", "2026-06-01", "--json", "--strict"])
    warnings = json.loads(result.output)["warnings"]
    assert any("the top-level policy drops agency cap(s) cap.number_hourly, cap.number_daily" in w for w in warnings)
    assert result.exit_code == 1


def test_lint_reports_a_creditor_that_loosens_an_agency_cap(tmp_path: Path) -> None:
    # Patched by id, the cap stays in the list with limit 40: as good as dropped, and was not reported.
    text = GOOD.replace('caps = [{ id = "cap.number_daily", limit = 3 }]',
                        'caps = [{ id = "cap.number_daily", limit = 40 }, { id = "cap.number_hourly", window = "10m" }]')
    cfg = write(tmp_path, "config.toml", text)
    result = runner.invoke(app, ["lint", str(cfg), "--today", "2026-06-01", "--json", "--strict"])
    warnings = json.loads(result.output)["warnings"]
    assert any("bank-b loosens agency cap cap.number_daily: limit 4 → 40" in w for w in warnings), warnings
    assert any("bank-b loosens agency cap cap.number_hourly: window 1h → 10m" in w for w in warnings), warnings
    assert result.exit_code == 1


def test_lint_says_nothing_of_a_cap_made_stricter(tmp_path: Path) -> None:
    cfg = write(tmp_path, "config.toml", GOOD)  # bank-b: cap.number_daily limit 3
    warnings = json.loads(runner.invoke(app, ["lint", str(cfg), "--today", "2026-06-01", "--json"]).output)["warnings"]
    assert not any("loosens" in w for w in warnings), warnings


def test_the_service_logs_at_start_what_lint_warns_of(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    from dialer.config import load_config
    from dialer.policy_cli import log_findings

    text = GOOD.replace('caps = [{ id = "cap.number_daily", limit = 3 }]', 'caps = [{ id = "cap.number_daily", limit = 40 }]')
    cfg = load_config(write(tmp_path, "config.toml", text))
    with capture_logs() as logs:
        log_findings(cfg)
    warned = [e["text"] for e in logs if e["event"] == "policy.lint_warning"]
    assert any("bank-b loosens agency cap cap.number_daily: limit 4 → 40" in w for w in warned), logs
