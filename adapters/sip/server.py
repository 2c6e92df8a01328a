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
import hashlib
import re
import socket
import struct
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import structlog

from adapters.sip.config import SipConfig
from adapters.sip.gate import (
    NO_DECISION,
    NO_DECISION_REASON,
    DecisionUnavailable,
    SipDialAnswer,
    SipDialAuthorizer,
    SipDialInput,
    answer_headers,
    ascii_quoted,
    dial_input_from_invite,
    fail_closed_answer,
    is_e164,
    mask_number,
)
from adapters.sip.message import (
    SipMessage,
    SipParseError,
    SipResponse,
    StreamFramer,
    Transport,
    Via,
    canonical_header_name,
    parse_message,
    parse_via,
    split_outside,
)
from adapters.sip.transaction import InviteTransaction, InviteTransactionTable, Reply, transaction_key

log = structlog.get_logger("dialgate.sip")

ALLOW = "INVITE, ACK, CANCEL, OPTIONS"
SERVER_NAME = "DialGate SIP gate"
# Methods of RFC 3261 and its extensions that we know and refuse with 405; any other
# method is an unknown extension method and gets 501 (RFC 3261 8.2.1).
KNOWN_METHODS = frozenset(
    {"REGISTER", "BYE", "INFO", "PRACK", "SUBSCRIBE", "NOTIFY", "UPDATE", "MESSAGE", "REFER", "PUBLISH"}
)
REASON_PHRASES = {
    100: "Trying",
    200: "OK",
    302: "Moved Temporarily",
    400: "Bad Request",
    405: "Method Not Allowed",
    413: "Request Entity Too Large",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    481: "Call/Transaction Does Not Exist",
    484: "Address Incomplete",
    487: "Request Terminated",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "Version Not Supported",
    603: "Decline",
}
_NO_DECISION_HEADERS = [
    ("Retry-After", "1"),
    ("Reason", f'SIP;cause=503;text="{NO_DECISION}"'),
    ("Warning", f'399 dialgate "{NO_DECISION_REASON}"'),
]
_RPORT_RE = re.compile(r";\s*rport(?=\s*(;|$))", re.IGNORECASE)
_PROVISIONAL_AFTER = 0.2  # RFC 3261 17.2.1: send 100 Trying if the TU needs longer
_OVERLOAD_LOG_EVERY = 1.0  # seconds between sip.overloaded lines (each counts the INVITEs shed)


@dataclass
class SipStats:
    datagrams: int = 0
    tcp_messages: int = 0
    parse_errors: int = 0
    dropped: int = 0  # malformed and not answerable, or responses
    invites: int = 0
    decisions: int = 0
    retransmissions: int = 0
    overloaded: int = 0  # INVITEs refused with 503 because too many decisions were in flight
    untrusted: int = 0  # datagrams and TCP connections from outside [sip] trusted_peers, dropped
    authorizer_failures: int = 0


@dataclass(slots=True)
class _Decision:
    """One INVITE being decided: what its answer needs."""

    msg: SipMessage
    txn: InviteTransaction
    source: tuple[Any, ...]
    dial: SipDialInput | None
    started: float
    task: asyncio.Task[Any] | None = None
    timer: asyncio.TimerHandle | None = None  # 100 Trying, then the time-out
    late: bool = False  # answered by the time-out; the authorizer still runs


