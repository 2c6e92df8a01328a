"""Start the reference Kamailio (deploy/kamailio/start.sh) on free loopback ports for a test."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import AsyncIterator

from sipclient import UdpClient

REPO = Path(__file__).resolve().parents[3]
START = REPO / "deploy" / "kamailio" / "start.sh"


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies (even by SIGKILL),
    so a killed test run leaves no Kamailio behind (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


def kamailio_available() -> bool:
    return shutil.which("kamailio") is not None or Path("/usr/sbin/kamailio").exists()


async def wait_ready(port: int, timeout: float = 15.0) -> None:
    """Until Kamailio answers a keep-alive OPTIONS on ``port`` (or time out)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    n = 0
    while True:
        n += 1
        client = UdpClient(port)
        try:
            client.send(
                (
                    f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{client.sock.getsockname()[1]};branch=z9hG4bKready{n}\r\n"
                    f"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p{n}\r\nTo: <sip:127.0.0.1:{port}>\r\n"
                    f"Call-ID: ready-{n}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
                ).encode()
            )
            try:
                msg = await client.recv(timeout=0.5)
                if msg.status == 200:
                    return
            except (asyncio.TimeoutError, TimeoutError, ConnectionRefusedError, OSError):
                pass
        finally:
            client.close()
        if loop.time() > deadline:
            raise TimeoutError(f"Kamailio did not answer on 127.0.0.1:{port} within {timeout} s")


@contextlib.asynccontextmanager
async def run_kamailio(port: int, gate: str, *, static_redirect: bool = False) -> AsyncIterator[subprocess.Popen[bytes]]:
    run_dir = tempfile.mkdtemp(prefix="dialgate-kamailio-")
    args = ["bash", str(START), "--port", str(port), "--gate", gate, "--run-dir", run_dir, "--foreground"]
    if static_redirect:
        args.append("--static-redirect")
    log = open(Path(run_dir) / "kamailio.log", "wb")
    proc = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent
    )
    try:
        await wait_ready(port)
        yield proc
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait, 5)
        log.close()
        shutil.rmtree(run_dir, ignore_errors=True)
