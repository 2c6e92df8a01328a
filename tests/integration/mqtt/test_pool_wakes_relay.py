"""`dialgate serve --workers 2` with `[mqtt] url`: a dial answered by the SECONDARY worker
is on the broker at once, although only the primary runs the relay and its poll is a
minute away (the secondary wakes it through the pool's wake socket).

Real processes, a real SQLite file and a real Mosquitto. Which worker answers is read
from the kernel, not from the service: the pid owning the server end of our TCP
connection (/proc/net/tcp + /proc/<pid>/fd) against the pid holding the pool's primary
lock (/proc/locks). HTTP/1.1 keep-alive keeps every request of a connection on its
worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.mqtt.broker import MosquittoBroker
from tests.integration.mqtt.helpers import Collector
from tests.support.harness import DIALGATE, REPO, cli, terminate, write_config
from tests.support.net import free_port
from tests.support.builders import one_case

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

EVENTS = "dialgate/v1/+/events/#"
# The primary's relay polls the outbox every minute; its other wake-ups are its own
# commits, and the expiry of stale authorisations (a write every 15 s). Three dials in a
# row, each given 8 s for its event: without the wake socket at most the first could be
# carried by an expiry tick, the next then has no tick within its 8 s.
POLL_INTERVAL_S = 60
DIALS = 3
EVENT_TIMEOUT_S = 8


class Http:
    """One keep-alive HTTP/1.1 connection, spoken by hand (its local port is ours to know)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: str) -> None:
        self.reader, self.writer, self.token = reader, writer, token
        self.local_port: int = writer.get_extra_info("sockname")[1]

    @classmethod
    async def open(cls, port: int, token: str) -> Http:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        return cls(reader, writer, token)

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = b"" if body is None else json.dumps(body).encode()
        self.writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data
        )
        await self.writer.drain()
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 30)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        payload = await asyncio.wait_for(self.reader.readexactly(int(headers["content-length"])), 30)
        return status, json.loads(payload) if payload else None

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if ppid == pid and b"spawn_main" in cmdline:
                out.append(int(entry.name))
    return out


def _flock_holder(path: Path) -> int | None:
    """The pid holding an flock on `path`, from the kernel's lock table."""
    inode = os.stat(path).st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
            return int(fields[4])
    return None


