"""Two `dialgate serve` gates on one PostgreSQL, optionally behind the reference Kamailio
as a dispatcher (deploy/kamailio/start.sh --gate A --gate2 B): the harness of the
active-active tests and of bench/failover_bench.py.

::

    async with two_gates(pg_url, workdir, cases) as world:
        world.http(0), world.sip_ports[1], world.kport, world.gates[0].pid ...
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Sequence

import httpx

from kamailio_proc import START, _die_with_parent, wait_ready
from tests.integration.store.gate_store_support import DIALGATE, REPO, _wait_ready, cli, free_port, write_config

CREDITOR = "bank-k"
# calling extension -> collector; both are registered caller lines of the creditor
EXTENSIONS = {"1001": "col-k", "1002": "col-s"}


@dataclass
class TwoGates:
    pg_url: str
    configs: list[Path]
    sip_ports: list[int]
    http_ports: list[int]
    gates: list[subprocess.Popen[bytes]]
    tokens: dict[str, str] = field(default_factory=dict)
    kport: int = 0  # Kamailio's port, when it runs
    run_dir: str = ""

    def http(self, i: int) -> str:
        return f"http://127.0.0.1:{self.http_ports[i]}"

    def kamailio_log(self) -> str:
        path = Path(self.run_dir) / "kamailio.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no Kamailio log)"

    def gate_log(self, i: int) -> str:
        path = self.configs[i].parent / "serve.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"

    async def count(self, sql: str, *args: Any) -> int:
        import asyncpg

        from adapters.db.leader import asyncpg_dsn

        conn = await asyncpg.connect(asyncpg_dsn(self.pg_url))
        try:
            return int(await conn.fetchval(sql, *args))
        finally:
            await conn.close()

    async def rows(self, sql: str, *args: Any) -> list[Any]:
        import asyncpg

        from adapters.db.leader import asyncpg_dsn

        conn = await asyncpg.connect(asyncpg_dsn(self.pg_url))
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()


def _evidence_key(workdir: Path) -> Path:
    """One evidence key for both gates: each chains decisions into the same log, and a
    chain MAC'd under two keys does not verify."""
    path = workdir / "evidence.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return path


def _gate_config(workdir: Path, pg_url: str, name: str, sip_port: int, route_port: int, key: Path) -> Path:
    own = workdir / name
    own.mkdir()
    extensions = "".join(f'"{ext}" = "{agent}"\n' for ext, agent in EXTENSIONS.items())
    lines = ", ".join(f'"{ext}"' for ext in EXTENSIONS)
    return write_config(own, pg_url, extra=(
        f'[sip]\nlisten = "127.0.0.1:{sip_port}"\ntrusted_peers = ["127.0.0.1"]\n'
        # An allowed call comes back to Kamailio, which finds no phone: 404 means "placed".
        f'route = "sip:{{number}}@127.0.0.1:{route_port}"\n'
        f'[sip.extensions]\n{extensions}[sip.registered_lines]\n{CREDITOR} = [{lines}]\n'
        f'[audit]\nkey_file = "{key}"\n'
    ))


@contextlib.asynccontextmanager
async def two_gates(pg_url: str, workdir: Path, cases: Sequence[dict[str, Any]], *,
                    kamailio: bool = True, log_to_file: bool = False,
                    env: Mapping[str, str] | None = None,
                    front_a: Callable[[int], Awaitable[int]] | None = None) -> AsyncIterator[TwoGates]:
    """Both gates ready with ``cases`` imported (and Kamailio dispatching over them when
    ``kamailio``); every process stopped on the way out, a frozen one thawed first.
    ``front_a`` puts something between Kamailio and gate A: given A's SIP port, it
    returns the port Kamailio is to use for A."""
    kport, sip_ports, http_ports = free_port(), [free_port(), free_port()], [free_port(), free_port()]
    key = _evidence_key(workdir)
    configs = [_gate_config(workdir, pg_url, n, p, kport, key) for n, p in zip("ab", sip_ports)]
    cli(configs[0], "db", "upgrade")
    tokens = {}
    for name, role in (("data-k", "data"), ("col-k", "collector"), ("col-s", "collector")):
        tokens[name] = cli(configs[0], "users", "add", "--name", name, "--role", role,
                           "--creditor", CREDITOR).strip().splitlines()[-1]
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    gates: list[subprocess.Popen[bytes]] = []
    logs = []
    run_dir = tempfile.mkdtemp(prefix="dialgate-kamailio-")
    proxy = None
    world = TwoGates(pg_url, configs, sip_ports, http_ports, gates, tokens, kport if kamailio else 0, run_dir)
    try:
        for c, p in zip(configs, http_ports):
            out = open(c.parent / "serve.log", "wb") if log_to_file else subprocess.DEVNULL  # noqa: SIM115
            if log_to_file:
                logs.append(out)
            gates.append(subprocess.Popen([*DIALGATE, "serve", "--config", str(c), "--port", str(p)], cwd=c.parent,
                                          env=env, stdout=subprocess.DEVNULL, stderr=out, start_new_session=True))
        async with httpx.AsyncClient(timeout=30) as client:
            for gate, port in zip(gates, http_ports):
                await _wait_ready(client, f"http://127.0.0.1:{port}", tokens["data-k"], gate)
            for k in range(0, len(cases), 500):  # a synchronous import each (larger files become jobs)
                r = await client.post(f"{world.http(0)}/v1/cases:import",
                                      headers={"Authorization": f"Bearer {tokens['data-k']}"},
                                      json={"cases": list(cases[k:k + 500])})
                assert r.status_code == 200, r.text
        if kamailio:
            # Kamailio holds its own copy of the log's descriptor; ours closes once it started.
            a_port = await front_a(sip_ports[0]) if front_a is not None else sip_ports[0]
            with open(Path(run_dir) / "kamailio.log", "wb") as kamailio_log:
                proxy = subprocess.Popen(
                    ["bash", str(START), "--port", str(kport), "--gate", f"127.0.0.1:{a_port}",
                     "--gate2", f"127.0.0.1:{sip_ports[1]}", "--run-dir", run_dir, "--foreground"],
                    stdout=subprocess.DEVNULL, stderr=kamailio_log,
                    start_new_session=True, preexec_fn=_die_with_parent)
            await wait_ready(kport)
        yield world
    finally:
        for g in gates:
            if g.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(g.pid, signal.SIGCONT)
                g.send_signal(signal.SIGTERM)
        if proxy is not None:
            proxy.terminate()
            proxy.wait(timeout=10)
        for g in gates:
            try:
                g.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(g.pid, signal.SIGKILL)
                g.wait(timeout=5)
        for f in logs:
            f.close()
        shutil.rmtree(run_dir, ignore_errors=True)