def _tag_for(*parts: str) -> str:
    return hashlib.blake2s("\x00".join(parts).encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()


class SipServer:
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
        self._oldest: deque[_Decision] = deque()  # decisions in arrival order; finished ones leave lazily
        self._pending = 0  # decisions not finished (late ones after a time-out included)
        self._shed_logged_at = -_OVERLOAD_LOG_EVERY  # when sip.overloaded was last logged
        self._shed_unlogged = 0  # INVITEs shed since then
        self._untrusted_logged_at = -_OVERLOAD_LOG_EVERY
        self._untrusted_unlogged = 0
        # The last decision timed out and none has finished since: the deciding side is
        # frozen or wedged, so OPTIONS probes are answered 503 and a dispatcher stops
        # sending INVITEs here until a decision comes back.
        self.stalled = False
        self.transactions = InviteTransactionTable(max_entries=max_transactions, ttl=transaction_ttl)
        self.stats = SipStats()
        self._udp: _UdpEndpoint | None = None
        # One reply per peer address, not a closure per datagram: a transaction keeps its
        # reply for its whole life (up to Timer H), and a closure is three objects the
        # garbage collector walks in every collection until then (at a high INVITE rate
        # the live transactions' closures would be most of what the collections walk).
        self._udp_replies: dict[tuple[Any, ...], _UdpReply] = {}
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
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
            udp = await _UdpEndpoint.bind(self._host, self._port, self.on_datagram)
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
            # The UDP socket asks for a 1 MiB receive buffer (`_UDP_RCVBUF`) so a stall does
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
        if now - self._untrusted_logged_at >= _OVERLOAD_LOG_EVERY:
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
                self._respond(msg, 503, reply, source, extra=_NO_DECISION_HEADERS)
            else:
                self._respond(msg, 200, reply, source, extra=[("Allow", ALLOW), ("Accept", "application/sdp")])
        elif method in KNOWN_METHODS:
            self._respond(msg, 405, reply, source, extra=[("Allow", ALLOW)])
        else:
            self._respond(msg, 501, reply, source, extra=[("Allow", ALLOW)])

    def _invite(self, msg: SipMessage, transport: Transport, reply: Reply, source: tuple[Any, ...]) -> None:
        self.stats.invites += 1
        key = transaction_key(msg)
        txn = self.transactions.get(key)
        if txn is not None:
            self.stats.retransmissions += 1
            self.transactions.retransmission(txn, reply)
            return
        cseq_number, _ = msg.cseq
        to_tag = msg.to.tag or _tag_for(msg.call_id, msg.from_.tag or "", str(cseq_number), "dialgate")
        txn = self.transactions.create(key, msg, to_tag, transport == "tcp", reply)
        if self._pending >= self._max_pending or self._queued > self._shed_after or self._backlogged():
            # Overload: answer at once instead of queueing decisions that would time out
            # anyway. 503 + Retry-After (RFC 3261 21.5.4); the call is not placed.
            self.stats.overloaded += 1
            self._shed_unlogged += 1
            now = time.monotonic()
            if now - self._shed_logged_at >= _OVERLOAD_LOG_EVERY:
                # at most one line a second: under overload a JSON line per shed INVITE
                # is CPU the decisions in flight need
                log.warning("sip.overloaded", pending=self._pending, shed=self._shed_unlogged, call_id=msg.call_id)
                self._shed_logged_at, self._shed_unlogged = now, 0
            self.transactions.complete(
                txn,
                build_response(msg, 503, source, to_tag, extra=[
                    ("Retry-After", "1"),
                    ("Reason", 'SIP;cause=503;text="system.overloaded"'),
                    ("Warning", '399 dialgate "Too many decisions in flight; the call is not placed"'),
                ]),
            )
            return
        self._pending += 1
        try:
            dial = dial_input_from_invite(msg, self._config.extensions)
        except Exception as exc:  # noqa: BLE001 - a SipParseError is the expected case
            self._pending -= 1
            if isinstance(exc, SipParseError):
                extra = [("Warning", f'399 dialgate "{ascii_quoted(exc.reason)}"')]
                self.transactions.complete(txn, build_response(msg, exc.status, source, to_tag, extra=extra))
                return
            self.stats.authorizer_failures += 1
            log.warning("sip.authorizer_failed", error=type(exc).__name__, detail=str(exc)[:200], call_id=msg.call_id)
            self._answer(_Decision(msg, txn, source, None, time.perf_counter()), fail_closed_answer())
            return
        # One task per INVITE, which answers as soon as the authorizer returns; the 100
        # Trying and the time-out are one timer handle in turn: no wrapping task awaiting
        # asyncio.wait() and no done-callback, each of which costs the INVITE more CPU or
        # one more turn of the loop.
        loop = asyncio.get_running_loop()
        d = _Decision(msg, txn, source, dial, time.perf_counter())
        task = loop.create_task(self._decide(d, dial))
        self._oldest.append(d)
        d.task = task
        if self._timeout > _PROVISIONAL_AFTER:
            d.timer = loop.call_later(_PROVISIONAL_AFTER, self._trying, d)
        else:
            d.timer = loop.call_later(self._timeout, self._timed_out, d)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _backlogged(self) -> bool:
        """True when the oldest decision still within its time-out has waited longer
        than ``shed_after``: the decisions are not keeping up (a store that stalls with
        few decisions in flight). A decision past its time-out (``late``) no longer
        counts here: one wedged decision must not refuse every call after it (the
        time-out answers those). A saturated event loop, whose backlog waits in the
        socket's buffer where no decision has started, is seen by the kernel's
        receive times instead (``_queued``; without them an overloaded inline gate
        queues for seconds, into INVITE retransmissions). The count
        (``max_pending_decisions``) bounds memory and what a stalled store can pile up;
        it is not the latency control: a small cap sheds calls whenever the latency
        briefly rises under a steady high rate, so it is set well above what a healthy
        gate keeps in flight."""
        oldest = self._oldest
        while oldest and (oldest[0].late or oldest[0].task is None or oldest[0].task.done()):
            oldest.popleft()
        return bool(oldest) and time.perf_counter() - oldest[0].started > self._shed_after

    def _trying(self, d: "_Decision") -> None:
        """RFC 3261 17.2.1: 100 Trying when the decision takes longer than 200 ms; then
        the same timer waits for the time-out."""
        d.timer = asyncio.get_running_loop().call_later(self._timeout - _PROVISIONAL_AFTER, self._timed_out, d)
        if not d.txn.final:
            resp = build_response(d.msg, 100, d.source, None)
            for r in d.txn.replies:
                r(resp)

    def _timed_out(self, d: "_Decision") -> None:
        """The time-out answers the PBX; it does not cancel the decision, which may be
        inside a store transaction (cancelling one half-way is worse than a late result
        nobody waits for). The decision stays pending until it ends; its late result is
        logged and dropped."""
        task = d.task
        if task is None or task.done():
            return  # finished; its done-callback is about to answer
        d.late = True
        d.timer = None
        self.stalled = True
        self.stats.authorizer_failures += 1
        log.warning("sip.authorizer_failed", error="TimeoutError", detail=f"no decision within {self._timeout:g} s",
                    call_id=d.msg.call_id)
        self._no_decision(d)

    async def _decide(self, d: "_Decision", dial: SipDialInput) -> None:
        """The INVITE's task: ask the authorizer, then answer (fail closed on any error)."""
        try:
            answer: Any = await self._authorizer.authorize(dial)
        except asyncio.CancelledError:  # the listener is closing
            self._pending -= 1
            if d.timer is not None:
                d.timer.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the authorizer fails closed
            self._decided(d, None, exc)
        else:
            self._decided(d, answer, None)

    def _decided(self, d: "_Decision", answer: Any, exc: BaseException | None) -> None:
        self._pending -= 1
        if d.timer is not None:
            d.timer.cancel()
        if not isinstance(exc, DecisionUnavailable):
            self.stalled = False  # the deciding side answered (late or not): it is alive
        if d.late:
            log.warning(
                "sip.late_decision",
                call_id=d.msg.call_id,
                error=type(exc).__name__ if exc else None,
                allowed=getattr(answer, "allowed", None),
                attempt=getattr(answer, "attempt_id", None),
                note="answered 503 system.no_decision already",
            )
            return
        if exc is None and not isinstance(answer, SipDialAnswer):
            exc = TypeError(f"authorizer returned {type(answer).__name__}, not SipDialAnswer")
        if exc is not None:
            self.stats.authorizer_failures += 1
            log.warning("sip.authorizer_failed", error=type(exc).__name__, detail=str(exc)[:200], call_id=d.msg.call_id)
            if isinstance(exc, DecisionUnavailable):
                self._no_decision(d)
                return
            answer = fail_closed_answer()
        self._answer(d, answer)

    def _no_decision(self, d: "_Decision") -> None:
        """503: nothing was decided (a time-out, or the deciding process is unreachable),
        so the call is not placed here and a dispatcher may ask another gate. A 603
        would be final, and a block is what it must mean."""
        txn = d.txn
        if txn.cancelled or txn.final:
            return
        self.transactions.complete(txn, build_response(d.msg, 503, d.source, txn.to_tag, extra=_NO_DECISION_HEADERS))

    def _answer(self, d: "_Decision", answer: SipDialAnswer) -> None:
        self.stats.decisions += 1
        dial = d.dial
        # debug: in the service, the use case logs each decision once at info (with the
        # call id bound by GateSipAuthorizer); a second line per INVITE is CPU wasted
        log.debug(
            "sip.decision",
            call_id=d.msg.call_id,
            number=mask_number(dial.number) if dial else "",
            agent=dial.agent_id if dial else None,
            case=dial.case_id if dial else None,
            allowed=answer.allowed,
            rule=answer.rule_id,
            attempt=answer.attempt_id,
            ms=round((time.perf_counter() - d.started) * 1000, 2),
        )
        txn = d.txn
        if txn.cancelled or txn.final:
            return  # CANCEL already answered the INVITE with 487
        contact = None
        if answer.allowed:
            # The PBX dials exactly the number decided on: the answer's own number (the
            # service's E.164), else the edge's normalisation of a clean dial string.
            routed = answer.number if answer.number is not None else (dial.number if dial else None)
            if not is_e164(routed):
                log.error("sip.unroutable_decision", call_id=d.msg.call_id, attempt=answer.attempt_id,
                          number=mask_number(routed))
                answer = fail_closed_answer()
            else:
                contact = self._config.contact_for(routed)  # type: ignore[arg-type]
        status, _, extra = answer_headers(answer, contact)
        self.transactions.complete(txn, build_response(d.msg, status, d.source, txn.to_tag, extra=extra))

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
            to_tag = _tag_for(msg.call_id, msg.from_.tag or "", str(cseq_number), msg.method or "")
        reply(build_response(msg, status, source, to_tag, extra=extra))


_UDP_RECV_SIZE = 65536  # every datagram fits (UDP payloads end at 65,527 bytes)
_UDP_BATCH = 32  # datagrams read per readiness of the socket
_UDP_SEND_QUEUE = 4096  # answers held while the socket's send buffer is full
# The socket's receive buffer asked for (the kernel caps it at net.core.rmem_max). The
# default (~208 KiB) holds ~100 INVITEs, so at a high rate a short stall of the loop (a
# garbage collection, the scheduler) drops INVITEs, each then retransmitted by the PBX
# 500 ms later. A larger buffer queues them instead; how long each waited is known (below), so
# a backlog is answered 503 rather than decided late.
_UDP_RCVBUF = 1 << 20
# Linux: each datagram's receive time from the kernel (SCM_TIMESTAMPNS, CLOCK_REALTIME).
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform.startswith("linux") else None)
_TIMESPEC = struct.Struct("@qq")


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


