"""Helpers for the case-store integration tests: real SQLite files, real PostgreSQL,
real `dialgate serve` processes.

PostgreSQL comes from `DIALGATE_TEST_PG_URL` (e.g.
postgresql+asyncpg://dialgate:dialgate@127.0.0.1:5432/dialgate_test); each test gets an
empty `public` schema. Missing → `require_service` (fails under CI, skips elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest

from tests.conftest import require_service

REPO = Path(__file__).resolve().parents[3]
DIALGATE = [sys.executable, "-m", "dialer.cli"]
PG_URL = os.environ.get("DIALGATE_TEST_PG_URL", "")
ALL_DAY_POLICY = '[policy]\ncn_holidays = false\nwindow = { start = "00:00", end = "24:00" }\n'


async def pg_reachable(url: str) -> tuple[bool, str]:
    if not url:
        return False, "set DIALGATE_TEST_PG_URL=postgresql+asyncpg://user:pw@host:port/db"
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, connect_args={"timeout": 3})
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")
        return True, ""
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return False, f"cannot connect to {url.split('@')[-1]}: {type(exc).__name__}: {exc}"
    finally:
        await engine.dispose()


def _admin_url(url: str) -> str:
    """The maintenance database of the same server and role (for CREATE DATABASE)."""
    return os.environ.get("DIALGATE_TEST_PG_ADMIN") or url.rsplit("/", 1)[0] + "/postgres"


@contextlib.asynccontextmanager
async def private_pg_database() -> AsyncIterator[str]:
    """A private, empty database (other suites share DIALGATE_TEST_PG_URL's), dropped after."""
    ok, why = await pg_reachable(PG_URL)
    require_service("PostgreSQL", ok, why)
    from sqlalchemy.ext.asyncio import create_async_engine

    name = f"gate_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(_admin_url(PG_URL), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.dispose()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A private, empty database for this test (other suites share DIALGATE_TEST_PG_URL's)."""
    async with private_pg_database() as url:
        yield url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(config: Path, *args: str, timeout: float = 60) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [*DIALGATE, *args, "--config", str(config)], cwd=config.parent, env=env,
        capture_output=True, text=True, timeout=timeout,
    )
    if done.returncode != 0:
        raise AssertionError(f"dialgate {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


@dataclass
class Cluster:
    """N `dialgate serve` processes sharing one database."""

    config: Path
    ports: list[int]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i % len(self.ports)]}"


def write_config(directory: Path, store_url: str, extra: str = "") -> Path:
    cfg = directory / "config.toml"
    cfg.write_text(
        f'[paths]\ndata_dir = "{directory / "var"}"\n[store]\nurl = "{store_url}"\n'
        f'[log]\nlevel = "warning"\n{extra}{ALL_DAY_POLICY}',
        encoding="utf-8",
    )
    return cfg


async def _wait_ready(client: httpx.AsyncClient, url: str, token: str, proc: subprocess.Popen[bytes]) -> None:
    """Poll readiness until the process answers (bounded; fails if the process dies)."""
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        if proc.poll() is not None:
            said = proc.stderr.read().decode()[-2000:] if proc.stderr is not None else "(stderr not captured)"
            raise AssertionError(f"dialgate serve exited with {proc.returncode}: {said}")
        try:
            r = await client.get(url + "/readyz", headers={"Authorization": f"Bearer {token}"}, timeout=2)
            if r.status_code == 200:
                return
        except httpx.TransportError:
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{url} not ready within 60 s")
        await asyncio.sleep(0.1)


async def start_cluster(config: Path, n: int, users: list[tuple[str, str, str]]) -> Cluster:
    cli(config, "db", "upgrade")
    cluster = Cluster(config=config, ports=[free_port() for _ in range(n)])
    for name, role, creditor in users:
        out = cli(config, "users", "add", "--name", name, "--role", role, "--creditor", creditor)
        cluster.tokens[name] = out.strip().splitlines()[-1]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for port in cluster.ports:
        cluster.procs.append(subprocess.Popen(
            [*DIALGATE, "serve", "--config", str(config), "--port", str(port)],
            cwd=config.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        ))
    token = next(iter(cluster.tokens.values()))
    async with httpx.AsyncClient() as client:
        await asyncio.gather(*(_wait_ready(client, cluster.url(i), token, p) for i, p in enumerate(cluster.procs)))
    return cluster


def terminate(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM `proc` and return its exit code; killed (and TimeoutExpired re-raised)
    when it has not stopped within `timeout` seconds."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def stop_cluster(cluster: Cluster) -> None:
    for p in cluster.procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in cluster.procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
        if p.stderr:
            p.stderr.close()


def one_case(case_id: str, creditor: str, agent: str, number: str) -> dict[str, Any]:
    today = date.today()
    return {
        "case_id": case_id, "creditor": creditor, "debtor_name": "并发测试", "status": "active",
        "commission_start": (today - timedelta(days=10)).isoformat(),
        "commission_end": (today + timedelta(days=10)).isoformat(),
        "assigned_agent": agent, "contacts": [{"number": number, "relation": "self"}],
    }


@pytest.fixture
def workdir() -> Any:
    with tempfile.TemporaryDirectory(prefix="dialgate-") as d:
        yield Path(d)
