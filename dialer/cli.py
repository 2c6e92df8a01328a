"""`dialgate` command line: serve, db, users, audit, simulate, policy, cases.

Every command takes `--config FILE`; `DIALGATE_<SECTION>_<KEY>` environment variables
override the file. Exit codes: 0 ok, 1 a check failed (audit), 2 bad usage or config.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from dialer.config import Config, load_config
from dialer.errors import ApiError, ConfigError, DialGateError

app = typer.Typer(help="DialGate: the compliance gate between the PBX and the case store.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
users_app = typer.Typer(help="Users and their bearer tokens.", no_args_is_help=True)
audit_app = typer.Typer(help="Decision-log integrity.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(audit_app, name="audit")

try:  # owned by the policy engine; mounted when present
    from dialer.policy_cli import app as _policy_app

    app.add_typer(_policy_app, name="policy", help="Lint and explain the dial policy.")
except ImportError:  # pragma: no cover - until dialer/policy_cli.py exists
    pass

from dialer.recordings_cli import keys_app as _keys_app, recordings_app as _recordings_app  # noqa: E402 - the vault's

app.add_typer(_keys_app, name="keys", help="Recording encryption keys per creditor (录音加密密钥).")
app.add_typer(_recordings_app, name="recordings", help="The recordings vault (录音库).")

from dialer.import_cli import cases_app as _cases_app  # noqa: E402 - the import jobs' commands

app.add_typer(_cases_app, name="cases", help="Cases: imports with a progress bar (案件导入).")

err = Console(stderr=True)
ConfigOpt = typer.Option(None, "--config", "-c", help="config.toml (defaults apply when omitted)")


def _config(path: Optional[Path], **overrides: dict[str, Any]) -> Config:
    try:
        return load_config(path, overrides={k: v for k, v in overrides.items() if v})
    except ConfigError as exc:
        err.print(f"[red]config error:[/red] {exc}")
        raise typer.Exit(2) from None


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except ApiError as exc:
        err.print(f"[red]error:[/red] {exc.detail} {exc.details or ''}")
        raise typer.Exit(2) from None
    except DialGateError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command()
def serve(
    config: Optional[Path] = ConfigOpt,
    host: Optional[str] = typer.Option(None, help="listen address (default [http] host)"),
    port: Optional[int] = typer.Option(None, help="listen port (default [http] port)"),
    demo: bool = typer.Option(False, "--demo", help="seed demo creditors, users and cases; print their tokens"),
    workers: Optional[int] = typer.Option(None, help="HTTP worker processes (default [http] workers)"),
) -> None:
    """Run the HTTP service (migrates the database first)."""
    import uvicorn

    from dialer.app import build_app, open_services
    from dialer.logs import configure_logging

    http: dict[str, Any] = {}
    if host:
        http["host"] = host
    if port:
        http["port"] = port
    if workers:
        http["workers"] = workers
    cfg = _config(config, http=http)
    configure_logging(cfg.log.level, cfg.log.json)
    if demo:
        from dialer.demo import seed_demo

        async def seed() -> list[tuple[str, str, str, str]]:
            async with open_services(cfg, migrate=True) as svc:
                return await seed_demo(svc)

        rows = _run(seed())
        table = Table(title="DialGate demo users (tokens are shown once)")
        for col in ("name", "role", "creditors", "token"):
            table.add_column(col)
        for r in rows:
            table.add_row(*r)
        out = Console(width=200)
        out.print(table)
        out.print(f"API: http://{cfg.http.host}:{cfg.http.port}/docs   e.g.")
        print(
            f"  curl -s -H 'Authorization: Bearer {rows[0][3]}' -H 'Content-Type: application/json' "
            f"-d '{{\"case_id\":\"A-1001\",\"number\":\"13800000001\",\"agent_id\":\"agent-a1\"}}' "
            f"http://{cfg.http.host}:{cfg.http.port}/v1/dials"
        )
        sys.stdout.flush()
    # uvloop is picked by "auto" when installed (uvicorn[standard]); the HTTP protocol is
    # uvicorn's httptools one writing each response in one system call
    # (dialer/http/server.py); no access log (one structlog event per decision is the log
    # of record).
    from dialer.http.server import GateHttpProtocol

    options: dict[str, Any] = dict(
        access_log=False, timeout_graceful_shutdown=10, http=GateHttpProtocol,
        log_level=cfg.log.level if cfg.log.level in ("debug", "info", "warning", "error") else "info",
    )
    if cfg.http.workers > 1:
        from dialer.workers import serve_pool

        try:
            serve_pool(cfg, config, options)
        except DialGateError as exc:
            err.print(f"[red]config error:[/red] {exc}")
            raise typer.Exit(2) from None
        return
    uvicorn.run(_frozen_after_startup(build_app(cfg)), host=cfg.http.host, port=cfg.http.port, **options)


def freeze_long_lived() -> None:
    """Collect once, then keep everything alive now out of the collector's walks and
    make young collections rarer (see `_frozen_after_startup`)."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, 20, 20)