class _UdpEndpoint:
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
    async def bind(cls, host: str, port: int, handler: Callable[[bytes, tuple[Any, ...], float], None]) -> "_UdpEndpoint":
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


# -- building responses ------------------------------------------------------------------


def _top_via_for_response(top: str, source: tuple[Any, ...], parsed: Via | None = None) -> str:
    """RFC 3261 18.2.1 / RFC 3581: add ``received`` and fill ``rport`` on the top Via
    (``parsed``: the same value already parsed, when the caller has it)."""
    if not source:
        return top
    ip, port = str(source[0]), source[1] if len(source) > 1 else None
    out = top
    if parsed is not None and parsed.raw == top:
        via = parsed
    else:
        try:
            via = parse_via(top)
        except SipParseError:
            return top
    if via.host.strip("[]") != ip and "received" not in via.params:
        out += f";received={ip}"
    if port is not None and _RPORT_RE.search(out):
        out = _RPORT_RE.sub(f";rport={port}", out, count=1)
    return out


def build_response(
    msg: SipMessage,
    status: int,
    source: tuple[Any, ...],
    to_tag: str | None,
    extra: list[tuple[str, str]] | None = None,
) -> SipResponse:
    """A response mirroring Via/From/To/Call-ID/CSeq (RFC 3261 8.2.6.2), To-tag added."""
    headers: list[tuple[str, str]] = []
    vias = msg.values("via")
    for i, v in enumerate(vias):
        v = v.strip()
        headers.append(("Via", _top_via_for_response(v, source, _parsed_top_via(msg)) if i == 0 else v))
    headers.append(("From", msg.get("from") or ""))
    to = msg.get("to") or ""
    if to_tag and msg.to.tag is None:
        to = f"{to};tag={to_tag}"
    headers.append(("To", to))
    headers.append(("Call-ID", msg.call_id))
    headers.append(("CSeq", msg.get("cseq") or ""))
    headers.append(("Server", SERVER_NAME))
    headers.extend(extra or [])
    return SipResponse(status, REASON_PHRASES.get(status, "Unknown"), headers)


