"""The SIP gate listener: UDP and TCP on one address, as an async context manager.

::

    async with SipServer(authorizer, config) as server:
        ...  # server.port is the bound port (UDP and TCP)

Every INVITE is parsed strictly (``message.py``), matched against the INVITE
transaction table (``transaction.py``) so that a retransmission is never decided twice,
and decided by the :class:`~adapters.sip.gate.SipDialAuthorizer` with a time-out. An
exception there declines the call with 603 ``system.store_unavailable`` (fail closed);
a time-out, or a deciding process that cannot be reached, is answered 503
``system.no_decision`` (the call is not placed here, and a dispatcher may ask another
gate: no decision was made, so that is no second opinion). Malformed requests get a
400 (or 505/413/416) when they carry enough headers to address a response, and are
dropped otherwise; responses and ACKs are never answered. Nothing a peer sends stops
the listener.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import structlog

from adapters.sip.config import SipConfig
from adapters.sip.gate import SipDialAuthorizer, ascii_quoted
from adapters.sip.invites import InviteDecisions
from adapters.sip.listener_state import OVERLOAD_LOG_EVERY, SipStats
from adapters.sip.message import SipMessage, SipParseError, SipResponse, StreamFramer, Transport, parse_message
from adapters.sip.responses import NO_DECISION_HEADERS, best_effort_error_response, build_response, tag_for
from adapters.sip.transaction import InviteTransactionTable, Reply, transaction_key
from adapters.sip.udp import UdpEndpoint

log = structlog.get_logger("dialgate.sip")

ALLOW = "INVITE, ACK, CANCEL, OPTIONS"
# Methods of RFC 3261 and its extensions that we know and refuse with 405; any other
# method is an unknown extension method and gets 501 (RFC 3261 8.2.1).
KNOWN_METHODS = frozenset(
    {"REGISTER", "BYE", "INFO", "PRACK", "SUBSCRIBE", "NOTIFY", "UPDATE", "MESSAGE", "REFER", "PUBLISH"}
)


class SipServer(InviteDecisions):
    """UDP+TCP SIP redirect gate. See the module docstring."""

    def __init__(
        self,
        authorizer: SipDialAuthorizer,
        config: SipConfig | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        decision_timeout: float = 2.0,
        max_transactions: int = 4096,
        transaction_ttl: float = 32.0,
        tcp_idle_timeout: float = 120.0,
        max_tcp_connections: int = 512,
        max_pending_decisions: int = 256,
        shed_after: float = 0.1,
    ) -> None:
        self._config = config or SipConfig()
        self._authorizer = authorizer
        self._host = host if host is not None else self._config.host
        self._port = port if port is not None else self._config.port
        self._timeout = decision_timeout
        self._tcp_idle = tcp_idle_timeout
        self._max_conns = max_tcp_connections
        self._max_pending = max_pending_decisions
        self._shed_after = shed_after
        self._queued = 0.0  # how long the datagram being handled sat in the socket's buffer (s)
        self._oldest = deque()  # decisions in arrival order; finished ones leave lazily
        self._pending = 0  # decisions not finished (late ones after a time-out included)
        self._shed_logged_at = -OVERLOAD_LOG_EVERY  # when sip.overloaded was last logged
        self._shed_unlogged = 0  # INVITEs shed since then
        self._untrusted_logged_at = -OVERLOAD_LOG_EVERY
        self._untrusted_unlogged = 0
        # The last decision timed out and none has finished since: the deciding side is
        # frozen or wedged, so OPTIONS probes are answered 503 and a dispatcher stops
        # sending INVITEs here until a decision comes back.
        self.stalled = False
        self.transactions = InviteTransactionTable(max_entries=max_transactions, ttl=transaction_ttl)
        self.stats = SipStats()
        self._udp: UdpEndpoint | None = None
        # One reply per peer address, not a closure per datagram: a transaction keeps its
        # reply for its whole life (up to Timer H), and a closure is three objects the
        # garbage collector walks in every collection until then (at a high INVITE rate
        # the live transactions' closures would be most of what the collections walk).
        self._udp_replies: dict[tuple[Any, ...], _UdpReply] = {}
        self._tcp: asyncio.Server | None = None
        self._tasks = set()
        self._conns: set[asyncio.StreamWriter] = set()

    # -- lifecycle -------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def pending_decisions(self) -> int:
        """Decisions not finished yet, late ones (after a time-out) included."""
        return self._pending

    async def __aenter__(self) -> "SipServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        last_error: OSError | None = None
        for _ in range(10):  # port 0: find a port free for both UDP and TCP
            udp = await UdpEndpoint.bind(self._host, self._port, self.on_datagram)
            port = udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(
                    self._serve_tcp, self._host, port, reuse_address=True, limit=2**16
                )
            except OSError as exc:
                udp.close()
                last_error = exc
                if self._port != 0:
                    raise
                continue
            # The UDP socket asks for a 1 MiB receive buffer (``udp.py``) so a stall does
            # not drop INVITEs; what waited there longer than `shed_after` is answered 503
            # at once (kernel receive times), so the larger buffer cannot turn overload
            # into seconds of queueing.
            self._udp = udp
            self._port = port
            log.info("sip.listening", host=self._host, port=port, transports="udp,tcp")
            return
        assert last_error is not None
        raise last_error

    async def close(self) -> None:
        if self._tcp is not None:
            self._tcp.close()
        for w in list(self._conns):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._tcp is not None:
            try:
                await asyncio.wait_for(self._tcp.wait_closed(), 2)
            except (TimeoutError, asyncio.TimeoutError):
                pass
            self._tcp = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        self._udp_replies.clear()
        self.transactions.close()

    # -- inbound -----------------------------------------------------------------------
    def on_datagram(self, data: bytes, addr: tuple[Any, ...], queued: float = 0.0) -> None:
        """One UDP datagram; ``queued``: seconds it waited in the socket's receive buffer
        (from the kernel's receive time stamp; 0 when unknown)."""
        self.stats.datagrams += 1
        self._queued = queued
        if not data.strip(b"\r\n"):
            return  # keep-alive
        reply = self._udp_replies.get(addr)
        if reply is None:
            if not self._config.trusts(str(addr[0])):
                self._untrusted(str(addr[0]), "udp")
                return
            if len(self._udp_replies) >= _UDP_REPLY_CACHE:
                self._udp_replies.clear()
            reply = self._udp_replies[addr] = _UdpReply(self, addr)
        self._receive(data, "udp", reply, addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._conns) >= self._max_conns:
            writer.close()
            return
        peer = writer.get_extra_info("peername") or ("", 0)
        if not self._config.trusts(str(peer[0])):
            self._untrusted(str(peer[0]), "tcp")
            writer.close()
            return
        self._conns.add(writer)
        framer = StreamFramer()

        def reply(resp: SipResponse) -> None:
            if not writer.is_closing():
                writer.write(resp.to_bytes())

        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(65536), self._tcp_idle)
                except (TimeoutError, asyncio.TimeoutError):
                    break
                if not data:
                    break
                try:
                    for raw in framer.feed(data):
                        self.stats.tcp_messages += 1
                        self._queued = 0.0  # a stream has no per-message receive time
                        self._receive(raw, "tcp", reply, peer)
                    framer.check()
                except SipParseError as exc:
                    # framing is lost: answer what we can, then close the connection
                    self.stats.parse_errors += 1
                    self._reject(framer.remaining, exc, reply, peer)
                    break
                try:
                    await asyncio.wait_for(writer.drain(), 5)
                except (TimeoutError, asyncio.TimeoutError):
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            # let decisions in flight answer on this connection before we close it
            pending = [t for t in self._tasks if not t.done()]
            if pending and not writer.is_closing():
                await asyncio.wait(pending, timeout=self._timeout + 1)
            self._conns.discard(writer)
            writer.close()

    def _untrusted(self, address: str, transport: str) -> None:
        """A source outside ``trusted_peers``: no answer, no decision. Dropped rather than
        403: an answer tells a scanner a SIP service is here and would go to whatever
        source address a forged datagram carries; the PBX's operator finds the refusal
        in this log line (at most one a second, with the count since the last)."""
        self.stats.untrusted += 1
        self._untrusted_unlogged += 1
        now = time.monotonic()
        if now - self._untrusted_logged_at >= OVERLOAD_LOG_EVERY:
            log.warning("sip.untrusted_peer", source=address[:64], transport=transport, dropped=self._untrusted_unlogged)
            self._untrusted_logged_at, self._untrusted_unlogged = now, 0

    def _receive(self, data: bytes, transport: Transport, reply: Reply, source: tuple[Any, ...]) -> None:
        try:
            msg = parse_message(data, transport)
        except SipParseError as exc:
            self.stats.parse_errors += 1
            self._reject(data, exc, reply, source)
            return
        if not msg.is_request:
            self.stats.dropped += 1  # we run no client transactions: stray responses are dropped
            return
        try:
            self._dispatch(msg, transport, reply, source)
        except SipParseError as exc:
            self.stats.parse_errors += 1
            self._respond(msg, exc.status, reply, source, extra=[("Warning", f'399 dialgate "{ascii_quoted(exc.reason)}"')])

    def _reject(self, data: bytes, exc: SipParseError, reply: Reply, source: tuple[Any, ...]) -> None:
        resp = best_effort_error_response(data, exc, source)
        log.debug("sip.malformed", reason=exc.reason, source=str(source[0]) if source else "", answered=resp is not None)
        if resp is None:
            self.stats.dropped += 1
            return
        reply(resp)

    # -- methods -----------------------------------------------------------------------
    def _dispatch(self, msg: SipMessage, transport: Transport, reply: Reply, source: tuple[Any, ...]) -> None:
        method = msg.method
        assert msg.uri is not None and method is not None
        if method == "ACK":
            self.transactions.ack(transaction_key(msg, "INVITE"))
            return  # ACKs are never answered
        if msg.uri.scheme not in ("sip", "sips", "tel"):
            self._respond(msg, 416, reply, source)
            return
        if method == "CANCEL":
            self._cancel(msg, reply, source)
            return
        required = [v.strip() for v in msg.values("require") if v.strip()]
        if required:
            self._respond(msg, 420, reply, source, extra=[("Unsupported", ", ".join(required))])
            return
        if method == "INVITE":
            self._invite(msg, transport, reply, source)
        elif method == "OPTIONS":
            if self.stalled:
                self._respond(msg, 503, reply, source, extra=NO_DECISION_HEADERS)
            else:
                self._respond(msg, 200, reply, source, extra=[("Allow", ALLOW), ("Accept", "application/sdp")])
        elif method in KNOWN_METHODS:
            self._respond(msg, 405, reply, source, extra=[("Allow", ALLOW)])
        else:
            self._respond(msg, 501, reply, source, extra=[("Allow", ALLOW)])

    def _cancel(self, msg: SipMessage, reply: Reply, source: tuple[Any, ...]) -> None:
        txn = self.transactions.get(transaction_key(msg, "INVITE"))
        if txn is None:
            self._respond(msg, 481, reply, source)
            return
        self._respond(msg, 200, reply, source)
        if not txn.final and txn.request is not None:
            txn.cancelled = True
            self.transactions.complete(txn, build_response(txn.request, 487, source, txn.to_tag))

    def _respond(self, msg: SipMessage, status: int, reply: Reply, source: tuple[Any, ...], extra: list[tuple[str, str]] | None = None) -> None:
        to_tag = None
        if msg.to.tag is None and status >= 200:
            cseq_number, _ = msg.cseq
            to_tag = tag_for(msg.call_id, msg.from_.tag or "", str(cseq_number), msg.method or "")
        reply(build_response(msg, status, source, to_tag, extra=extra))


_UDP_REPLY_CACHE = 1024  # peer addresses remembered (a PBX or two in practice; cleared when full)


class _UdpReply:
    """Send a response to one UDP peer through the listener's socket (the one it has
    when the response leaves: none once it closed)."""

    __slots__ = ("server", "addr")

    def __init__(self, server: "SipServer", addr: tuple[Any, ...]) -> None:
        self.server = server
        self.addr = addr

    def __call__(self, resp: SipResponse) -> None:
        udp = self.server._udp
        if udp is not None and not udp.is_closing():
            udp.sendto(resp.to_bytes(), self.addr)


__all__ = ["SipServer", "SipStats", "build_response", "best_effort_error_response"]
