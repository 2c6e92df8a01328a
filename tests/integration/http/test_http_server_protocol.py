"""`dialgate serve`'s HTTP protocol (dialer/http/server.py:GateHttpProtocol) over real
sockets: the same requests sent to uvicorn's own httptools protocol and to ours, both
serving one app on uvloop, get the same bytes back (the `date` header aside), for
pipelined requests, keep-alive, HEAD, 4xx, large bodies both ways, `connection: close`,
`Expect: 100-continue` and requests the parser refuses; and a client that leaves
mid-request or before its answer leaves no error behind."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import threading
import time
from typing import Any, Iterator

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from dialer.app import build_app
from dialer.auth import add_user
from dialer.config import build_config
from dialer.http.server import FLUSH_AT, GateHttpProtocol

CASES = [{
    "case_id": "C-1", "creditor": "bank-a", "debtor_name": "张三", "status": "active",
    "commission_start": "2026-01-01", "commission_end": "2099-01-31", "assigned_agent": "col-a",
    "contacts": [{"number": f"1380000{i:04d}", "relation": "self"} for i in range(1, 9)],
}]


class Servers:
    """uvicorn's httptools protocol (`stock`) and ours (`gate`) serving one app, in a
    thread of their own on uvloop, as `dialgate serve` runs."""

    def __init__(self, tmp: Any) -> None:
        cfg = build_config({"paths": {"data_dir": str(tmp)}, "log": {"level": "warning"},
                            "policy": {"cn_holidays": False, "window": {"start": "00:00", "end": "24:00"}}})
        self.app = build_app(cfg)
        self.socks = {name: socket.socket() for name in ("stock", "gate")}
        for s in self.socks.values():
            s.bind(("127.0.0.1", 0))
        self.port = {name: s.getsockname()[1] for name, s in self.socks.items()}
        protocols = {"stock": HttpToolsProtocol, "gate": GateHttpProtocol}
        self.servers = {
            name: uvicorn.Server(uvicorn.Config(
                self.app, http=protocols[name], loop="uvloop", log_config=None, access_log=False,
                lifespan="on" if name == "stock" else "off", timeout_graceful_shutdown=5))
            for name in self.socks
        }
        self.loop: asyncio.AbstractEventLoop | None = None
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="http-servers", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not all(s.started for s in self.servers.values()):
            if self.failure is not None or time.monotonic() > deadline:
                raise RuntimeError(f"servers did not start: {self.failure!r}")
            time.sleep(0.02)
        self.tokens = {name: self.call(self._user(name, role, creditors))
                       for name, role, creditors in (("col-a", "collector", ("bank-a",)),
                                                     ("data-a", "data", ("bank-a",)))}
        c = Conn(self.port["stock"])
        try:
            c.send(request("POST", "/v1/cases:import", self.tokens["data-a"], json.dumps({"cases": CASES}).encode(),
                           rid="seed"))
            status, _, body = c.response()
            assert status == 200, body
        finally:
            c.close()

    def _run(self) -> None:
        import uvloop

        async def both() -> None:
            self.loop = asyncio.get_running_loop()
            stock = asyncio.create_task(self.servers["stock"].serve(sockets=[self.socks["stock"]]))
            while not self.servers["stock"].started and not stock.done():  # the app's start-up first
                await asyncio.sleep(0.01)
            await asyncio.gather(stock, self.servers["gate"].serve(sockets=[self.socks["gate"]]))

        try:
            uvloop.run(both())
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            self.failure = exc

    async def _user(self, name: str, role: str, creditors: tuple[str, ...]) -> str:
        svc = self.app.state.services
        return (await add_user(svc.store, svc.clock, name, role, frozenset(creditors)))[1]

    def call(self, coro: Any) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def wait_until_no_connections(self, name: str, timeout: float = 10.0) -> None:
        """Until server `name` has seen every client connection go and finished every
        request it had started (its loop ran past the closes)."""
        server = self.servers[name]

        async def gone() -> None:
            while server.server_state.connections or server.server_state.tasks:
                await asyncio.sleep(0.01)

        self.call(asyncio.wait_for(gone(), timeout))

    def stop(self) -> None:
        for s in self.servers.values():
            s.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: Any) -> Iterator[Servers]:
    s = Servers(tmp_path_factory.mktemp("http-protocol"))
    try:
        yield s
    finally:
        s.stop()


def request(method: str, path: str, token: str | None = None, body: bytes | None = None, *,
            rid: str, ctype: str = "application/json", extra: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: gate\r\nX-Request-Id: {rid}\r\n{extra}"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    if body is not None:
        head += f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode("latin-1") + (body or b"")


class Conn:
    """A raw client connection that reads whole HTTP/1.1 responses."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.buf = b""
        self.raw = b""  # every byte received, for byte-for-byte comparisons

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _more(self) -> bool:
        chunk = self.sock.recv(1 << 20)
        self.buf += chunk
        self.raw += chunk
        return bool(chunk)

    def response(self, head_request: bool = False) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            if not self._more():
                raise ConnectionError(f"closed before a whole response head: {self.buf!r}")
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        if status == 100:
            return status, headers, b""
        size = 0 if head_request else int(headers.get("content-length", "0"))
        while len(self.buf) < size:
            if not self._more():
                raise ConnectionError("closed before the whole body")
        body, self.buf = self.buf[:size], self.buf[size:]
        return status, headers, body

    def closed_by_server(self) -> bool:
        try:
            return not self._more() and not self.buf
        except (ConnectionResetError, TimeoutError):
            return False

    def close(self) -> None:
        self.sock.close()


