"""A scripted SIP peer on loopback UDP standing in for the PBX, for the UA's unit tests.

It answers REGISTER with 200 unless told otherwise and hands every other request to a
script: `script[method](text) -> list of responses (bytes)`. Everything received is
kept; tests wait for a message with `wait_for(predicate)` (a condition, no sleeps).
"""

from __future__ import annotations

import re
import socket
import threading
from typing import Callable

Script = Callable[[str], list[bytes]]


def header(text: str, name: str) -> str | None:
    m = re.search(rf"^{name}:\s*(.*)$", text, re.IGNORECASE | re.MULTILINE)
    return m.group(1).strip() if m else None


def headers(text: str, name: str) -> list[str]:
    return [v.strip() for v in re.findall(rf"^{name}:\s*(.*)$", text, re.IGNORECASE | re.MULTILINE)]


def respond(request: str, code: int, reason: str, *, to_tag: str | None = "fake1", extra: str = "", body: str = "") -> bytes:
    head = request.split("\r\n\r\n", 1)[0].split("\r\n")
    out = [f"SIP/2.0 {code} {reason}"]
    for line in head[1:]:
        name = line.split(":", 1)[0].strip().lower()
        if name in ("via", "from", "call-id", "cseq"):
            out.append(line)
        elif name == "to":
            out.append(line if (to_tag is None or ";tag=" in line) else f"{line};tag={to_tag}")
    if extra:
        out.append(extra.rstrip("\r\n"))
    if body:
        out.append("Content-Type: application/sdp")
    out.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(out) + "\r\n\r\n" + body).encode()


def sdp(port: int) -> str:
    return (
        "v=0\r\no=fake 1 1 IN IP4 127.0.0.1\r\ns=fake\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
    )


class FakePbx:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.received: list[str] = []
        self.script: dict[str, Script] = {}
        self.register_reply: Callable[[str], bytes] = lambda r: respond(r, 200, "OK")
        self.ua_addr: tuple[str, int] | None = None
        self._cond = threading.Condition()
        self._running = True
        self._thread = threading.Thread(target=self._run, name="fake-pbx", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._running = False
        self._thread.join(2)
        self.sock.close()

    def send(self, data: bytes) -> None:
        assert self.ua_addr is not None, "the UA has not talked to the fake PBX yet"
        self.sock.sendto(data, self.ua_addr)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 5.0) -> str:
        with self._cond:
            found: list[str] = []

            def check() -> bool:
                found[:] = [m for m in self.received if predicate(m)]
                return bool(found)

            if not self._cond.wait_for(check, timeout):
                raise AssertionError(f"no such message within {timeout}s; got: {[m.split(chr(13))[0] for m in self.received]}")
            return found[0]

    def count(self, predicate: Callable[[str], bool]) -> int:
        with self._cond:
            return sum(1 for m in self.received if predicate(m))

    def _run(self) -> None:
        while self._running:
            try:
                data, addr = self.sock.recvfrom(65535)
            except (socket.timeout, OSError):
                continue
            text = data.decode("utf-8", "replace")
            self.ua_addr = addr
            with self._cond:
                self.received.append(text)
                self._cond.notify_all()
            method = text.split(" ", 1)[0]
            if method == "REGISTER":
                replies = [self.register_reply(text)]
            elif method in self.script:
                replies = self.script[method](text)
            else:
                replies = []
            for reply in replies:
                self.sock.sendto(reply, addr)
