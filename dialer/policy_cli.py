"""`dialgate policy lint|explain`: check the [policy] configuration and explain one decision.

Mounted by `dialer/cli.py` as `dialgate policy`; also runnable alone:
``python -m dialer.policy_cli lint config.toml``.

Exit codes: 0 ok (warnings are printed), 1 problems (a PRC holiday arrangement missing
for a year that starts within 30 days) or warnings under ``--strict``, 2 bad input
(unreadable file, invalid configuration — the key path is named — or bad arguments).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Optional
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dialer.config import Config
from dialer.holidays_cli import HolidayCalendarError, missing_arrangements, read_calendar
from policy import (
    RELATIONS,
    AgentSnapshot,
    Appointment,
    Cap,
    CaseSnapshot,
    ContactSnapshot,
    DialRequest,
    HistoryEvent,
    NumberFormatError,
    Policy,
    PolicyBook,
    PolicyConfigError,
    evaluate,
    load_policy,
    normalize_number,
)
from policy.model import Check
from policy.presets import known_cap

app = typer.Typer(help="Lint and explain the dial policy. 检查并解释拨打策略。", no_args_is_help=True)

HOLIDAY_WARNING_DAYS = 60
HOLIDAY_ERROR_DAYS = 30
EXPLAIN_CASE = "EXPLAIN"
EXPLAIN_AGENT = "explain"


class _BadInput(Exception):
    pass


def _err(message: str) -> None:
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]error:[/red] {escape(message)}")


def _read_config(path: Optional[Path], *, required: bool) -> tuple[dict[str, Any], str]:
    """The whole parsed TOML file (``{}`` when optional and absent) and a label for it."""
    if path is None:
        default = Path("config.toml")
        if not default.exists():
            if required:
                raise _BadInput("no config file given and ./config.toml does not exist")
            return {}, "built-in defaults (no config.toml)"
        path = default
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _BadInput(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return tomllib.loads(text), str(path)
    except tomllib.TOMLDecodeError as exc:
        raise _BadInput(f"{path} is not valid TOML: {exc}") from exc


def _load_book(doc: dict[str, Any], label: str) -> PolicyBook:
    table = doc.get("policy", {})
    try:
        return load_policy(table, read_calendar(table))
    except PolicyConfigError as exc:
        raise _BadInput(f"{label}: {exc.path}: {exc.reason}") from exc
    except HolidayCalendarError as exc:
        raise _BadInput(f"{label}: {exc}") from exc


def lint_problems(book: PolicyBook, today: date) -> list[str]:
    """Findings that make `lint` exit non-zero: a holiday arrangement missing for a year
    that has begun or begins within 30 days, for creditors using cn_holidays."""
    users = [p.creditor or "(default)" for p in [book.default, *book.creditors.values()] if p.cn_holidays]
    problems = []
    for year in missing_arrangements(book, today, HOLIDAY_ERROR_DAYS):
        problems.append(
            f"the State Council's {year} holiday arrangement is missing: from {year}-01-01 cn_holidays "
            f"({', '.join(users)}) blocks the statutory days only, and make-up working days are unknown; "
            f"import it with `dialgate holidays import FILE` / 缺少 {year} 年国务院节假日安排，请导入"
        )
    return problems


def lint_warnings(book: PolicyBook, doc: dict[str, Any], today: date) -> list[str]:
    """Problems that do not make the configuration invalid but need a person's attention."""
    warnings: list[str] = []
    policies = [book.default, *book.creditors.values()]
    users = [p.creditor or "(default)" for p in policies if p.cn_holidays]
    ahead = (today + timedelta(days=HOLIDAY_WARNING_DAYS)).year
    if users and ahead > today.year and not book.calendar.arranged(ahead) and book.calendar.arranged(
        (today + timedelta(days=HOLIDAY_ERROR_DAYS)).year
    ):
        warnings.append(
            f"尚未导入 {ahead} 年节假日安排 / the State Council's {ahead} holiday arrangement is not imported yet "
            f"({(date(ahead, 1, 1) - today).days} days left; cn_holidays: {', '.join(users)}); `policy lint` fails "
            f"from {HOLIDAY_ERROR_DAYS} days before"
        )
    for pol in policies:
        who = f"creditor {pol.creditor}" if pol.creditor else "the top-level policy"
        for cap in pol.caps:
            changes = _loosened(cap)
            if changes:
                warnings.append(
                    f"放宽了频次上限 {cap.id}（{'；'.join(changes)}）/ {who} loosens agency cap {cap.id}: "
                    f"{'; '.join(changes)}"
                )
        if pol.dropped_caps:
            warnings.append(
                f"去除了机构频次上限 {', '.join(pol.dropped_caps)} / "
                f"{'creditor ' + pol.creditor if pol.creditor else 'the top-level policy'} drops agency cap(s) "
                f"{', '.join(pol.dropped_caps)}"
            )
    sip = doc.get("sip")
    if not isinstance(sip, dict):
        return warnings  # no SIP gate: every dial goes through the service's own PBX account
    lines = sip.get("registered_lines")
    lines = lines if isinstance(lines, dict) else {}
    for creditor in sorted(book.creditors):
        pol = book.creditors[creditor]
        if lines.get(creditor):
            continue
        if pol.allow_unregistered_lines:
            warnings.append(
                f"!!! 委托方 {creditor} 未配置报备外呼线路且允许任意线路外呼 / creditor {creditor} has no "
                f"[sip.registered_lines] list and allow_unregistered_lines = true: its SIP calls pass "
                f"line.not_registered from ANY line, recorded or not"
            )
        else:
            warnings.append(
                f"委托方 {creditor} 未配置报备外呼线路，呼叫中心外呼将被拦截 / creditor {creditor} has no "
                f"[sip.registered_lines] list: its SIP dials are blocked with line.not_registered"
            )
    if not book.creditors and not lines:
        warnings.append(
            "未配置报备外呼线路，呼叫中心外呼将被拦截 / no [sip.registered_lines]: SIP dials are blocked with "
            "line.not_registered for every creditor"
        )
    return warnings


