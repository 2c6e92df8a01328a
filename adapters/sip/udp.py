"""The gate's UDP socket on the event loop (:class:`UdpEndpoint`), read in batches."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
import time
from collections import deque
from typing import Any, Callable

import structlog

log = structlog.get_logger("dialgate.sip")

_UDP_RECV_SIZE = 65536  # every datagram fits (UDP payloads end at 65,527 bytes)
_UDP_BATCH = 32  # datagrams read per readiness of the socket
_UDP_SEND_QUEUE = 4096  # answers held while the socket's send buffer is full
# The socket's receive buffer asked for (the kernel caps it at net.core.rmem_max). The
# default holds few INVITEs, so at a high rate a short stall of the loop (a garbage
# collection, the scheduler) drops INVITEs, which the PBX retransmits only after T1
# (RFC 3261). A larger buffer queues them instead; how long each waited is known (below),
# so a backlog is answered 503 rather than decided late.
_UDP_RCVBUF = 1 << 20
# Linux: each datagram's receive time from the kernel (SCM_TIMESTAMPNS, CLOCK_REALTIME).
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform.startswith("linux") else None)
_TIMESPEC = struct.Struct("@qq")


class UdpEndpoint:
    """The gate's UDP socket on the event loop: what ``create_datagram_endpoint`` does,
    minus two costs on the hot path. asyncio's datagram transport reads one datagram
    per loop iteration into a fresh 256 KiB buffer (its ``max_size``), so every
    datagram pays that allocation and a loop iteration of its own. Here one readiness
    reads up to ``_UDP_BATCH`` datagrams of at most ``_UDP_RECV_SIZE``. Sending is the
    transport's: at once, else queued until the socket is writable. Socket errors
    (ICMP from a peer that went away) are ignored; a failing handler is logged and the
    next datagram is read."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, handler: Callable[[bytes, tuple[Any, ...], float], None]) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._handler = handler
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UDP_RCVBUF)
        except OSError:
            pass  # the default buffer; the kernel knows best
        self._stamped = False
        if _SO_TIMESTAMPNS is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
                self._stamped = True
            except OSError:
                pass  # no receive times: a backlog in the buffer shows only in the decisions' count
        self._closing = False
        self._queue: deque[tuple[bytes, tuple[Any, ...]]] = deque()
        loop.add_reader(self._fd, self._readable)

    @classmethod
    async def bind(cls, host: str, port: int, handler: Callable[[bytes, tuple[Any, ...], float], None]) -> "UdpEndpoint":
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        error: OSError | None = None
        for family, kind, proto, _, addr in infos:
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                sock.bind(addr)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            return cls(loop, sock, handler)
        raise error or OSError(f"cannot bind UDP {host}:{port}")

    def get_extra_info(self, name: str) -> Any:
        return self._sock.getsockname() if name == "sockname" else None

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        if self._queue:
            self._loop.remove_writer(self._fd)
            self._queue.clear()
        self._sock.close()

    def sendto(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if self._closing:
            return
        if not self._queue:
            try:
                self._sock.sendto(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                self._loop.add_writer(self._fd, self._writable)
            except OSError:
                return  # the peer's problem (unreachable): UDP drops it, and so do we
        if len(self._queue) < _UDP_SEND_QUEUE:
            self._queue.append((data, addr))

    def _writable(self) -> None:
        while self._queue:
            data, addr = self._queue[0]
            try:
                self._sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                pass
            self._queue.popleft()
        self._loop.remove_writer(self._fd)

    def _readable(self) -> None:
        recvmsg = self._sock.recvmsg
        stamped = self._stamped
        for _ in range(_UDP_BATCH):
            if self._closing:
                return
            try:
                data, anc, _flags, addr = recvmsg(_UDP_RECV_SIZE, 64 if stamped else 0)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # ICMP port unreachable from a peer that went away
            queued = 0.0
            if anc:
                _level, kind, raw = anc[0]
                if kind == _SO_TIMESTAMPNS and len(raw) >= _TIMESPEC.size:
                    sec, nsec = _TIMESPEC.unpack_from(raw)
                    queued = max(0.0, time.time() - sec - nsec * 1e-9)  # a clock stepped back: 0
            try:
                self._handler(data, addr, queued)
            except Exception as exc:  # never let one datagram stop the endpoint
                log.error("sip.udp_handler_failed", error=type(exc).__name__, detail=str(exc)[:200])
