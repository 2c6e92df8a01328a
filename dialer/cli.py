"""`dialgate` command line: serve, db, users, audit, simulate, policy, cases.

Every command takes `--config FILE`; `DIALGATE_<SECTION>_<KEY>` environment variables
override the file. Exit codes: 0 ok, 1 a check failed (audit), 2 bad usage or config.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from dialer.cli_common import err, load_config_or_exit, run_or_exit
from dialer.config import Config
from dialer.errors import ConfigError, DialGateError

if TYPE_CHECKING:
    from dialer.auth import UserAdmin
    from dialer.services import Services

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
    from dialer.holidays_cli import app as _holidays_app

    app.add_typer(_holidays_app, name="holidays", help="PRC holiday arrangements (法定节假日安排).")
except ImportError:  # pragma: no cover - until dialer/policy_cli.py exists
    pass

from dialer.recordings_cli import keys_app as _keys_app, recordings_app as _recordings_app  # noqa: E402 - the vault's

app.add_typer(_keys_app, name="keys", help="Recording encryption keys per creditor (录音加密密钥).")
app.add_typer(_recordings_app, name="recordings", help="The recordings vault (录音库).")

from dialer.import_cli import cases_app as _cases_app  # noqa: E402 - the import jobs' commands

app.add_typer(_cases_app, name="cases", help="Cases: imports with a progress bar (案件导入).")

ConfigOpt = typer.Option(None, "--config", "-c", help="config.toml (defaults apply when omitted)")


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

    from dialer.app import build_app, frozen_after_startup
    from dialer.bootstrap import open_services
    from dialer.logs import configure_logging

    http: dict[str, Any] = {}
    if host:
        http["host"] = host
    if port:
        http["port"] = port
    if workers:
        http["workers"] = workers
    cfg = load_config_or_exit(config, http=http)
    configure_logging(cfg.log.level, cfg.log.json)
    from dialer.policy_cli import log_findings

    try:
        log_findings(cfg)
    except DialGateError as exc:
        err.print(f"[red]config error:[/red] {exc}")
        raise typer.Exit(2) from None
    if demo:
        from dialer.demo import seed_demo

        async def seed() -> list[tuple[str, str, str, str]]:
            async with open_services(cfg, migrate=True) as svc:
                return await seed_demo(svc)

        rows = run_or_exit(seed())
        from dialer.demo import demo_tokens_file

        table = Table(title="DialGate demo users")
        for col in ("name", "role", "creditors", "token"):
            table.add_column(col)
        for r in rows:
            table.add_row(*r)
        out = Console(width=200)
        out.print(table)
        out.print(f"Demo tokens are kept in {demo_tokens_file(cfg.paths.data_dir)} and stay valid across restarts; "
                  "`dialgate users rotate-token` replaces a leaked one.\n"
                  f"演示令牌保存在 {demo_tokens_file(cfg.paths.data_dir)}，重启后仍然有效；令牌泄露时用 "
                  "`dialgate users rotate-token` 更换。", soft_wrap=True)
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
        # uvicorn would believe X-Forwarded-For from any local client; the service reads
        # it itself, and only from [http] trusted_proxies (dialer.http.peers.client_of).
        proxy_headers=False,
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
    uvicorn.run(frozen_after_startup(build_app(cfg)), host=cfg.http.host, port=cfg.http.port, **options)


@app.command("demo-token")
def demo_token(
    name: str = typer.Argument(..., help="a demo user: agent-a1, comp-a, qa-a, … (see `serve --demo`)"),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Print the token `serve --demo` keeps for a demo user (演示用户的令牌), for `A1=$(…)`."""
    import json

    from dialer.demo import demo_tokens_file

    path = demo_tokens_file(load_config_or_exit(config).paths.data_dir)
    try:
        token = json.loads(path.read_text(encoding="utf-8")).get(name)
    except (OSError, ValueError, AttributeError):
        token = None
    if not isinstance(token, str):
        err.print(f"[red]error:[/red] no demo token for {name!r} in {path}: start `scripts/run.sh` (serve --demo) first "
                  f"/ {path} 中没有 {name!r} 的演示令牌：请先运行 `scripts/run.sh`")
        raise typer.Exit(2)
    print(token)


@db_app.command("upgrade")
def db_upgrade(config: Optional[Path] = ConfigOpt) -> None:
    """Apply the migrations up to the newest revision."""
    from dialer.bootstrap import migrate, open_store

    cfg = load_config_or_exit(config)

    async def go() -> str:
        async with open_store(cfg) as store:
            return await migrate(store)

    rev = run_or_exit(go())
    typer.echo(f"database at revision {rev}")


