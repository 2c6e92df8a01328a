"""`dialgate holidays`: the PRC holiday arrangements an operator adds without a release.

The State Council publishes each year's arrangement (breaks and make-up working days)
in the autumn. The built-in years ship with `policy.holidays`; a later notice goes
into the file named by ``[policy] holiday_file`` (same format, see that module), read
once at start-up and by `dialgate policy lint`. ``dialgate holidays import FILE``
validates a notice and merges it into that file; ``dialgate holidays status`` shows
which years are known.

Exit codes: 0 ok, 1 the arrangement of this or next year is missing (status), 2 bad
input (the file and line are named).
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Mapping, Optional
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.markup import escape

from policy import PolicyBook
from policy.holidays import (
    HolidayCalendar,
    HolidayFileError,
    default_calendar,
    format_arrangements,
    parse_arrangements,
)

app = typer.Typer(help="PRC holiday arrangements. 法定节假日安排。", no_args_is_help=True)


class HolidayCalendarError(Exception):
    """The configured holiday file cannot be read or is invalid (names file and line)."""


def _parse_file(path: Path) -> dict[int, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HolidayCalendarError(f"cannot read holiday file {path}: {exc.strerror or exc}") from exc
    try:
        return parse_arrangements(text, str(path))
    except HolidayFileError as exc:
        raise HolidayCalendarError(str(exc)) from exc


def read_calendar(policy_table: Mapping[str, Any] | None) -> HolidayCalendar:
    """The built-in calendar plus ``holiday_file`` when the `[policy]` table names one."""
    name = (policy_table or {}).get("holiday_file")
    if not name or not isinstance(name, str):
        return default_calendar()
    path = Path(name)
    if not path.exists():
        raise HolidayCalendarError(f"policy.holiday_file: {path} does not exist")
    return default_calendar().with_arrangements(_parse_file(path))


MISSING_FROM_DAYS = 30


def missing_arrangements(book: PolicyBook, today: date, days: int = MISSING_FROM_DAYS) -> list[int]:
    """Years without a State Council arrangement that have begun or begin within `days`,
    when some creditor uses cn_holidays (else nothing is missing that matters)."""
    if not any(p.cn_holidays for p in (book.default, *book.creditors.values())):
        return []
    years = sorted({today.year, (today + timedelta(days=days)).year})
    return [y for y in years if not book.calendar.arranged(y)]


def arrangement_health(book: PolicyBook, now: datetime) -> dict[str, Any] | None:
    """What /readyz reports about the holiday data; None when no creditor uses it."""
    if not any(p.cn_holidays for p in (book.default, *book.creditors.values())):
        return None
    today = now.astimezone(ZoneInfo(book.default.timezone)).date()
    missing = missing_arrangements(book, today)
    body: dict[str, Any] = {"status": "missing" if missing else "ok",
                            "arranged_until": book.calendar.last_arranged_year()}
    if missing:
        body["missing"] = missing
        body["detail"] = (f"the State Council's holiday arrangement for {', '.join(map(str, missing))} is missing: "
                          "statutory days only; import it with `dialgate holidays import FILE`")
        body["detail_zh"] = f"缺少 {'、'.join(map(str, missing))} 年国务院节假日安排：仅按法定节假日拦截，请导入"
    return body


def _err(message: str) -> None:
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]error:[/red] {escape(message)}")


def _policy_table(config: Optional[Path]) -> tuple[dict[str, Any], Path]:
    path = config or Path("config.toml")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise HolidayCalendarError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise HolidayCalendarError(f"{path} is not valid TOML: {exc}") from exc
    table = doc.get("policy", {})
    return (table if isinstance(table, dict) else {}), path


@app.command("import")
def import_(
    file: Path = typer.Argument(..., help="the arrangement, in the format of policy/holidays.py"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="config.toml (default ./config.toml)"),
) -> None:
    """Validate an arrangement and merge it into [policy] holiday_file (restart the service to use it)."""
    out = Console(highlight=False, soft_wrap=True)
    try:
        new = _parse_file(file)
        table, cfg_path = _policy_table(config)
        target = table.get("holiday_file")
        if not isinstance(target, str) or not target:
            raise HolidayCalendarError(
                f"{cfg_path}: set [policy] holiday_file = \"holidays.txt\" first (where imported years are kept) "
                "/ 请先在 [policy] 中设置 holiday_file"
            )
        target_path = Path(target)
        kept = _parse_file(target_path) if target_path.exists() else {}
    except HolidayCalendarError as exc:
        _err(str(exc))
        raise typer.Exit(2) from None
    if not new:
        _err(f"{file}: no 'year' in the file")
        raise typer.Exit(2)
    kept.update(new)
    text = "# PRC holiday arrangements imported with `dialgate holidays import`.\n\n" + format_arrangements(kept)
    # Written beside the target and renamed: a crash never leaves half a file.
    fd, tmp = tempfile.mkstemp(dir=target_path.parent if str(target_path.parent) else ".", prefix=".holidays-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, target_path)
    years = ", ".join(str(y) for y in sorted(new))
    out.print(f"已导入 {years} 年节假日安排 / imported {years} into {target_path}; restart the service to use it")


@app.command()
def status(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="config.toml (default ./config.toml)"),
    today: Optional[str] = typer.Option(None, "--today", help="as of (YYYY-MM-DD; default today)"),
    year: Optional[int] = typer.Option(None, "--year", help="list the holidays of this year"),
) -> None:
    """Which years' arrangements are known; with --year, every holiday day of that year."""
    out = Console(highlight=False, soft_wrap=True)
    try:
        table, _ = _policy_table(config) if (config or Path("config.toml").exists()) else ({}, None)
        cal = read_calendar(table)
        as_of = date.fromisoformat(today) if today else datetime.now().date()
    except (HolidayCalendarError, ValueError) as exc:
        _err(str(exc))
        raise typer.Exit(2) from None
    known = sorted(cal.arrangements)
    out.print(f"已有放假安排 / arrangements known: {', '.join(map(str, known)) or 'none'}")
    if year is not None:
        day = date(year, 1, 1)
        while day.year == year:
            hol = cal.holiday(day)
            if hol is not None:
                out.print(f"  {day.isoformat()} {day.strftime('%a')} {hol.name_zh} {hol.name} ({hol.source})")
            elif day.weekday() >= 5 and cal.is_workday(day):
                out.print(f"  {day.isoformat()} {day.strftime('%a')} 调休上班 make-up working day")
            day = date.fromordinal(day.toordinal() + 1)
    missing = [y for y in (as_of.year, as_of.year + 1) if not cal.arranged(y)]
    if missing:
        out.print(f"缺少 / missing: {', '.join(map(str, missing))} (仅法定节假日 / statutory days only)")
        if as_of.year in missing:
            raise typer.Exit(1)
