"""Two `dialgate serve` gates on one PostgreSQL behind a real Kamailio dispatcher
(deploy/kamailio/start.sh --gate A --gate2 B): with gate A frozen (SIGSTOP), then
killed (SIGKILL), every INVITE still gets its final answer from B, decided once; a gate's 603 is never asked
again of the other gate; with no gate left Kamailio declines with 603
`system.gate_unavailable`."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from kamailio_proc import START, _die_with_parent, kamailio_available, wait_ready
from sipclient import UdpClient, make_invite
from tests.conftest import require_service
from tests.integration.store.gate_store_support import (  # noqa: F401 - pg_url, workdir are fixtures
    DIALGATE, REPO, _wait_ready, cli, free_port, one_case, pg_url, workdir, write_config,
)

pytestmark = [pytest.mark.kamailio, pytest.mark.slow]


def _gate_config(workdir: Path, pg_url: str, name: str, sip_port: int, kport: int) -> Path:
    own = workdir / name
    own.mkdir()
    return write_config(own, pg_url, extra=(
        f'[sip]\nlisten = "127.0.0.1:{sip_port}"\ntrusted_peers = ["127.0.0.1"]\n'
        # An allowed call comes back to Kamailio, which finds no phone: 404 means "placed".
        f'route = "sip:{{number}}@127.0.0.1:{kport}"\n'
        '[sip.extensions]\n"1001" = "col-k"\n[sip.registered_lines]\nbank-k = ["1001"]\n'
    ))


async def _ask(kport: int, number: str, timeout: float = 8.0) -> Any:
    """One INVITE through Kamailio; its final response."""
    client = UdpClient(kport)
    try:
        me = client.sock.getsockname()[1]
        return await client.request(make_invite(number, gate_port=kport, via_host=f"127.0.0.1:{me}"), timeout)
    finally:
        client.close()


async def _count(pg_url: str, sql: str) -> int:
    import asyncpg

    from adapters.db.leader import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(pg_url))
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def test_a_frozen_gate_is_skipped_a_block_is_final_and_no_gate_means_603(pg_url: str, workdir: Path) -> None:
    require_service("kamailio", kamailio_available(), "apt-get install kamailio (scripts/setup.sh --services)")
    kport, sip_ports, http_ports = free_port(), [free_port(), free_port()], [free_port(), free_port()]
    configs = [_gate_config(workdir, pg_url, n, p, kport) for n, p in zip("ab", sip_ports)]
    cli(configs[0], "db", "upgrade")
    token = cli(configs[0], "users", "add", "--name", "data-k", "--role", "data", "--creditor", "bank-k").strip().splitlines()[-1]
    cli(configs[0], "users", "add", "--name", "col-k", "--role", "collector", "--creditor", "bank-k")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    gates = [subprocess.Popen([*DIALGATE, "serve", "--config", str(c), "--port", str(p)], cwd=c.parent, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
             for c, p in zip(configs, http_ports)]
    run_dir = tempfile.mkdtemp(prefix="dialgate-kamailio-")
    kamailio = None
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            for gate, port in zip(gates, http_ports):
                await _wait_ready(client, f"http://127.0.0.1:{port}", token, gate)
            numbers = [f"1370000{i:04d}" for i in range(60)]
            r = await client.post(f"http://127.0.0.1:{http_ports[0]}/v1/cases:import",
                                  headers={"Authorization": f"Bearer {token}"},
                                  json={"cases": [one_case(f"K-{i}", "bank-k", "col-k", n) for i, n in enumerate(numbers)]})
            assert r.status_code == 200, r.text
        # Kamailio holds its own copy of the log's descriptor; ours closes once it started.
        with open(Path(run_dir) / "kamailio.log", "wb") as kamailio_log:
            kamailio = subprocess.Popen(
                ["bash", str(START), "--port", str(kport), "--gate", f"127.0.0.1:{sip_ports[0]}",
                 "--gate2", f"127.0.0.1:{sip_ports[1]}", "--run-dir", run_dir, "--foreground"],
                stdout=subprocess.DEVNULL, stderr=kamailio_log,
                start_new_session=True, preexec_fn=_die_with_parent)
        await wait_ready(kport)
        # Both gates up: calls are placed (round robin), each decided once.
        answers = [await _ask(kport, n) for n in numbers[:6]]
        assert [a.status for a in answers] == [404] * 6, [a.get("Reason") for a in answers]
        # A block is final: the 603 of whichever gate decided goes back as is, and the
        # other gate is never asked (one decision per INVITE, not two).
        decided = await _count(pg_url, "SELECT count(*) FROM decisions")
        blocked = [await _ask(kport, f"1360000{i:04d}") for i in range(4)]
        assert [b.status for b in blocked] == [603] * 4
        assert all("system.gate_unavailable" not in (b.get("Reason") or "") for b in blocked)
        assert await _count(pg_url, "SELECT count(*) FROM decisions") == decided + 4

        # The whole instance: the service and its SIP edge process.
        os.killpg(gates[0].pid, signal.SIGSTOP)
        before = await _count(pg_url, "SELECT count(*) FROM attempts")
        started = asyncio.get_running_loop().time()
        answers = await asyncio.gather(*(_ask(kport, n) for n in numbers[6:26]))
        print(f"gate A frozen: 20 INVITEs answered in {asyncio.get_running_loop().time() - started:.2f} s, "
              f"{sum(a.status != 404 for a in answers)} not placed")
        assert [a.status for a in answers] == [404] * 20, (Path(run_dir) / "kamailio.log").read_text(errors="replace")[-3000:]  # all placed, by B
        assert await _count(pg_url, "SELECT count(*) FROM attempts") == before + 20

        # Gate A dies outright (kill -9): its port is closed, B still places every call.
        os.killpg(gates[0].pid, signal.SIGKILL)
        gates[0].wait(timeout=10)
        answers = await asyncio.gather(*(_ask(kport, n) for n in numbers[26:30]))
        assert [a.status for a in answers] == [404] * 4
        assert await _count(pg_url, "SELECT count(*) FROM attempts") == before + 24
        before += 24

        os.killpg(gates[1].pid, signal.SIGSTOP)
        none_left = await _ask(kport, numbers[30])
        assert none_left.status == 603 and "system.gate_unavailable" in (none_left.get("Reason") or "")
        assert await _count(pg_url, "SELECT count(*) FROM attempts") == before  # none placed
    finally:
        for g in gates:
            if g.poll() is None:
                os.killpg(g.pid, signal.SIGCONT)
                g.send_signal(signal.SIGTERM)
        if kamailio is not None:
            kamailio.terminate()
            kamailio.wait(timeout=10)
        for g in gates:
            try:
                g.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(g.pid, signal.SIGKILL)
                g.wait(timeout=5)
        shutil.rmtree(run_dir, ignore_errors=True)
