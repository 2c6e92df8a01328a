"""Loopback ports for the servers the tests start: the kernel picks (port 0), never a
fixed port, so tests run side by side on one machine."""

from __future__ import annotations

import socket
import subprocess
import time

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_udp_port(host: str = LOOPBACK) -> int:
    """A UDP port free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_tcp_and_udp_port(host: str = LOOPBACK) -> int:
    """A port free for UDP and TCP right now: the SIP gate and Kamailio listen on both."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = int(u.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((host, port))
                except OSError:
                    continue
                return port
    raise OSError("no port free for both UDP and TCP on loopback")


def wait_for_port(
    port: int, *, host: str = LOOPBACK, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Return once `port` accepts a TCP connection; raise when `proc` exits first or
    `timeout` seconds pass. A process that listens gives no other sign of being ready."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing accepted connections on {host}:{port} within {timeout} s") from None
            time.sleep(0.02)