def same_bytes_from_both(servers: Servers, data: bytes, answers: int, *, heads: tuple[int, ...] = (),
                         then_closed: bool = False) -> list[tuple[int, dict[str, str], bytes]]:
    """Send `data` in one write to each server; read `answers` responses from each; the
    bytes received must be the same (the `date` header aside). Returns ours, parsed."""
    got: dict[str, tuple[bytes, list[tuple[int, dict[str, str], bytes]]]] = {}
    for name in ("stock", "gate"):
        c = Conn(servers.port[name])
        try:
            c.send(data)
            parsed = [c.response(head_request=i in heads) for i in range(answers)]
            if then_closed:
                assert c.closed_by_server(), name
            # Any spelling: the WebSocket refusal writes "Date:"; two answers may straddle a second.
            got[name] = (re.sub(rb"\r\ndate: [^\r]*", b"\r\ndate: -", c.raw, flags=re.IGNORECASE), parsed)
        finally:
            c.close()
    assert got["gate"][0] == got["stock"][0]
    return got["gate"][1]


def test_pipelined_requests_are_answered_in_order_with_the_same_bytes_as_uvicorns_protocol(servers: Servers) -> None:
    tok = servers.tokens["col-a"]
    data = b"".join([
        request("GET", "/healthz", tok, rid="p-1"),
        request("GET", "/v1/no-such-thing", tok, rid="p-2"),
        request("GET", "/readyz", None, rid="p-3"),
        request("POST", "/v1/dials", tok, b'{"case_id": ', rid="p-4"),
        request("POST", "/v1/dials", tok, json.dumps({"case_id": "C-1", "number": "1", "agent_id": "col-a",
                                                      "colour": "red"}).encode(), rid="p-5"),
        request("GET", "/healthz", tok, rid="p-6"),
    ])
    answers = same_bytes_from_both(servers, data, 6)
    assert [a[0] for a in answers] == [200, 404, 401, 400, 422, 200]
    assert [a[1]["x-request-id"] for a in answers] == ["p-1", "p-2", "p-3", "p-4", "p-5", "p-6"]
    assert answers[0][2] == answers[5][2] == b'{"status":"ok"}'
    assert answers[1][1]["content-type"] == "application/problem+json"


def test_head_then_get_on_one_connection_are_answered_as_uvicorns_protocol_answers_them(servers: Servers) -> None:
    tok = servers.tokens["col-a"]
    data = request("HEAD", "/healthz", tok, rid="h-1") + request("GET", "/healthz", tok, rid="h-2")
    answers = same_bytes_from_both(servers, data, 2, heads=(0,))
    assert answers[0][2] == b""
    assert (answers[1][0], answers[1][2]) == (200, b'{"status":"ok"}')


def test_a_response_larger_than_the_flush_threshold_arrives_whole_and_identical(servers: Servers) -> None:
    bad = [{**CASES[0], "case_id": f"X-{i}", "status": "nonsense", "debtor_name": "某" * 40} for i in range(3000)]
    body = json.dumps({"cases": bad}, ensure_ascii=False).encode()
    assert len(body) > 4 * FLUSH_AT  # a large request body too
    answers = same_bytes_from_both(
        servers, request("POST", "/v1/cases:import", servers.tokens["data-a"], body, rid="big-1"), 1)
    status, headers, payload = answers[0]
    assert status == 400, payload[:300]
    assert len(payload) > FLUSH_AT and int(headers["content-length"]) == len(payload)
    assert len(json.loads(payload)["details"]["errors"]) == 3000  # every row's error, whole


def test_connection_close_is_honoured_after_the_answer(servers: Servers) -> None:
    data = request("GET", "/healthz", servers.tokens["col-a"], rid="c-1", extra="Connection: close\r\n")
    answers = same_bytes_from_both(servers, data, 1, then_closed=True)
    assert answers[0][0] == 200 and answers[0][1]["connection"] == "close"


