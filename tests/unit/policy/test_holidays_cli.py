"""`dialgate holidays import|status`: an operator adds a year's arrangement without a release."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from dialer.holidays_cli import app, read_calendar
from policy.holidays import parse_arrangements

runner = CliRunner()

NOTICE_2027 = (
    "# a test notice (not the State Council's)\n"
    "year 2027\n"
    "off  2027-01-01 2027-01-03  元旦 New Year's Day\n"
    "off  2027-02-05 2027-02-11  春节 Spring Festival\n"
    "work 2027-02-20             春节调休\n"
    "off  2027-04-03 2027-04-05  清明节 Qingming\n"
    "off  2027-05-01 2027-05-05  劳动节 Labour Day\n"
    "off  2027-06-09 2027-06-09  端午节 Dragon Boat Festival\n"
    "off  2027-09-15 2027-09-15  中秋节 Mid-Autumn Festival\n"
    "off  2027-10-01 2027-10-07  国庆节 National Day\n"
)


def _setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    notice = tmp_path / "notice-2027.txt"
    notice.write_text(NOTICE_2027, encoding="utf-8")
    target = tmp_path / "holidays.txt"
    config = tmp_path / "config.toml"
    config.write_text(f'[policy]\nholiday_file = "{target}"\ncn_holidays = true\n', encoding="utf-8")
    return notice, target, config


def test_import_validates_a_notice_and_merges_it_into_the_configured_holiday_file(tmp_path: Path) -> None:
    notice, target, config = _setup(tmp_path)
    result = runner.invoke(app, ["import", str(notice), "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "imported 2027" in result.output
    assert sorted(parse_arrangements(target.read_text(encoding="utf-8"))) == [2027]
    calendar = read_calendar({"holiday_file": str(target)})
    assert calendar.arranged(2027) and calendar.arranged(2026)
    # Importing again replaces the year, it does not duplicate it.
    assert runner.invoke(app, ["import", str(notice), "--config", str(config)]).exit_code == 0
    assert sorted(parse_arrangements(target.read_text(encoding="utf-8"))) == [2027]


def test_import_refuses_a_bad_notice_naming_its_line_and_leaves_the_file_alone(tmp_path: Path) -> None:
    notice, target, config = _setup(tmp_path)
    notice.write_text(NOTICE_2027 + "off 2027-10-06 2027-10-08\n", encoding="utf-8")
    result = runner.invoke(app, ["import", str(notice), "--config", str(config)])
    assert result.exit_code == 2
    assert f"{notice}:11" in result.output.replace("\n", "") and "overlaps" in result.output
    assert not target.exists()


def test_import_needs_a_holiday_file_in_the_config(tmp_path: Path) -> None:
    notice, _, config = _setup(tmp_path)
    config.write_text("[policy]\n", encoding="utf-8")
    result = runner.invoke(app, ["import", str(notice), "--config", str(config)])
    assert result.exit_code == 2 and "holiday_file" in result.output


def test_status_lists_the_known_years_and_fails_inside_a_year_without_an_arrangement(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[policy]\ncn_holidays = true\n", encoding="utf-8")
    before = runner.invoke(app, ["status", "--config", str(config), "--today", "2026-12-07"])
    assert before.exit_code == 0 and "缺少 / missing: 2027" in before.output
    inside = runner.invoke(app, ["status", "--config", str(config), "--today", "2027-01-04", "--year", "2027"])
    assert inside.exit_code == 1
    assert "2027-01-01 Fri 元旦" in inside.output and "(statutory)" in inside.output


def test_a_configured_holiday_file_that_does_not_exist_is_refused_by_name(tmp_path: Path) -> None:
    _, target, config = _setup(tmp_path)
    result = runner.invoke(app, ["status", "--config", str(config)])
    assert result.exit_code == 2 and str(target) in result.output.replace("\n", "")
