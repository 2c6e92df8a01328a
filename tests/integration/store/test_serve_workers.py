"""`dialgate serve --workers 2`: two processes answer HTTP on one port over one SQLite
file. The cap still holds exactly across them, the SIP gate listens once (in the
primary), /metrics from any worker counts every worker's decisions, and SIGTERM stops
the whole pool."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import subprocess
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.support.harness import DIALGATE, REPO, cli, terminate, wait_ready, write_config
from tests.support.net import free_port
from tests.support.builders import one_case

N, CAP = 50, 2


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid and "spawn_main" in (entry / "cmdline").read_bytes().decode(errors="replace"):
                out.append(int(entry.name))
    return out


def _sip_options(port: int) -> bytes:
    """OPTIONS over UDP, sent again as a SIP client does (RFC 3261 timer E: 0.5 s, doubling
    to 4 s) until an answer comes: one datagram sent before the listener is bound, or
    lost, is not an answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        me = s.getsockname()[1]
        request = (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKpool1\r\n"
            f"From: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:127.0.0.1:{port}>\r\nCall-ID: pool-probe-1\r\n"
            "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        wait, deadline = 0.5, time.monotonic() + 32  # timer F: 64 x T1
        while True:
            s.sendto(request, ("127.0.0.1", port))
            s.settimeout(min(wait, max(0.01, deadline - time.monotonic())))
            try:
                return s.recvfrom(65535)[0]
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise
            wait = min(2 * wait, 4.0)


@pytest.mark.slow
async def test_two_http_workers_share_one_sqlite_file_and_still_allow_exactly_the_cap(workdir: Path) -> None:
    sip_port, port = free_port(), free_port()
    config = write_config(workdir, f"sqlite+aiosqlite:///{workdir / 'var' / 'dialgate.db'}",
                          extra=f'[sip]\nlisten = "127.0.0.1:{sip_port}"\nroute = "sip:{{number}}@127.0.0.1:5080"\ntrusted_peers = ["127.0.0.1"]\n')
    cli(config, "db", "upgrade")
    tokens = {}
    for name, role in (("data-w", "data"), ("col-w", "collector"), ("comp-w", "compliance")):
        tokens[name] = cli(config, "users", "add", "--name", name, "--role", role, "--creditor", "bank-w").strip().splitlines()[-1]
    tokens["admin-w"] = cli(config, "users", "add", "--name", "admin-w", "--role", "admin").strip().splitlines()[-1]
    proc = subprocess.Popen(
        [*DIALGATE, "serve", "--config", str(config), "--port", str(port), "--workers", "2"],
        cwd=config.parent, env={**os.environ, "PYTHONPATH": str(REPO), "DIALGATE_LOG_LEVEL": "info"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            await wait_ready(client, base, tokens["data-w"], proc)
            workers = _children(proc.pid)
            assert len(workers) == 2, workers
            r = await client.post(base + "/v1/cases:import", headers={"Authorization": f"Bearer {tokens['data-w']}"},
                                  json={"cases": [one_case("W-1", "bank-w", "col-w", "13800000077")]})
            assert r.status_code == 200, r.text
            body = {"case_id": "W-1", "number": "13800000077", "agent_id": "col-w"}
            answers = await asyncio.gather(*(
                client.post(base + "/v1/dials", json=body, headers={"Authorization": f"Bearer {tokens['col-w']}"})
                for _ in range(N)
            ))
            assert Counter(a.status_code for a in answers) == {201: CAP, 403: N - CAP}
            assert {a.json()["decision"]["rule_id"] for a in answers if a.status_code == 403} == {"cap.number_hourly"}
            # Whichever worker answers, /metrics counts the pool's decisions.
            for _ in range(4):
                text = (await client.get(base + "/metrics", headers={"Authorization": f"Bearer {tokens['admin-w']}"})).text
                counted = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                              if line.startswith("dialgate_decisions_total{"))
                assert counted == N, text[:2000]
        # The SIP gate is up, once: a second listener on the port would have failed its worker.
        reply = await asyncio.to_thread(_sip_options, sip_port)
        assert reply.startswith(b"SIP/2.0 200 ")
        assert proc.poll() is None
    finally:
        code = terminate(proc)
        stderr = ""
        if proc.stderr:
            with proc.stderr:
                stderr = proc.stderr.read().decode(errors="replace")
    assert code == 0, stderr[-3000:]
    assert stderr.count('"role": "primary"') == 1 and stderr.count('"role": "secondary"') == 1, stderr[-3000:]
    assert not [p for p in workers if Path(f"/proc/{p}").exists()]
    assert not list((workdir / "var").glob(".serve-pool-*"))
