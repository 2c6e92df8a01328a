"""`dialgate cases import FILE`: an import job run from the command line, with a
progress bar and the summary (or every error of a refused file).

It runs in this process against the configured store, beside a running service if
there is one (SQLite: the two take turns on the database's writer lock; batches pause
between them so the service's decisions get it), and acts as `cli:<login>` with an
admin's scope; the job is on record like any other (`GET /v1/imports/{id}`).
"""

from __future__ import annotations

import asyncio
import getpass
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

cases_app = typer.Typer(help="Cases: imports (案件导入).", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


@cases_app.command("import")
def cases_import(
    file: Path = typer.Argument(..., help="JSON ({\"cases\": […]}) or CSV (one row per contact)", exists=True,
                                dir_okay=False, readable=True),
    kind: str = typer.Option("cases", "--kind", help="cases | repayments"),
    encoding: Optional[str] = typer.Option(None, "--encoding", help="utf-8 or gb18030 (gbk); default: detected"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="config.toml (defaults apply when omitted)"),
) -> None:
    """Validate FILE whole, then apply it in batches, showing progress; exit 1 if refused."""
    from dialer.cli_common import load_config_or_exit, run_or_exit

    cfg = load_config_or_exit(config)
    job = run_or_exit(_import(cfg, file, kind, encoding))
    if job.state == "done":
        parts = ", ".join(f"{k} {v}" for k, v in sorted(job.summary.items()))
        out.print(f"import {job.import_id}: done, {job.rows_done} of {job.rows_total} rows applied ({parts}); "
                  f"导入完成 (encoding {job.encoding})")
        return
    err.print(f"[red]import {job.import_id}: {job.state}[/red] — 导入被拒绝，未写入任何数据 / nothing applied"
              if job.state == "refused" else f"[red]import {job.import_id}: {job.state}[/red]")
    for e in job.errors[:200]:
        where = f"row {e.get('row')}" + (f" {e['field']}" if e.get("field") else "")
        err.print(f"  {where}: {e.get('error')}")
    if len(job.errors) > 200:
        err.print(f"  … and {len(job.errors) - 200} more")
    raise typer.Exit(1)


async def _import(cfg: Any, file: Path, kind: str, encoding: str | None) -> Any:
    from dialer.bootstrap import open_services
    from dialer.import_jobs import ImportJobs, load_import_limits
    from dialer.import_validation import Upload
    from dialer.model import Principal

    limits = load_import_limits(cfg.section("imports"), cfg.source)
    size = file.stat().st_size
    if size > limits.max_bytes:
        err.print(f"[red]error:[/red] {file} is {size} bytes; at most {limits.max_bytes} per import ([imports] max_bytes)")
        raise typer.Exit(2)
    body = file.read_bytes()
    ctype = "application/json" if body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"{", b"[") else "text/csv"
    actor = Principal(0, f"cli:{getpass.getuser()}", "admin", frozenset())
    async with open_services(cfg, migrate=True) as svc:
        jobs = ImportJobs(svc.store, svc.clock, svc.region_of, limits, beside_the_gate=True)
        async with jobs:
            # Every body counts as large (sync_bytes 0): the job runs as a task while we watch it.
            jobs.limits = replace(limits, sync_bytes=0)
            job, _ = await jobs.submit(actor, Upload(kind, body, ctype, encoding, file.name), wait=False)
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          TimeRemainingColumn(), console=err, transient=False) as bar:
                task = bar.add_task("校验中 / validating", total=None)
                while True:
                    async with svc.store.read() as uow:
                        fresh = await uow.imports.get(job.import_id)
                    assert fresh is not None  # submitted above; jobs are never deleted
                    job = fresh
                    if job.state == "applying":
                        bar.update(task, description="导入中 / applying", total=job.rows_total, completed=job.rows_done)
                    if job.state not in ("validating", "applying"):
                        bar.update(task, description=_STATE_TEXT.get(job.state, job.state), total=job.rows_total or 1,
                                   completed=job.rows_done if job.rows_total else 0)
                        break
                    await asyncio.sleep(0.2)
    return job


_STATE_TEXT = {"done": "完成 / done", "refused": "已拒绝 / refused", "failed": "失败 / failed"}