def log_findings(config: Config) -> None:
    """What `policy lint` would say, in the service's log at start: a loosened cap or a
    missing holiday arrangement needs a person, and nobody runs lint on a running service."""
    import structlog

    from dialer.bootstrap import load_policies

    log = structlog.get_logger("dialgate.policy")
    book = load_policies(config)
    today = _parse_today(None, book)
    doc = {"sip": dict(config.section("sip"))} if config.section("sip") else {}
    for text in lint_warnings(book, doc, today):
        log.warning("policy.lint_warning", text=text)
    for text in lint_problems(book, today):
        log.error("policy.lint_problem", text=text)


def _built_in(cap_id: str) -> Cap | None:
    """The agency's or a preset's own definition of a cap, by id (None for the operator's own caps)."""
    if known_cap(cap_id) is None:
        return None
    return load_policy({"caps": [{"id": cap_id}]}).default.caps[0]


def _loosened(cap: Cap) -> list[str]:
    """How `cap` lets more calls through than the built-in cap of its id (nothing when it does not)."""
    base = _built_in(cap.id)
    if base is None:
        return []
    changes = []
    if (cap.scope, cap.count) != (base.scope, base.count):
        changes.append(f"counts {cap.count} per {cap.scope}, not {base.count} per {base.scope}")
    if cap.limit > base.limit:
        changes.append(f"limit {base.limit} → {cap.limit}")
    if not base.relations <= cap.relations:
        changes.append(f"no longer counts {', '.join(sorted(base.relations - cap.relations))}")
    if cap.window_delta is not None and base.window_delta is not None:
        shorter = cap.window_delta < base.window_delta
    else:
        shorter = (cap.window_delta is None) != (base.window_delta is None) or cap.days < base.days
    if shorter:
        changes.append(f"window {base.window} → {cap.window}")
    if cap.appointment_waives and not base.appointment_waives:
        changes.append("an appointment now waives it")
    return changes


def _policy_table(pol: Policy, title: str) -> Table:
    table = Table(title=title, show_header=True, header_style="bold", title_justify="left")
    for col in ("cap", "scope", "relations", "count", "limit", "window"):
        table.add_column(col)
    for cap in pol.caps:
        d = cap.to_dict()
        table.add_row(d["id"], d["scope"], ",".join(d["relations"]), d["count"], str(d["limit"]), d["window"])
    return table


def _describe(pol: Policy) -> str:
    blackout = ", ".join(
        [d.isoformat() for d in sorted(pol.blackout_dates)] + [p.label() for p in pol.blackout_periods]
    ) or "none"
    return (
        f"version {pol.version}\n"
        f"  preset {pol.preset or 'none'} · zone {pol.timezone} · region {pol.default_region} · "
        f"window {pol.window.start}–{pol.window.end} (callee-local)\n"
        f"  appointment ±{int(pol.appointment.tolerance.total_seconds() // 60)}m, at most "
        f"{pol.appointment.max_attempts} in a slot · blackout {blackout} · cn_holidays {str(pol.cn_holidays).lower()} · "
        f"look-back {pol.to_dict()['lookback']}"
    )


