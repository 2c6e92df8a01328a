"""Start a real Kamailio on a free loopback UDP port with the test registrar config.

Used by the click-to-dial integration tests and by bench/bridge_bench.py.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.net import free_udp_port  # noqa: F401 - the click-to-dial tests and bench import it from here

KAMAILIO = os.environ.get("DIALGATE_KAMAILIO", "/usr/sbin/kamailio")
CONFIG = Path(__file__).parent / "kamailio" / "kamailio.cfg"


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: Kamailio gets SIGTERM if the test/bench process dies abruptly.
    # It fires when the *thread* that started it ends: start it from the main thread.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, 15)
    except OSError:
        pass


def kamailio_available() -> bool:
    return Path(KAMAILIO).is_file() and os.access(KAMAILIO, os.X_OK)


def free_port_block(size: int) -> int:
    """A base port with `size` consecutive UDP ports free right now (even base)."""
    for _ in range(200):
        base = free_udp_port() & ~1
        if base + size >= 65000:
            continue
        socks = []
        try:
            for p in range(base, base + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no block of {size} free UDP ports on loopback")


class KamailioProcess:
    """`with KamailioProcess() as k:` → k.port; stops the process tree on exit."""

    def __init__(self, children: int = 2) -> None:
        self.port = free_udp_port()
        self.children = children
        self._dir = tempfile.mkdtemp(prefix="dialgate-kam-")
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(self._dir) / "kamailio.log"

    def __enter__(self) -> "KamailioProcess":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        cmd = [
            KAMAILIO, "-f", str(CONFIG), "-l", f"udp:127.0.0.1:{self.port}", "-DD", "-E",
            "-Y", self._dir, "-m", "64", "-M", "8", "-n", str(self.children),
        ]
        self._log = open(self.log_path, "wb")
        self._proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"kamailio exited: {self.log_path.read_text(errors='replace')[-2000:]}")
            if self._answers_options():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("kamailio did not answer OPTIONS within 10 s")

    def _answers_options(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            s.bind(("127.0.0.1", 0))
            lp = s.getsockname()[1]
            msg = (
                f"OPTIONS sip:127.0.0.1:{self.port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{lp};branch=z9hG4bKprobe{time.monotonic_ns()}\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:127.0.0.1:{self.port}>\r\n"
                f"Call-ID: probe{time.monotonic_ns()}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            )
            try:
                s.sendto(msg.encode(), ("127.0.0.1", self.port))
                data = s.recv(4096)
            except OSError:
                return False
            return data.startswith(b"SIP/2.0 200")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, 15)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=5)
        if getattr(self, "_log", None):
            self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)
