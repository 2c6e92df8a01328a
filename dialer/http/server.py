"""The HTTP/1.1 protocol `dialgate serve` runs: uvicorn's httptools protocol, with each
response leaving the process in one write.

uvicorn writes a response's status line and headers, then its body, with two
`transport.write` calls: two `send()` system calls per answer, each with the kernel's
whole TCP path behind it (on loopback the receiver's side too). `CoalescingTransport`
collects the writes made in one turn of the event loop and hands them to the socket
as one, at the end of that turn (`loop.call_soon`) — so a response that is answered in
one go, as every JSON answer of the API is, costs one system call. Under load a turn
finishes many requests, and their answers now leave together at its end: the clients
are woken once for the lot instead of once per write, which saved more server CPU than
the system calls themselves (measured: writing each answer as soon as it was complete,
still in one write, cost more than uvicorn's two writes; at the end of the turn, less).
The bytes and their order are unchanged; only how they are grouped into system calls
differs:

* a close (keep-alive timeout, `connection: close`, a refused request) sends what is
  pending first; an abort drops it, as an abort drops the socket's buffer;
* once the pending bytes reach `FLUSH_AT` they are written at once, so a streamed
  body (a recording download) meets the socket's own flow control as before
  (uvicorn pauses the app when the socket's buffer is full);
* bytes still pending when the connection is lost are dropped (nobody can read them).

`GateHttpProtocol` is `HttpToolsProtocol` with its connection's transport wrapped;
everything else is uvicorn's own: parsing, pipelining, keep-alive, HEAD, 100-continue,
disconnects, flow control. `cli.serve` passes it as uvicorn's `http=` class.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

FLUSH_AT = 65536  # uvicorn's own high-water mark for a request body (flow_control.HIGH_WATER_LIMIT)


class CoalescingTransport:
    """An asyncio transport that groups the writes of one loop turn into one write.

    Everything but writing and closing is the wrapped transport's own (delegated)."""

    __slots__ = ("_transport", "_loop", "_pending", "_size", "_scheduled")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._size = 0
        self._scheduled = False

    # -- writing ---------------------------------------------------------------------

    def write(self, data: Any) -> None:
        if not data:
            return
        if type(data) is not bytes:  # a bytearray or memoryview may change after we return
            data = bytes(data)
        self._pending.append(data)
        self._size += len(data)
        if self._size >= FLUSH_AT:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush_soon)

    def writelines(self, chunks: Any) -> None:
        for data in chunks:
            self.write(data)

    def _flush_soon(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        """Hand the pending bytes to the socket now (one write)."""
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._size = 0
        if self._transport.is_closing():  # lost or closed under us: the bytes cannot arrive
            return
        self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._size + self._transport.get_write_buffer_size()

    # -- closing ---------------------------------------------------------------------

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending.clear()
        self._size = 0
        self._transport.abort()

    # -- the rest is the socket's own ------------------------------------------------

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def __getattr__(self, name: str) -> Any:  # set_protocol, is_reading, set_write_buffer_limits, …
        return getattr(self._transport, name)


class GateHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools HTTP/1.1 protocol writing each response in one system call."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