@app.command()
def lint(
    config_arg: Optional[Path] = typer.Argument(None, metavar="[CONFIG]", help="config.toml (default ./config.toml)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="config.toml (same as the argument)"),
    as_json: bool = typer.Option(False, "--json", help="print the effective policies as JSON"),
    strict: bool = typer.Option(False, "--strict", help="exit 1 when there are warnings"),
    today: Optional[str] = typer.Option(None, "--today", help="date to lint as of (YYYY-MM-DD; default today)"),
) -> None:
    """Validate the policy section; print the book version and every creditor's effective policy."""
    try:
        doc, label = _read_config(config_arg or config, required=True)
        book = _load_book(doc, label)
        as_of = _parse_today(today, book)
    except _BadInput as exc:
        _err(str(exc))
        raise typer.Exit(2) from None
    warnings = lint_warnings(book, doc, as_of)
    problems = lint_problems(book, as_of)
    out = Console(highlight=False, soft_wrap=True, width=200)
    if as_json:
        print(json.dumps({**book.to_dict(), "warnings": warnings, "problems": problems},
                         ensure_ascii=False, indent=2, sort_keys=True))
    else:
        out.print(f"[bold]{escape(label)}[/bold]: 策略配置有效 / policy OK")
        out.print(f"book version {book.version}")
        out.print(f"[bold]default[/bold] {_describe(book.default)}")
        out.print(_policy_table(book.default, "default caps"))
        for creditor, pol in sorted(book.creditors.items()):
            out.print(f"[bold]creditor {creditor}[/bold] {_describe(pol)}")
            out.print(_policy_table(pol, f"{creditor} caps"))
        for w in warnings:
            out.print(f"[yellow]warning:[/yellow] {escape(w)}")
        for p in problems:
            out.print(f"[red]problem:[/red] {escape(p)}")
    if problems or (warnings and strict):
        raise typer.Exit(1)


def _parse_today(value: Optional[str], book: PolicyBook) -> date:
    if value is None:
        # The CLI is the edge: reading the clock here is fine (the core never does).
        return datetime.now(ZoneInfo(book.default.timezone)).date()
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _BadInput(f"--today {value!r} is not a date (YYYY-MM-DD)") from None


def _parse_instant(value: str, zone: ZoneInfo, what: str) -> datetime:
    if value == "now":
        return datetime.now(zone)
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise _BadInput(f"{what} {value!r} is not an ISO 8601 time like 2026-11-24T20:30:00+08:00") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=zone)