def _parsed_top_via(msg: SipMessage) -> Via | None:
    try:
        vias = msg.vias  # parsed and cached when the message was validated
    except SipParseError:
        return None
    return vias[0] if vias else None


_LIBERAL_VIA_RE = re.compile(r"SIP\s*/\s*\d{1,3}\.\d{1,3}\s*/\s*[A-Za-z0-9-]+\s+[A-Za-z0-9.\-\[\]:]+\s*(;[^\r\n]*)?\Z")
_ERROR_KEYS = ("via", "from", "to", "call-id", "cseq")


def best_effort_error_response(data: bytes, exc: SipParseError, source: tuple[Any, ...]) -> SipResponse | None:
    """An error response for a request we could not parse, if it is addressable.

    Only when the start line looks like a request (never a response, never an ACK) and
    Via, From, To, Call-ID and CSeq can each be read on their own; otherwise None (drop).
    """
    head = data.split(b"\r\n\r\n", 1)[0][:16384]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    folded: list[list[str]] = []
    for line in text.split("\r\n"):
        if line[:1] in (" ", "\t") and folded:
            folded[-1].append(line.strip())
        else:
            folded.append([line])
    lines = [" ".join(parts) for parts in folded]
    if not lines:
        return None
    start = lines[0]
    first = start.split(" ", 1)[0]
    if not first or first.startswith("SIP/") or first.upper() == "ACK":
        return None
    found: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = canonical_header_name(name.strip(" \t"))
        if key in _ERROR_KEYS:
            value = value.strip(" \t")
            if not value or len(value) > 2048 or any(ord(ch) < 0x20 and ch != "\t" for ch in value):
                return None
            found.setdefault(key, []).append(value)
    if any(k not in found for k in _ERROR_KEYS):
        return None
    vias = [v.strip(" \t;") for line in found["via"] for v in _split_commas(line)]
    vias = [v for v in vias if v]
    # liberal on purpose: the Via may be what is wrong (SIP/7.0, ";;"), we only need to mirror it
    if not vias or not all(_LIBERAL_VIA_RE.match(v) for v in vias):
        return None
    headers: list[tuple[str, str]] = []
    for i, v in enumerate(vias):
        headers.append(("Via", _top_via_for_response(v, source) if i == 0 else v))
    to = found["to"][0]
    if ";tag=" not in to.replace(" ", "").lower():
        to += f";tag={_tag_for(found['call-id'][0], found['cseq'][0], 'err')}"
    headers += [("From", found["from"][0]), ("To", to), ("Call-ID", found["call-id"][0]), ("CSeq", found["cseq"][0])]
    headers.append(("Server", SERVER_NAME))
    headers.append(("Warning", f'399 dialgate "{ascii_quoted(exc.reason)}"'))
    status = exc.status if exc.status in REASON_PHRASES else 400
    return SipResponse(status, REASON_PHRASES[status], headers)


def _split_commas(value: str) -> list[str]:
    try:
        return split_outside(value, ",", what="Via")
    except SipParseError:
        return [value]


__all__ = ["SipServer", "SipStats", "build_response", "best_effort_error_response"]