def _frozen_after_startup(app: Any) -> Any:
    """Once start-up is done, everything alive (modules, the app, the store, the policy)
    stays for the life of the process: `gc.freeze()` takes it out of the collector's
    walks, so a full collection under load costs the requests' garbage, not ~10^5
    long-lived objects (a latency spike every few thousand requests otherwise). Young
    collections run less often too: each dial allocates thousands of short-lived objects."""
    from contextlib import asynccontextmanager

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> Any:
        async with inner(a) as state:
            freeze_long_lived()
            yield state

    app.router.lifespan_context = lifespan
    return app


@db_app.command("upgrade")
def db_upgrade(config: Optional[Path] = ConfigOpt) -> None:
    """Apply the migrations up to the newest revision."""
    from adapters.db.migrate import upgrade
    from dialer.app import make_store

    cfg = _config(config)

    async def go() -> str:
        async with make_store(cfg) as store:
            return await upgrade(store)

    rev = _run(go())
    typer.echo(f"database at revision {rev}")


@users_app.command("add")
def users_add(
    name: str = typer.Option(..., "--name", help="login name; a collector's or supervisor's agent id"),
    role: str = typer.Option(..., "--role", help="collector|supervisor|qa|compliance|data|pbx|admin"),
    creditor: list[str] = typer.Option([], "--creditor", help="creditor scope (repeat); not for admin"),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Create a user; prints the new token alone on the last line (shown once)."""
    from dialer.app import open_services
    from dialer.auth import add_user

    cfg = _config(config)

    async def go() -> str:
        async with open_services(cfg, migrate=True) as svc:
            _, token = await add_user(svc.store, svc.clock, name, role, frozenset(creditor))
            return token

    token = _run(go())
    typer.echo(f"user {name} ({role}) created; token:")
    typer.echo(token)


@audit_app.command("verify")
def audit_verify(config: Optional[Path] = ConfigOpt) -> None:
    """Check the decision-log hash chains; names the first edited, inserted or deleted record."""
    from dialer.app import make_store
    from dialer.audit import verify

    cfg = _config(config)

    async def go() -> Any:
        async with make_store(cfg) as store:
            return await verify(store)

    report = _run(go())
    for chain, n in sorted(report.chains.items()):
        typer.echo(f"chain {chain}: {n} records")
    if report.ok:
        typer.echo("OK: every chain verifies")
        return
    for p in report.problems:
        who = f" (decision {p.decision_id})" if p.decision_id else ""
        typer.echo(f"TAMPERED chain {p.chain}: record seq {p.seq}{who} {p.kind}: {p.detail}")
    raise typer.Exit(1)


@app.command()
def simulate(
    scenario: Path = typer.Option(..., "--scenario", help="JSONL scenario, lines in time order"),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Replay a scenario through the gate's use cases (in-memory store, injected clock)."""
    from dialer.logs import configure_logging
    from dialer.simulate import ScenarioError, run

    configure_logging("warning", True)
    cfg = _config(config)
    try:
        lines = scenario.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        err.print(f"[red]error:[/red] cannot read {scenario}: {exc.strerror}")
        raise typer.Exit(2) from None

    def emit(doc: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")

    try:
        counts = asyncio.run(run(cfg, lines, emit))
    except ScenarioError as exc:
        sys.stdout.flush()
        err.print(f"[red]{scenario}:{exc.line}:[/red] {exc.reason}")
        raise typer.Exit(2) from None
    except DialGateError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    sys.stderr.write(json.dumps(counts) + "\n")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
