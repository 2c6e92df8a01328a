"""`[sip] trusted_peers`: the gate answers only its PBX. A real scanner (SIPVicious's
svmap and svwar, from PyPI) run against the running service finds nothing and reserves
nothing when its address is not trusted, and finds the gate when it is (so a scan that
finds nothing is the gate's silence, not a broken scanner)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.support.net import free_tcp_and_udp_port as free_port
from service_app import start_service
from sipclient import UdpClient
from tests.conftest import require_service

BIN = Path(sys.executable).parent


async def scan(tool: str, tmp_path: Path, *args: str) -> str:
    """Run a SIPVicious tool to completion; its output (its session files under tmp_path)."""
    exe = BIN / f"sipvicious_{tool}"
    require_service("SIPVicious (pip install sipvicious)", exe.exists(), f"expected {exe}")
    proc = await asyncio.create_subprocess_exec(
        str(exe), *args, cwd=tmp_path, env={**os.environ, "HOME": str(tmp_path)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return out.decode("utf-8", "replace")


@pytest.mark.parametrize("edge", ["inline", "process"])
async def test_a_scanner_outside_trusted_peers_finds_nothing_and_reserves_nothing(tmp_path, edge):
    async with start_service(tmp_path / "svc", sip_port=free_port(), edge=edge, trusted_peers=("192.0.2.10",)) as run:
        port = str(run.sip_port)
        options = await scan("svmap", tmp_path, "-p", port, "127.0.0.1")
        invites = await scan("svmap", tmp_path, "-p", port, "-m", "INVITE", "-e", "13800000001", "127.0.0.1")
        war = await scan("svwar", tmp_path, "-p", port, "-m", "INVITE", "-e", "13800000001-13800000003", "127.0.0.1")
        client = UdpClient(run.sip_port)  # a well-formed INVITE with X-Agent-ID from the same host
        client.send(run.invite("13800000001", extra="X-Agent-ID: col-a\r\n"))
        with pytest.raises((TimeoutError, asyncio.TimeoutError)):
            await client.recv(timeout=1.0)
        client.close()
        assert await run.decisions() == 0 and await run.attempts() == 0
    for out in (options, invites, war):
        assert "DialGate" not in out and f"127.0.0.1:{port}" not in out, out  # not one answer reached it


async def test_the_same_scan_from_a_trusted_peer_finds_the_gate(tmp_path):
    async with start_service(tmp_path / "svc", sip_port=free_port(), edge="inline") as run:
        port = str(run.sip_port)
        options = await scan("svmap", tmp_path, "-p", port, "127.0.0.1")
        war = await scan("svwar", tmp_path, "-p", port, "-m", "INVITE", "-e", "13800000001-13800000003", "127.0.0.1")
        decisions = await run.decisions()
    assert "DialGate" in options and f"127.0.0.1:{port}" in options, options
    # its INVITEs reached the gate and were decided (603 agent.unknown: no agent behind them)
    assert decisions >= 3 and "found nothing" in war, war  # (svwar first probes a random extension)
