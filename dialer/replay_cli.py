"""`dialgate simulate --from-log`: replay a period of the decision log under a policy.

The log is read from the store of ``--log-config`` (default: ``--config``); the policy
tried is ``--config``'s ``[policy]``. Without ``--compare`` every logged dial gets one
JSON line with its logged and replayed answers; with ``--compare`` only the decisions
that change are printed (as a table, JSON lines or CSV) with counts per rule change and
per creditor. ``--write-scenario FILE`` also writes the rebuilt traffic in the
``--scenario`` format. What can and cannot be rebuilt: dialer/replay.py and
dialer/SIMULATE.md.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import IO, Any, Callable, Sequence, cast
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from dialer.config import Config
from dialer.replay import ReplayData, Replayed, ReplaySource, replay, scenario_lines, summarise
from policy import PolicyBook

FORMATS = ("table", "jsonl", "csv")
PROGRESS_FROM = 10_000  # dials; shorter replays finish before a bar is worth drawing
TABLE_ROWS = 200
CSV_FIELDS = ("decision_id", "at", "creditor", "case_id", "agent_id", "number", "logged_allowed", "logged_rule_id",
              "allowed", "rule_id", "change", "next_allowed_at", "note")


def period(since: str, until: str, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """``--since``/``--until`` dates (both inclusive, in the policy zone) → [start, end)."""
    try:
        first, last = date.fromisoformat(since), date.fromisoformat(until)
    except ValueError as exc:
        raise ValueError(f"--since/--until: expected YYYY-MM-DD ({exc})") from None
    if last < first:
        raise ValueError(f"--until {until} is before --since {since}")
    return (datetime.combine(first, time(0), tzinfo=zone),
            datetime.combine(last + timedelta(days=1), time(0), tzinfo=zone))


async def load_from_store(log_config: Config, since: datetime, until: datetime,
                          creditors: frozenset[str] | None) -> ReplayData:
    from dialer.bootstrap import open_store, replay_source

    async with open_store(log_config) as store:
        source: ReplaySource = replay_source(store)
        return await source.load(since, until, creditors)


def run_replay(data: ReplayData, book: PolicyBook, err: Console) -> list[Replayed]:
    total = len(data.dials)
    if total < PROGRESS_FROM:
        return replay(data, book)
    with Progress(TextColumn("回放 / replaying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("replay", total=total)
        return replay(data, book, progress=lambda done: bar.update(task, completed=done))


def report(results: Sequence[Replayed], data: ReplayData, *, compare: bool, fmt: str,
           write: Callable[[str], None], err: Console) -> dict[str, Any]:
    """Print the results; returns the summary (also printed)."""
    summary = summarise(results)
    rows = [r for r in results if r.changed] if compare else list(results)
    if fmt == "jsonl" or not compare:
        for r in rows:
            write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
        if compare:
            write(json.dumps({"summary": summary.to_dict(), "notes": data.notes}, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        buf = io.StringIO()
        out = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
        out.writeheader()
        for r in rows:
            out.writerow(r.to_dict())
        write(buf.getvalue())
    else:
        _table(rows, summary, data, write)
    if fmt != "table" or not compare:
        err.print(f"回放 {summary.total} 条拨打决策 / replayed {summary.total} logged dials: {summary.changed} change "
                  f"({summary.allowed_to_blocked} allowed → blocked, {summary.blocked_to_allowed} blocked → allowed, "
                  f"{summary.rule_changed} other rule), {summary.kept_as_logged} kept as logged", highlight=False)
        for note in data.notes:
            err.print(f"note: {escape(note)}", highlight=False)
    return summary.to_dict()


def _table(rows: Sequence[Replayed], summary: Any, data: ReplayData, write: Callable[[str], None]) -> None:
    # rich only writes and flushes; typeshed's TextIOBase is not an IO[str].
    console = Console(file=cast(IO[str], _Writer(write)), highlight=False, soft_wrap=True, width=200, force_terminal=False)
    changes = Table(title="结果变化的决策 / decisions that change", title_justify="left")
    for col in ("at", "creditor", "case", "agent", "number", "logged 原结果", "replayed 新结果", "change"):
        changes.add_column(col)
    for r in rows[:TABLE_ROWS]:
        d = r.to_dict()
        changes.add_row(d["at"], d["creditor"], d["case_id"], d["agent_id"], d["number"],
                        f"{'allow' if d['logged_allowed'] else 'block'} {d['logged_rule_id']}",
                        f"{'allow' if d['allowed'] else 'block'} {d['rule_id']}", d["change"])
    console.print(changes)
    if len(rows) > TABLE_ROWS:
        console.print(f"… {len(rows) - TABLE_ROWS} more (--format jsonl or csv lists them all)")
    per_rule = Table(title="按规则 / per rule", title_justify="left")
    for col in ("logged rule", "replayed rule", "count"):
        per_rule.add_column(col)
    for (before, after), n in sorted(summary.by_rule.items(), key=lambda kv: -kv[1]):
        per_rule.add_row(before, after, str(n))
    console.print(per_rule)
    per_creditor = Table(title="按委托方 / per creditor", title_justify="left")
    for col in ("creditor", "allowed → blocked", "blocked → allowed", "rule changed"):
        per_creditor.add_column(col)
    for creditor, c in sorted(summary.by_creditor.items()):
        per_creditor.add_row(creditor, str(c["allowed_to_blocked"]), str(c["blocked_to_allowed"]), str(c["rule_changed"]))
    console.print(per_creditor)
    console.print(f"回放决策数 / logged dials replayed: {summary.total}; 变化 / change: {summary.changed}; "
                  f"按原记录保留 / kept as logged: {summary.kept_as_logged}")
    for note in data.notes:
        console.print(f"note: {escape(note)}")


class _Writer(io.TextIOBase):
    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write

    def write(self, s: str) -> int:
        self._write(s)
        return len(s)


def write_scenario(path: Path, data: ReplayData) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for line in scenario_lines(data):
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")


def stdout_write(text: str) -> None:
    sys.stdout.write(text)