def read_history(path: Path, number: str, relation: str, zone: ZoneInfo) -> list[HistoryEvent]:
    """Events from a JSON array or JSON Lines file; each needs ``at``, the rest defaults.

    Fields: ``at`` (ISO; without an offset it is read in the policy zone), ``number``
    (default: the explained number), ``relation`` (default: the explained relation for
    that number, else third_party), ``kind`` (attempt | connected; default attempt),
    ``case_id`` (default: the explained case).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _BadInput(f"cannot read {path}: {exc.strerror or exc}") from exc
    stripped = text.strip()
    items: list[tuple[int, Any]] = []
    if stripped.startswith("["):
        try:
            items = list(enumerate(json.loads(stripped), start=1))
        except json.JSONDecodeError as exc:
            raise _BadInput(f"{path}: not valid JSON: {exc}") from exc
    else:
        for lineno, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    items.append((lineno, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise _BadInput(f"{path}:{lineno}: not valid JSON: {exc.msg}") from exc
    events = []
    for where, item in items:
        label = f"{path}:{where}"
        if not isinstance(item, dict) or "at" not in item:
            raise _BadInput(f"{label}: each event is an object with at least \"at\"")
        unknown = set(item) - {"at", "number", "relation", "kind", "case_id"}
        if unknown:
            raise _BadInput(f"{label}: unknown field(s) {', '.join(sorted(unknown))}")
        at = _parse_instant(str(item["at"]), zone, f"{label}: at")
        ev_number = str(item.get("number", number))
        try:
            ev_number = normalize_number(ev_number)
        except NumberFormatError as exc:
            raise _BadInput(f"{label}: number: {exc.reason}") from None
        ev_relation = item.get("relation", relation if ev_number == number else "third_party")
        if ev_relation not in RELATIONS:
            raise _BadInput(f"{label}: relation {ev_relation!r} is not one of {', '.join(RELATIONS)}")
        kind = item.get("kind", "attempt")
        if kind not in ("attempt", "connected"):
            raise _BadInput(f"{label}: kind {kind!r} is not attempt or connected")
        events.append(HistoryEvent(at, str(item.get("case_id", EXPLAIN_CASE)), ev_number, ev_relation, kind))
    return events


@app.command()
def explain(
    creditor: str = typer.Option(..., "--creditor", help="creditor id whose policy applies"),
    number: str = typer.Option(..., "--number", help="the dialed number (E.164 or national)"),
    relation: str = typer.Option("self", "--relation", help=f"one of {', '.join(RELATIONS)}"),
    at: str = typer.Option("now", "--at", help="ISO time of the call (default now; no offset = policy zone)"),
    history: Optional[Path] = typer.Option(None, "--history", help="JSON array or JSON Lines of past events"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="config.toml (default ./config.toml if present)"),
    tz: Optional[str] = typer.Option(None, "--tz", help="the contact's IANA zone, if known"),
    appointment: list[str] = typer.Option([], "--appointment", help="an agreed callback time (ISO); repeatable"),
    status: str = typer.Option("active", "--status", help="case status"),
    flag: list[str] = typer.Option([], "--flag", help="a case flag (dispute, litigation, ...); repeatable"),
    as_json: bool = typer.Option(False, "--json", help="print the decision as JSON"),
) -> None:
    """Explain one decision with every check, for people tuning rules."""
    try:
        doc, label = _read_config(config, required=config is not None)
        book = _load_book(doc, label)
        pol = book.for_creditor(creditor)
        zone = ZoneInfo(pol.timezone)
        if relation not in RELATIONS:
            raise _BadInput(f"--relation {relation!r} is not one of {', '.join(RELATIONS)}")
        try:
            e164 = normalize_number(number, pol.default_region)
        except NumberFormatError as exc:
            raise _BadInput(f"--number: {exc.reason}") from None
        now = _parse_instant(at, zone, "--at")
        events = read_history(history, e164, relation, zone) if history else []
        appts = tuple(Appointment(e164, _parse_instant(a, zone, "--appointment")) for a in appointment)
    except _BadInput as exc:
        _err(str(exc))
        raise typer.Exit(2) from None
    case = CaseSnapshot(
        case_id=EXPLAIN_CASE,
        creditor=creditor,
        status=status,
        commission_start=None,
        commission_end=None,
        flags=frozenset(flag),
        assigned_agent=EXPLAIN_AGENT,
        contacts=(ContactSnapshot(e164, relation, tz=tz),),
    )
    request = DialRequest(
        case=case,
        number=e164,
        agent=AgentSnapshot(EXPLAIN_AGENT, "collector", frozenset({creditor})),
        channel="simulate",
        appointments=appts,
    )
    decision = evaluate(request, events, pol, now)
    # explain has no real collector: say so instead of naming its stand-in agent.
    checks = tuple(
        Check(c.rule_id, True, "assumed: the case's assigned collector dials", "假定由本案指派的催收员拨打")
        if c.rule_id == "agent.not_assigned" else c
        for c in decision.checks
    )
    decision = replace(decision, checks=checks)
    if as_json:
        print(decision.to_json())
        return
    out = Console(highlight=False, soft_wrap=True, width=200)
    table = Table(show_header=True, header_style="bold")
    for col in ("#", "rule", "result", "detail", "说明"):
        table.add_column(col)
    for i, c in enumerate(decision.checks, start=1):
        result = "[green]pass[/green]" if c.passed else ("[yellow]exempted[/yellow]" if c.exempted else "[red]FAIL[/red]")
        table.add_row(str(i), c.rule_id, result, escape(c.detail), escape(c.detail_zh))
    out.print(table)
    verdict = "[green]ALLOWED 允许[/green]" if decision.allowed else "[red]BLOCKED 拦截[/red]"
    out.print(f"{verdict} rule_id={decision.rule_id}")
    out.print(f"reason: {escape(decision.reason)}")
    out.print(f"原因：{escape(decision.reason_zh)}")
    nxt = decision.next_allowed_at.isoformat() if decision.next_allowed_at else "无 / none"
    out.print(f"next_allowed_at: {nxt}")
    inputs = decision.inputs_used
    out.print(
        f"callee time {inputs['callee_local_time']} ({inputs['zone']}, from {inputs['zone_source']}) · "
        f"policy {escape(label)} creditor {escape(creditor)} version {decision.policy_version[:12]}… · {len(events)} history events"
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
