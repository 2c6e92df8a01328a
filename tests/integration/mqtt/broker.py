"""A Mosquitto broker process of our own: free loopback port, config and persistence in a
tmp dir, graceful stop/start on the same port and data directory."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.support.net import wait_for_port

MOSQUITTO = Path("/usr/sbin/mosquitto")


class MosquittoBroker:
    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.url = f"mqtt://127.0.0.1:{port}"
        self.config_file = workdir / "mosquitto.conf"
        self.log_file = workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        lines = [
            f"listener {port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {workdir}/",
            "persistence_file mosquitto.db",
            # Queue generously for offline persistent sessions (default is 1000).
            "max_queued_messages 200000",
            "max_inflight_messages 1000",
            "set_tcp_nodelay true",
            f"log_dest file {self.log_file}",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # keep access to the tmp dir instead of dropping to `mosquitto`
        self.config_file.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        assert not self.running, "broker already running"
        self._proc = subprocess.Popen(
            [str(MOSQUITTO), "-c", str(self.config_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(self.port, timeout=timeout, proc=self._proc)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"mosquitto did not accept connections within {timeout}s") from None
        except RuntimeError:
            err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
            raise RuntimeError(f"mosquitto exited with {self._proc.returncode}: {err}") from None

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop (SIGTERM): Mosquitto writes its persistence file on the way out."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        if proc.stderr:
            proc.stderr.close()

    def forget_sessions(self) -> None:
        """Drop the persistence file (broker stopped): the next start knows no session."""
        assert not self.running
        (self.workdir / "mosquitto.db").unlink(missing_ok=True)
