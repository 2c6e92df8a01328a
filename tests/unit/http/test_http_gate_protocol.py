"""GateHttpProtocol (dialer/http/server.py) over an in-memory socket: a response answered
in one go reaches the socket as one write at the end of the loop turn; a streamed one's
head and chunks still go out while the app waits between them."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from dialer.http.server import GateHttpProtocol
from test_http_coalescing_transport import SocketSide


def serve(app: Any) -> tuple[GateHttpProtocol, SocketSide, ServerState]:
    config = uvicorn.Config(app, log_config=None, access_log=False, proxy_headers=False)
    state = ServerState()
    protocol = GateHttpProtocol(config=config, server_state=state, app_state={})
    sock = SocketSide()
    protocol.connection_made(sock)  # type: ignore[arg-type]
    return protocol, sock, state


async def finished(state: ServerState) -> None:
    await asyncio.wait_for(asyncio.gather(*state.tasks), timeout=5)


async def test_a_response_answered_in_one_go_is_one_write_at_the_end_of_the_loop_turn() -> None:
    at_completion: list[list[bytes]] = []
    sock_ref: list[SocketSide] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"hello"})
        at_completion.append(list(sock_ref[0].writes))  # before this task yields to the loop

    protocol, sock, state = serve(app)
    sock_ref.append(sock)
    protocol.data_received(b"GET /x HTTP/1.1\r\nHost: gate\r\n\r\n")
    await finished(state)
    await asyncio.sleep(0)
    assert at_completion == [[]]  # held until the turn ends, with every other answer of that turn
    assert len(sock.writes) == 1
    head, _, body = sock.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\ncontent-length: 5" in head
    assert body == b"hello"


async def test_a_streamed_response_sends_its_head_and_each_chunk_while_the_app_waits_between_them() -> None:
    gate = asyncio.Event()
    seen_before_last: list[bytes] = []
    sock_ref: list[SocketSide] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await gate.wait()  # e.g. the next chunk of a recording being decrypted
        seen_before_last.extend(sock_ref[0].writes)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    protocol, sock, state = serve(app)
    sock_ref.append(sock)
    protocol.data_received(b"GET /stream HTTP/1.1\r\nHost: gate\r\n\r\n")
    for _ in range(5):
        await asyncio.sleep(0)
    gate.set()
    await finished(state)
    sent = b"".join(seen_before_last)
    assert sent.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in sent
    assert sent.endswith(b"\r\n\r\n5\r\nfirst\r\n")  # the head and the first chunk, before the app went on
    assert b"".join(sock.writes) == sent + b"0\r\n\r\n"


async def test_pipelined_requests_are_answered_in_order_one_write_each() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = scope["path"].encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    protocol, sock, state = serve(app)
    protocol.data_received(b"GET /one HTTP/1.1\r\nHost: g\r\n\r\nGET /two HTTP/1.1\r\nHost: g\r\n\r\n")
    for _ in range(20):
        await asyncio.sleep(0)
    await finished(state)
    assert len(sock.writes) == 2
    assert sock.writes[0].endswith(b"\r\n\r\n/one") and sock.writes[1].endswith(b"\r\n\r\n/two")