def _server_pid(server_port: int, client_port: int, candidates: list[int]) -> int | None:
    """The process owning the accepted (server) end of the TCP connection
    127.0.0.1:client_port → 127.0.0.1:server_port."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            inode = fields[9]
    if inode is None or inode == "0":
        return None
    target = f"socket:[{inode}]"
    for pid in candidates:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == target:
                    return pid
            except OSError:
                continue
    return None


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Short on purpose: the run directory's socket path stays a plain address.
    with tempfile.TemporaryDirectory(prefix="dialgate-pool-") as d:
        yield Path(d)


async def test_a_dial_served_by_the_secondary_worker_reaches_the_broker_without_waiting_for_the_poll(
    broker: MosquittoBroker, client_id: str, workdir: Path
) -> None:
    port = free_port()
    config = write_config(
        workdir, f"sqlite+aiosqlite:///{workdir / 'var' / 'dialgate.db'}",
        extra=(f'[mqtt]\nurl = "{broker.url}"\nclient_id = "{client_id}"\npoll_interval = {POLL_INTERVAL_S}\n'
               "reconnect_min = 0.1\nreconnect_max = 1.0\n"),
    )
    cli(config, "db", "upgrade")
    tokens = {}
    for name, role in (("data-p", "data"), ("col-p", "collector")):
        out = cli(config, "users", "add", "--name", name, "--role", role, "--creditor", "bank-p")
        tokens[name] = out.strip().splitlines()[-1]

    async with Collector(broker.port, [EVENTS], client_id + "-watch") as watch:
        log_file = (workdir / "serve.log").open("wb")
        proc = subprocess.Popen(
            [*DIALGATE, "serve", "--config", str(config), "--port", str(port), "--workers", "2"],
            cwd=workdir, env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL, stderr=log_file,
        )
        pool = Pool(proc, workdir, port)
        opened: list[Http] = []
        try:
            # The dials below must not race the primary's first connection to the broker.
            opened.append(data := await pool.connect(tokens["data-p"], to="primary"))
            cases = [one_case(f"P-{i}", "bank-p", "col-p", f"1380000{i:04d}") for i in range(DIALS)]
            status, body = await data.request("POST", "/v1/cases:import", {"cases": cases})
            assert status == 200, body

            sockets = list((workdir / "var").glob(".serve-pool-*/relay-wake.sock"))
            assert len(sockets) == 1 and stat.S_IMODE(sockets[0].stat().st_mode) == 0o600, sockets
            opened.append(secondary := await pool.connect(tokens["col-p"], to="secondary"))
            for i, case in enumerate(cases):
                number = case["contacts"][0]["number"]
                status, body = await secondary.request(
                    "POST", "/v1/dials", {"case_id": case["case_id"], "number": number, "agent_id": "col-p"})
                assert status == 201, body
                attempt_id = body["attempt_id"]
                try:
                    await watch.wait_until(lambda ms, a=attempt_id: any(_is_allowed(m, a) for m in ms),
                                           EVENT_TIMEOUT_S)
                except TimeoutError:
                    pytest.fail(f"dial {i + 1} of {DIALS}, answered by the secondary worker, did not reach "
                                f"the broker within {EVENT_TIMEOUT_S} s (poll interval {POLL_INTERVAL_S} s)")
        finally:
            for h in opened:
                await h.close()
            try:
                code = terminate(proc)
            finally:
                log_file.close()
    assert code == 0, (workdir / "serve.log").read_text(errors="replace")[-3000:]
    assert not list((workdir / "var").glob(".serve-pool-*"))  # socket and run directory gone


def _is_allowed(message: Any, attempt_id: str) -> bool:
    doc = message.json()
    return doc.get("type") == "dial.allowed" and doc.get("attempt_id") == attempt_id


class Pool:
    """The running `serve --workers 2`: its worker pids and which one is the primary."""

    def __init__(self, proc: subprocess.Popen[bytes], workdir: Path, port: int) -> None:
        self.proc, self.workdir, self.port = proc, workdir, port
        self.workers: list[int] = []
        self.primary: int | None = None

    async def connect(self, token: str, *, to: str) -> Http:
        """A connection answered by the primary (`to="primary"`: once its MQTT bus is
        connected) or by a secondary (`to="secondary"`). uvicorn closes idle
        connections after 5 s: use it at once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while True:
            assert self.proc.poll() is None, f"dialgate serve exited with {self.proc.returncode}"
            assert loop.time() < deadline, (
                f"no ready {to} connection within 60 s (workers {self.workers}, primary {self.primary})")
            conn = await self._try(token, to)
            if conn is not None:
                return conn
            await asyncio.sleep(0.1)

    async def _try(self, token: str, to: str) -> Http | None:
        if len(self.workers) < 2:
            self.workers = _children(self.proc.pid)
        if self.primary is None:
            locks = list((self.workdir / "var").glob(".serve-pool-*/primary.lock"))
            self.primary = _flock_holder(locks[0]) if locks else None
        if len(self.workers) < 2 or self.primary is None:
            return None
        assert self.primary in self.workers, (self.primary, self.workers)
        try:
            conn = await Http.open(self.port, token)
        except OSError:
            return None  # not listening yet
        try:
            status, body = await conn.request("GET", "/readyz")
            served_by = _server_pid(self.port, conn.local_port, self.workers)
            assert served_by in self.workers, (served_by, self.workers)
            if status == 200 and to == "primary" and served_by == self.primary:
                if body.get("mqtt", {}).get("ok"):  # only the primary runs the bus
                    return conn
            if status == 200 and to == "secondary" and served_by != self.primary:
                assert "mqtt" not in body, body  # a secondary runs no bus
                return conn
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        await conn.close()
        return None