def test_an_http_1_0_request_is_answered_then_the_connection_closes(servers: Servers) -> None:
    data = request("GET", "/healthz", servers.tokens["col-a"], rid="v10-1").replace(b"HTTP/1.1\r\n", b"HTTP/1.0\r\n", 1)
    answers = same_bytes_from_both(servers, data, 1, then_closed=True)
    assert (answers[0][0], answers[0][2]) == (200, b'{"status":"ok"}')


def test_a_websocket_upgrade_the_app_does_not_serve_is_refused_alike(servers: Servers) -> None:
    data = request("GET", "/v1/no-socket-here", servers.tokens["col-a"], rid="ws-1",
                   extra="Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
    answers = same_bytes_from_both(servers, data, 1)
    assert answers[0][0] == 403


def test_a_request_the_parser_refuses_gets_uvicorns_400_and_the_connection_closes(servers: Servers) -> None:
    answers = same_bytes_from_both(servers, b"GET /healthz HTTP/1.1\r\nHost gate\r\n\r\n", 1, then_closed=True)
    assert answers[0][0] == 400


def test_expect_100_continue_sends_continue_then_the_answer(servers: Servers) -> None:
    body = json.dumps({"case_id": "C-1", "number": "1", "agent_id": "col-a", "colour": "red"}).encode()
    data = request("POST", "/v1/dials", servers.tokens["col-a"], body, rid="e-1", extra="Expect: 100-continue\r\n")
    answers = same_bytes_from_both(servers, data, 2)
    assert [a[0] for a in answers] == [100, 422]


def test_dials_over_one_kept_alive_connection_are_each_answered_whole(servers: Servers) -> None:
    tok = servers.tokens["col-a"]
    c = Conn(servers.port["gate"])
    try:
        c.send(b"".join(
            request("POST", "/v1/dials", tok, json.dumps({"case_id": "C-1", "number": f"1380000{i:04d}",
                                                          "agent_id": "col-a"}).encode(), rid=f"d-{i}")
            for i in (1, 2)))
        first, second = c.response(), c.response()
        c.send(request("GET", "/healthz", tok, rid="d-3"))
        third = c.response()
    finally:
        c.close()
    for (status, headers, body), rid in ((first, "d-1"), (second, "d-2")):
        assert status == 201, body[:500]
        assert headers["x-request-id"] == rid and headers["content-type"] == "application/json"
        doc = json.loads(body)
        assert doc["decision"]["allowed"] is True and doc["attempt_id"]
    assert (third[0], third[2]) == (200, b'{"status":"ok"}')


def test_clients_that_leave_before_their_answer_leave_no_error_and_the_server_serves_on(
        servers: Servers, caplog: pytest.LogCaptureFixture) -> None:
    tok = servers.tokens["col-a"]
    caplog.set_level(logging.WARNING)
    half = request("POST", "/v1/dials", tok, b'{"case_id": "C-1", "number": "13800000003", "agent_id": "col-a"}',
                   rid="gone-1")
    for cut in (len(half) - 20, len(half)):  # mid-body, and whole but gone before the answer
        c = Conn(servers.port["gate"])
        c.send(half[:cut])
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
        c.close()
    servers.wait_until_no_connections("gate")  # the server has handled both disconnects
    c = Conn(servers.port["gate"])
    try:
        c.send(request("GET", "/healthz", tok, rid="after"))
        assert c.response()[0] == 200
    finally:
        c.close()
    servers.wait_until_no_connections("gate")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


def test_a_200_mb_dial_with_an_unknown_token_is_refused_at_its_headers_and_the_connection_closed(servers: Servers) -> None:
    for name in ("stock", "gate"):
        c = Conn(servers.port[name])
        try:
            head = ("POST /v1/dials HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer dg_nobody\r\n"
                    "Content-Type: application/json\r\nContent-Length: 209715200\r\n\r\n")
            c.send(head.encode() + b'{"case_id": "')  # the rest never comes: only an answer ends the wait
            status, headers, body = c.response()
            assert status == 401, (name, body)
            assert headers["connection"] == "close"
            assert c.closed_by_server(), name
        finally:
            c.close()


def test_a_dial_declaring_more_than_its_route_limit_is_refused_at_its_headers(servers: Servers) -> None:
    c = Conn(servers.port["gate"])
    try:
        c.send(request("POST", "/v1/dials", servers.tokens["col-a"], rid="big")[:-2]
               + b"Content-Type: application/json\r\nContent-Length: 1048576\r\n\r\n{")
        status, headers, body = c.response()
        assert status == 413, body
        assert json.loads(body)["details"]["limit_bytes"] == 65536
        assert c.closed_by_server()
    finally:
        c.close()
