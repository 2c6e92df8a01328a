"""`dialgate serve --workers N`: N processes answer HTTP on one port.

One process decides at most 1 / (CPU per click-to-dial) dials per second, and a third of
that CPU is the HTTP layer (parsing, authentication, JSON, the answer), which worker
processes run side by side. Decide-and-reserve itself stays serialised by the database
exactly as with one process: on SQLite by BEGIN IMMEDIATE (the writer waits for another
process's transaction with short retries, `adapters.db.sqlite_writer.begin_immediate`), on
PostgreSQL by the per-case and per-number advisory locks. The concurrency tests prove
the cap across processes for both.

Roles. Every worker serves the whole HTTP API over the same store. Exactly one, the
*primary* (the worker holding an exclusive `flock` on the pool's lock file), also runs
what must exist once: the SIP gate listener, the MQTT bus (event relay and command
subscriptions), the PBX user agent, the recordings inbox and sweeps, the expiry of
stale authorisations. If the primary dies, uvicorn's supervisor starts a new worker,
which takes the lock and the role. On PostgreSQL the primary runs the SIP gate (a port
on this host) and only campaigns for the rest: one leader across every instance on the
database runs the relay, the sweeps, the inbox and the PBX user agent
(dialer/leadership.py, adapters/db/leader.py).

Refused with workers > 1 (a clear config error at start): an in-memory database (each
process would have its own), and `[pbx] mode = "sip_ua"` (one registered user agent
places click-to-dial calls; a dial authorised by another worker could not be placed).

Good to know: `/metrics` from any worker sums every worker (prometheus_client's
multiprocess mode); events written by a secondary reach MQTT at once, like the primary's:
after each commit it sends a datagram to the primary's relay wake socket in the pool's
run directory (adapters/mqtt/waker.py; dropped when no primary listens, and then the
relay's `[mqtt] poll_interval` poll, 2 s by default, publishes them); migrations run
once, in the supervising process, before the workers start; so is the policy validated,
and a worker the supervisor restarts later, which reads the config file again, stops if
the policy is no longer the one the pool started with (restart the service to apply an
edit).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dialer.config import Config, load_config
from dialer.errors import ConfigError
from dialer.services import Role

if TYPE_CHECKING:
    from fastapi import FastAPI

CONFIG_ENV = "DIALGATE_POOL_CONFIG"  # the config file the workers read ("" = defaults)
LOCK_ENV = "DIALGATE_POOL_LOCK"  # the pool's primary lock file
POLICY_ENV = "DIALGATE_POOL_POLICY"  # the policy book version the pool started with
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's multiprocess directory

PRIMARY: Role = "primary"
SECONDARY: Role = "secondary"

_held: list[int] = []  # the primary's lock file descriptor, held for the process's life


def check_pool(cfg: Config) -> None:
    """Refuse a worker pool the configuration cannot run correctly."""
    if cfg.http.workers <= 1:
        return
    if cfg.store.is_sqlite and cfg.store.url.rstrip("/").endswith((":memory:", "sqlite+aiosqlite:")):
        raise ConfigError(f"{cfg.source}: http.workers = {cfg.http.workers} needs a database file or "
                          "PostgreSQL: an in-memory database is private to one process")
    if str(cfg.section("pbx").get("mode", "none")) == "sip_ua":
        raise ConfigError(f"{cfg.source}: http.workers = {cfg.http.workers} cannot run with "
                          '[pbx] mode = "sip_ua": one user agent places the calls; set http.workers = 1')


def elect(lock_path: str) -> Role:
    """PRIMARY if this process now holds the pool's lock (kept until it exits), else SECONDARY."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return SECONDARY
    _held.append(fd)
    return PRIMARY


def worker_app() -> FastAPI:
    """uvicorn's app factory in each worker process (`serve_pool` sets the environment)."""
    from dialer.app import build_app, frozen_after_startup
    from dialer.logs import configure_logging

    path = os.environ.get(CONFIG_ENV) or None
    cfg = load_config(path)
    configure_logging(cfg.log.level, cfg.log.json)
    require_the_pools_policy(cfg)
    return frozen_after_startup(build_app(cfg, role=elect(os.environ[LOCK_ENV])))


def require_the_pools_policy(cfg: Config) -> None:
    """A worker (re)started by the supervisor reads the config file again: if its policy
    is no longer the one the pool started with (the file or the holiday file was edited
    while serving), it stops rather than decide on rules the other workers do not."""
    from dialer.bootstrap import load_policies

    started = os.environ.get(POLICY_ENV)
    if not started:
        return
    now = load_policies(cfg).version
    if now != started:
        raise ConfigError(
            f"{cfg.source}: the policy changed since the service started (book version {started[:12]}, now "
            f"{now[:12]}): this worker will not decide on it while the others decide on the old one; restart the "
            "service to apply it / 服务启动后策略配置已被修改，本进程不按新策略放行；请重启服务使其生效"
        )


def serve_pool(cfg: Config, config_path: Path | None, uvicorn_options: dict[str, Any]) -> None:
    """Migrate once, then run `cfg.http.workers` worker processes under uvicorn's
    supervisor (it binds the port, restarts a worker that dies, stops all on SIGTERM)."""
    import uvicorn

    from dialer.bootstrap import load_policies

    check_pool(cfg)
    book = load_policies(cfg)  # a bad policy stops the pool here, before any worker starts
    if cfg.store.migrate_on_start:
        from dialer.bootstrap import open_store

        async def migrate() -> None:
            async with open_store(cfg, migrated=True):
                pass

        asyncio.run(migrate())
    cfg.paths.data_dir.mkdir(parents=True, exist_ok=True)
    _remove_dead_pools(cfg.paths.data_dir)
    run_dir = Path(tempfile.mkdtemp(prefix=".serve-pool-", dir=cfg.paths.data_dir))
    alive = os.open(run_dir / "supervisor.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(alive, fcntl.LOCK_EX)  # held while this supervisor lives: the pool is not dead
    (run_dir / "metrics").mkdir()
    os.environ.update({
        CONFIG_ENV: str(config_path.resolve()) if config_path else "",
        LOCK_ENV: str(run_dir / "primary.lock"),
        POLICY_ENV: book.version,
        METRICS_ENV: str(run_dir / "metrics"),
        # The CLI's --host/--port, and no second migration in every worker.
        "DIALGATE_HTTP_HOST": cfg.http.host,
        "DIALGATE_HTTP_PORT": str(cfg.http.port),
        "DIALGATE_STORE_MIGRATE_ON_START": "false",
    })
    try:
        uvicorn.run("dialer.workers:worker_app", factory=True, workers=cfg.http.workers,
                    host=cfg.http.host, port=cfg.http.port, **uvicorn_options)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        os.close(alive)


def _remove_dead_pools(data_dir: Path) -> None:
    """Run directories left by a pool whose supervisor was killed (SIGKILL, power loss):
    nobody holds their supervisor lock any more. A live pool's stays."""
    for old in data_dir.glob(".serve-pool-*"):
        lock = old / "supervisor.lock"
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            fd = None
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its primary is alive
        finally:
            if fd is not None:
                os.close(fd)
        shutil.rmtree(old, ignore_errors=True)