@users_app.command("add")
def users_add(
    name: str = typer.Option(..., "--name", help="login name; a collector's or supervisor's agent id"),
    role: str = typer.Option(..., "--role", help="collector|supervisor|qa|compliance|data|pbx|admin|monitor"),
    creditor: list[str] = typer.Option([], "--creditor", help="creditor scope (repeat); not for admin"),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Create a user; prints the new token alone on the last line (shown once)."""
    from dialer.bootstrap import open_services
    from dialer.auth import add_user

    cfg = load_config_or_exit(config)

    async def go() -> str:
        async with open_services(cfg, migrate=True) as svc:
            _, token = await add_user(svc.store, svc.clock, name, role, frozenset(creditor))
            return token

    token = run_or_exit(go())
    typer.echo(f"user {name} ({role}) created; token:")
    typer.echo(token)


def _user_admin(svc: Services) -> UserAdmin:
    from dialer.auth import USERS_REVISION_FILE, UserAdmin, UsersRevision

    return UserAdmin(svc.store, svc.clock, UsersRevision(svc.config.paths.data_dir / USERS_REVISION_FILE))


def _users_call(config: Optional[Path], job: Any) -> Any:
    """Run `job(UserAdmin)` against the configured store."""
    from dialer.bootstrap import open_services

    cfg = load_config_or_exit(config)

    async def go() -> Any:
        async with open_services(cfg, migrate=True) as svc:
            return await job(_user_admin(svc))

    return run_or_exit(go())


def _show_user(u: dict[str, Any]) -> str:
    state = "disabled" if u["disabled"] else "enabled"
    return f"{u['name']}\t{u['role']}\t{','.join(u['creditors']) or '*'}\t{state}"


@users_app.command("list")
def users_list(
    as_json: bool = typer.Option(False, "--json", help="one JSON document instead of a table"),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Every user: name, role, creditors, enabled or disabled (never tokens)."""
    users = _users_call(config, lambda ua: ua.list())
    if as_json:
        typer.echo(json.dumps([{**u, "created_at": u["created_at"].isoformat()} for u in users], ensure_ascii=False))
        return
    table = Table(title="用户 / DialGate users")
    for col in ("name", "role", "creditors", "state", "created"):
        table.add_column(col)
    for u in users:
        table.add_row(u["name"], u["role"], ", ".join(u["creditors"]) or "* (all)",
                      "disabled 已停用" if u["disabled"] else "enabled 启用", u["created_at"].isoformat(timespec="seconds"))
    Console(width=160).print(table)


@users_app.command("disable")
def users_disable(name: str = typer.Argument(..., help="user name"), config: Optional[Path] = ConfigOpt) -> None:
    """Stop a user at once: their token and console sessions stop working in every worker."""
    typer.echo(_show_user(_users_call(config, lambda ua: ua.set_disabled(name, True))))


@users_app.command("enable")
def users_enable(name: str = typer.Argument(..., help="user name"), config: Optional[Path] = ConfigOpt) -> None:
    """Let a disabled user in again (with their current token)."""
    typer.echo(_show_user(_users_call(config, lambda ua: ua.set_disabled(name, False))))


@users_app.command("rotate-token")
def users_rotate_token(name: str = typer.Argument(..., help="user name"), config: Optional[Path] = ConfigOpt) -> None:
    """Issue a new token; the old one stops at once. Prints the new token alone on the last line."""
    token = _users_call(config, lambda ua: ua.rotate_token(name))
    typer.echo(f"user {name}: new token (the old one no longer works):")
    typer.echo(token)


@users_app.command("grant")
def users_grant(
    name: str = typer.Argument(..., help="user name"),
    creditor: str = typer.Option(..., "--creditor", help="the creditor to add to the user's scope"),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Add a creditor to a user's scope."""
    typer.echo(_show_user(_users_call(config, lambda ua: ua.grant(name, creditor))))


@users_app.command("revoke-creditor")
def users_revoke_creditor(
    name: str = typer.Argument(..., help="user name"),
    creditor: str = typer.Option(..., "--creditor", help="the creditor to take out of the user's scope"),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Take a creditor out of a user's scope, at once in every worker."""
    typer.echo(_show_user(_users_call(config, lambda ua: ua.revoke_creditor(name, creditor))))


@audit_app.command("verify")
def audit_verify(
    config: Optional[Path] = ConfigOpt,
    heads: Optional[Path] = typer.Option(None, "--heads", help="an exported heads file (its last line): "
                                         "also check that no chain was rolled back behind it"),
) -> None:
    """Check the decision-log chains under the evidence key and the case-history chains; names the first edited, inserted or deleted record."""
    from dialer.bootstrap import open_store
    from dialer.audit import compare_heads, verify

    cfg = load_config_or_exit(config)

    async def go() -> Any:
        async with open_store(cfg) as store:
            return await verify(store), (await compare_heads(store, heads) if heads is not None else [])

    report, behind = run_or_exit(go())
    for chain, n in sorted(report.chains.items()):
        typer.echo(f"chain {chain}: {n} records")
    typer.echo(f"case history: {report.history_entries} entries")
    for line in behind:
        typer.echo(f"ROLLED BACK {line}")
    if report.ok and not behind:
        typer.echo("OK: every chain verifies" + (f" and is at or past {heads}" if heads else ""))
        return
    for p in report.problems:
        who = f" (decision {p.decision_id})" if p.decision_id else ""
        typer.echo(f"TAMPERED chain {p.chain}: record seq {p.seq}{who} {p.kind}: {p.detail}")
    raise typer.Exit(1)


@audit_app.command("heads")
def audit_heads(
    config: Optional[Path] = ConfigOpt,
    out: Optional[Path] = typer.Option(None, "--out", help="append the line to this file (0600) as well"),
) -> None:
    """Print the current chain heads as one JSON line, for a copy kept outside the database."""
    from datetime import datetime, timezone

    from dialer.bootstrap import open_store
    from dialer.audit import current_heads, export_heads
    from dialer.evidence import export_line

    cfg = load_config_or_exit(config)

    async def go() -> Any:
        async with open_store(cfg) as store:
            now = datetime.now(timezone.utc)
            if out is not None:
                return await export_heads(store, out, now)
            return export_line(await current_heads(store), store.evidence, now.isoformat())

    typer.echo(json.dumps(run_or_exit(go()), separators=(",", ":"), sort_keys=True))


@audit_app.command("anchor")
def audit_anchor(config: Optional[Path] = ConfigOpt) -> None:
    """Put chain heads written before the evidence key under it (the service does this at start)."""
    from dialer.bootstrap import open_store

    cfg = load_config_or_exit(config)

    async def go() -> int:
        async with open_store(cfg) as store:
            async with store.write() as uow:
                return int(await uow.decisions.anchor())

    typer.echo(f"{run_or_exit(go())} chain heads anchored under the evidence key")


@app.command()
def simulate(
    scenario: Optional[Path] = typer.Option(None, "--scenario", help="JSONL scenario, lines in time order"),
    config: Optional[Path] = ConfigOpt,
    from_log: bool = typer.Option(False, "--from-log", help="replay the decision log of a period instead"),
    since: Optional[str] = typer.Option(None, "--since", help="--from-log: first day (YYYY-MM-DD, policy zone)"),
    until: Optional[str] = typer.Option(None, "--until", help="--from-log: last day, inclusive"),
    log_config: Optional[Path] = typer.Option(None, "--log-config", help="--from-log: config.toml of the service "
                                              "whose log is read (default: --config)"),
    creditor: list[str] = typer.Option([], "--creditor", help="--from-log: only this creditor; repeatable"),
    compare: bool = typer.Option(False, "--compare", help="--from-log: print only the decisions that change"),
    fmt: str = typer.Option("table", "--format", help="--compare output: table | jsonl | csv"),
    write_scenario: Optional[Path] = typer.Option(None, "--write-scenario", help="--from-log: also write the "
                                                  "rebuilt traffic as a --scenario file"),
) -> None:
    """Replay a scenario, or a period of the decision log, through the gate's policy (in-memory, injected clock)."""
    from dialer.logs import configure_logging

    configure_logging("warning", True)
    cfg = load_config_or_exit(config)
    if from_log:
        _simulate_from_log(cfg, config, since, until, log_config, creditor, compare, fmt, write_scenario)
        return
    if scenario is None:
        err.print("[red]error:[/red] give --scenario FILE, or --from-log --since DAY --until DAY")
        raise typer.Exit(2)
    from dialer.simulate import ScenarioError, run

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


def _simulate_from_log(
    cfg: Config, config: Optional[Path], since: Optional[str], until: Optional[str], log_config: Optional[Path],
    creditor: list[str], compare: bool, fmt: str, write_scenario: Optional[Path],
) -> None:
    from zoneinfo import ZoneInfo

    from dialer import replay_cli
    from dialer.bootstrap import load_policies

    if since is None or until is None:
        err.print("[red]error:[/red] --from-log needs --since and --until (YYYY-MM-DD)")
        raise typer.Exit(2)
    if fmt not in replay_cli.FORMATS:
        err.print(f"[red]error:[/red] --format: expected one of {', '.join(replay_cli.FORMATS)}, got {fmt!r}")
        raise typer.Exit(2)
    try:
        book = load_policies(cfg)
        start, end = replay_cli.period(since, until, ZoneInfo(book.default.timezone))
    except (ConfigError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    log_cfg = load_config_or_exit(log_config or config)
    try:
        data = asyncio.run(replay_cli.load_from_store(log_cfg, start, end, frozenset(creditor) or None))
    except DialGateError as exc:
        err.print(f"[red]error:[/red] cannot read the decision log: {exc}")
        raise typer.Exit(2) from None
    if write_scenario is not None:
        replay_cli.write_scenario(write_scenario, data)
    results = replay_cli.run_replay(data, book, err)
    replay_cli.report(results, data, compare=compare, fmt=fmt, write=replay_cli.stdout_write, err=err)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
