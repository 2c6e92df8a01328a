"""Raw asyncio SIP clients for the gate's tests: send bytes, read parsed responses.

Waiting is always on the socket with a time-out, never a sleep.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from typing import Callable

from adapters.sip.message import SipMessage, SipParseError, StreamFramer, canonical_header_name, parse_message

_counter = itertools.count(1)

# The listener's [sip] table in these tests (conftest's start_gate, the edge tests).
GATE_CONFIG = {
    "listen": "127.0.0.1:5070",
    "route": "sip:{number}@127.0.0.1:5080",
    "extensions": {"1001": "a1", "1002": "a2"},
    "registered_lines": {"bank-a": ["+862161234567", "1001"]},
    "trusted_peers": ["127.0.0.1"],
}


def read_response(data: bytes, transport: str = "udp") -> SipMessage:
    """Parse what the gate sent; a response mirroring a peer's odd Via (``SIP/7.0``) is
    read leniently: status line and header lines only."""
    try:
        return parse_message(data, transport)  # type: ignore[arg-type]
    except SipParseError:
        head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8")
        lines = head.split("\r\n")
        _, code, reason = lines[0].split(" ", 2)
        headers = [(canonical_header_name(n.strip()), v.strip()) for n, _, v in (ln.partition(":") for ln in lines[1:])]
        return SipMessage(start_line=lines[0], headers=headers, body=b"", status=int(code), reason=reason)


def make_invite(
    number: str = "+8613800000001",
    *,
    gate_port: int = 5070,
    call_id: str | None = None,
    branch: str | None = None,
    cseq: int = 1,
    from_user: str = "1001",
    from_tag: str | None = None,
    via_host: str = "127.0.0.1:5999",
    transport: str = "UDP",
    extra: str = "",
    method: str = "INVITE",
    to_tag: str | None = None,
) -> bytes:
    n = next(_counter)
    call_id = call_id or f"test-{n}@127.0.0.1"
    branch = branch or f"z9hG4bK-test-{n}"
    from_tag = from_tag or f"ft{n}"
    to = f"<sip:{number}@127.0.0.1:{gate_port}>" + (f";tag={to_tag}" if to_tag else "")
    body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    if method not in ("INVITE",):
        body = b""
    head = (
        f"{method} sip:{number}@127.0.0.1:{gate_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {via_host};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: \"Agent\" <sip:{from_user}@127.0.0.1>;tag={from_tag}\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"Contact: <sip:{from_user}@127.0.0.1:5999>\r\n"
        f"{extra}"
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def derive(request: bytes, method: str, *, to_tag: str | None = None) -> bytes:
    """An ACK or CANCEL for ``request`` (same branch, Call-ID, CSeq number, From tag)."""
    msg = parse_message(request)
    number, _ = msg.cseq
    lines = [f"{method} {msg.uri.raw if msg.uri else ''} SIP/2.0"]
    lines.append(f"Via: {msg.values('via')[0].strip()}")
    lines.append("Max-Forwards: 70")
    lines.append(f"From: {msg.get('from')}")
    to = msg.get("to") or ""
    if to_tag:
        to += f";tag={to_tag}"
    lines.append(f"To: {to}")
    lines.append(f"Call-ID: {msg.call_id}")
    lines.append(f"CSeq: {number} {method}")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class UdpClient:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.addr = (host, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.addr)

    async def recv_raw(self, timeout: float = 3.0) -> bytes:
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.sock_recv(self.sock, 65535), timeout)

    async def recv(self, timeout: float = 3.0) -> SipMessage:
        return read_response(await self.recv_raw(timeout))

    async def recv_final(self, timeout: float = 3.0) -> SipMessage:
        """The next response with status >= 200 (provisional ones are skipped)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            msg = await self.recv(max(left, 0.001))
            if msg.status is not None and msg.status >= 200:
                return msg

    async def request(self, data: bytes, timeout: float = 3.0) -> SipMessage:
        self.send(data)
        return await self.recv_final(timeout)

    def close(self) -> None:
        self.sock.close()


class TcpClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.framer = StreamFramer()
        self.pending: list[bytes] = []

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> "TcpClient":
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 3)
        return cls(r, w)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), 3)

    async def recv(self, timeout: float = 3.0) -> SipMessage | None:
        """The next framed message, or None when the server closed the connection."""
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                return None
            self.pending += self.framer.feed(data)
        return read_response(self.pending.pop(0), "tcp")

    async def recv_final(self, timeout: float = 3.0) -> SipMessage | None:
        while True:
            msg = await self.recv(timeout)
            if msg is None or (msg.status is not None and msg.status >= 200):
                return msg

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except (OSError, asyncio.TimeoutError, TimeoutError):
            pass


async def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for a condition exposed only as state (pyVoIP's call states, a child
    process's life), with a deadline: the one place these tests poll."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
