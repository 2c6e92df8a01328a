"""The service's SIP user agent: pyVoIP kept on its own threads, exposed as asyncio.

Why not `VoIPPhone.call()`: in pyVoIP 1.6.8 it blocks the caller inside `SIPClient.invite`
(holding the receive lock) until a 100/180/401 arrives — forever if the far end answers
486/603/480 straight away; after that, every final response other than 200/404/503 is
dropped ("TODO: Add 500 Error"), so a busy or declined leg stays DIALING forever. It has
no outbound CANCEL, never answers OPTIONS (its parser raises on any method other than
INVITE/ACK/BYE/CANCEL), ignores Record-Route (no Route set in BYE/ACK; BYE reuses the
INVITE's Via and branch), derives Call-IDs and branches from a counter that restarts
with the process, re-registers on a timer thread that reads the shared socket and can
swallow an in-dialog request, prints to stdout and resets the warning filters.

`PyVoIPSipClient` subclasses pyVoIP's `SIPClient` and keeps its message builders
(`gen_invite`, `gen_first_response`, `gen_register` with its digest), its parser
(`SIPMessage`, with its SDP parsing) and its media (`RTPClient`), but owns the socket
loop: ONE thread ("pbx-sip") receives, runs timers (retransmissions, ring timeouts,
re-registration) and executes the commands the event loop posts to it, so SIP state is
touched by a single thread. RTP runs on pyVoIP's two threads per leg with our bounded
buffers (see `audio`).

`SipUserAgent` is the asyncio face: `start()` registers (or raises `PbxUnavailable`
quickly), `place_call(target, timeout, role=…)` returns a `Leg` at once; a leg ends with
a cause on every path:

    agent_no_answer / callee_no_answer   ring timeout (we CANCEL), 480, 408, 487
    busy                                 486, 600
    declined                             603, 607
    failed                               anything else, no response from the PBX,
                                         unusable SDP, local setup errors
    completed                            answered, then either side hung up
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import hashlib
import heapq
import itertools
import random
import re
import select
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import structlog

from adapters.pbx import _pyvoip as pv
from adapters.pbx.audio import FRAME_BYTES, RxBuffer, TxBuffer
from adapters.pbx.errors import LegSetupError, PbxUnavailable

log = structlog.get_logger("adapters.pbx.sip_ua")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS"
_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length", "c": "content-type"}


class LegState(enum.StrEnum):
    CALLING = "calling"
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"


class LegCause(enum.StrEnum):
    AGENT_NO_ANSWER = "agent_no_answer"
    CALLEE_NO_ANSWER = "callee_no_answer"
    BUSY = "busy"
    DECLINED = "declined"
    FAILED = "failed"
    COMPLETED = "completed"


def cause_for_status(status: int, role: str) -> LegCause:
    """The end cause of a leg refused with SIP `status` (a final response ≥ 300)."""
    if status in (486, 600):
        return LegCause.BUSY
    if status in (603, 607):
        return LegCause.DECLINED
    if status in (408, 480, 487):
        return no_answer(role)
    return LegCause.FAILED


def no_answer(role: str) -> LegCause:
    return LegCause.AGENT_NO_ANSWER if role == "agent" else LegCause.CALLEE_NO_ANSWER


@dataclass(frozen=True)
class SipUaConfig:
    """The account the service registers on the PBX with (`[pbx.sip_ua]` in config.toml)."""

    server: str
    port: int = 5060
    username: str = "dialgate"
    password: str = field(default="", repr=False)  # from a file/env, never logged
    local_ip: str = "127.0.0.1"
    local_port: int = 5062
    rtp_port_low: int = 20000
    rtp_port_high: int = 20999
    register_timeout: float = 3.0
    register_expires: int = 600
    t1: float = 0.5  # RFC 3261 retransmission base on UDP

    def __post_init__(self) -> None:
        if not (0 < self.port < 65536 and 0 <= self.local_port < 65536):
            raise ValueError("pbx.sip_ua: port and local_port must be valid UDP ports")
        if self.rtp_port_low > self.rtp_port_high or self.rtp_port_low < 1024:
            raise ValueError("pbx.sip_ua: rtp_port_low..rtp_port_high must be an increasing range above 1023")
        if self.register_timeout <= 0:
            raise ValueError("pbx.sip_ua: register_timeout must be > 0")


# --- raw message helpers (requests pyVoIP cannot parse, responses we build) ------------


def _split_headers(raw: bytes) -> tuple[str, list[tuple[str, str]]]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines: list[str] = []
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    start, headers = lines[0], []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        headers.append((_COMPACT.get(key, key), value.strip()))
    return start, headers


def _first(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((v for n, v in headers if n == name), None)


def _all(headers: list[tuple[str, str]], name: str) -> list[str]:
    out: list[str] = []
    for n, v in headers:
        if n == name:
            out.extend(_split_comma(v))
    return out


def _split_comma(value: str) -> list[str]:
    parts, depth, cur, quoted = [], 0, "", False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth -= 1
        if ch == "," and depth == 0 and not quoted:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def build_response(raw: bytes, code: int, reason: str, *, to_tag: str, extra: tuple[str, ...] = ()) -> bytes:
    """A response to the request `raw` mirroring Via/From/To/Call-ID/CSeq (RFC 3261 8.2.6)."""
    _, headers = _split_headers(raw)
    out = [f"SIP/2.0 {code} {reason}"]
    out += [f"Via: {v}" for n, v in headers if n == "via"]
    for name, label in (("from", "From"), ("to", "To"), ("call-id", "Call-ID"), ("cseq", "CSeq")):
        value = _first(headers, name)
        if value is None:
            continue
        if name == "to" and code > 100 and ";tag=" not in value.replace(" ", ""):
            value += f";tag={to_tag}"
        out.append(f"{label}: {value}")
    out += list(extra)
    out.append("Server: dialgate")
    out.append("Content-Length: 0")
    return ("\r\n".join(out) + "\r\n\r\n").encode()


def _uri_of(value: str) -> str:
    m = re.search(r"<([^>]*)>", value)
    return (m.group(1) if m else value.split(";")[0]).strip()


def _tag_of(value: str) -> str:
    m = re.search(r";\s*tag=([^;>\s]+)", value)
    return m.group(1) if m else ""


# --- legs ------------------------------------------------------------------------------


class Leg:
    """One outbound call leg. State lives on the SIP thread; the asyncio side sees events.

    Thread-safe audio: `read_frame()` (non-blocking, None when nothing arrived) and
    `write_audio(u8_bytes)`; async `read_audio()` waits for a frame.
    """

    def __init__(self, ua: "SipUserAgent", target: str, role: str, timeout: float, headers: Mapping[str, str]):
        self._ua = ua
        self.target = target
        self.role = role
        self.timeout = timeout
        self.headers = dict(headers)
        self.id = uuid.uuid4().hex[:12]
        self.call_id = f"{uuid.uuid4().hex}@{ua.config.local_ip}"
        self.rx = RxBuffer()
        self.tx = TxBuffer()
        # mirrored on the event loop
        self.state = LegState.CALLING
        self.cause: LegCause | None = None
        self.sip_status: int | None = None
        self.hangup_by: str | None = None
        self.detail: str | None = None
        self.times: dict[str, float] = {"calling": time.time()}
        self._answered = asyncio.Event()
        self._ringing = asyncio.Event()
        self._ended = asyncio.Event()
        self._listeners: list[Callable[[Leg], None]] = []
        self._loop = asyncio.get_running_loop()
        # SIP-thread side
        self._d = _Dialog(self)

    def __repr__(self) -> str:
        return f"<Leg {self.role} {pv.mask(self.target)} {self.state} {self.cause}>"

    @property
    def ended(self) -> bool:
        return self.state is LegState.ENDED

    def on_change(self, listener: Callable[["Leg"], None]) -> None:
        """Call `listener(leg)` on the event loop after every state change."""
        self._listeners.append(listener)

    async def wait_answered(self) -> bool:
        """True once answered; False when the leg ended without being answered."""
        waits = [asyncio.ensure_future(self._answered.wait()), asyncio.ensure_future(self._ended.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        return self._answered.is_set() and self.state is LegState.ANSWERED

    async def wait_ringing(self) -> None:
        await self._ringing.wait()

    async def wait_ended(self) -> LegCause:
        await self._ended.wait()
        assert self.cause is not None
        return self.cause

    def read_frame(self) -> bytes | None:
        got = self.rx.pop()
        return got[0] if got else None

    async def read_audio(self, timeout: float = 1.0) -> bytes:
        """The next received 20 ms frame (8-bit unsigned, 160 bytes); silence on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.read_frame()
            if frame is not None:
                return frame
            if time.monotonic() >= deadline or self.ended:
                return b"\x80" * FRAME_BYTES
            await asyncio.sleep(0.005)

    def write_audio(self, data: bytes) -> None:
        """Queue 8-bit unsigned 8 kHz audio to send (bounded; oldest dropped)."""
        self.tx.write(0, data)

    async def hangup(self, cause: LegCause | None = None) -> None:
        """BYE when answered, CANCEL while ringing; no-op once ended. Returns when ended."""
        if self.ended:
            return
        await self._ua._post(lambda c: c.hangup(self, cause))
        await asyncio.wait_for(self._ended.wait(), 5.0)  # the SIP thread ends it at once

    # called on the loop by the SIP thread
    def _apply(self, state: LegState, cause: LegCause | None, status: int | None, by: str | None, detail: str | None) -> None:
        if self.state is LegState.ENDED:
            return
        self.state = state
        self.times.setdefault(state.value, time.time())
        if status is not None:
            self.sip_status = status
        if state is LegState.RINGING:
            self._ringing.set()
        elif state is LegState.ANSWERED:
            self._answered.set()
        elif state is LegState.ENDED:
            self.cause, self.hangup_by, self.detail = cause, by, detail
            self._ended.set()
        for listener in list(self._listeners):
            try:
                listener(self)
            except Exception:  # a listener's bug must not break the SIP plumbing
                log.exception("pbx.leg.listener_failed", leg=self.id)


@dataclass
class _Dialog:
    """SIP-thread state of a leg."""

    leg: Leg
    state: LegState = LegState.CALLING
    branch: str = ""
    cseq: int = 0
    request_uri: str = ""
    invite: bytes = b""
    via: str = ""
    from_hdr: str = ""
    to_hdr: str = ""
    remote_tag: str = ""
    remote_target: str = ""
    route_set: list[str] = field(default_factory=list)
    got_response: bool = False
    got_provisional: bool = False
    auth_tried: bool = False
    rtp_port: int | None = None
    rtp: Any = None
    pending: dict[str, Any] = field(default_factory=dict)  # method → retransmit state


# --- the SIP client ---------------------------------------------------------------------


class _PhoneShim:
    """pyVoIP's SIPClient expects a phone to write a status into; we keep our own."""

    _status = pv.PhoneStatus.INACTIVE


class PyVoIPSipClient(pv.SIPClient):
    """pyVoIP's SIPClient with a single-threaded, non-blocking transaction layer."""

    def __init__(self, config: SipUaConfig, on_registration: Callable[[bool, str | None], None]):
        with pv.preserved_warning_filters():
            super().__init__(
                config.server,
                config.port,
                config.username,
                config.password,
                phone=_PhoneShim(),  # type: ignore[arg-type]  # the client only writes a status into it
                myIP=config.local_ip,
                myPort=config.local_port,
                callCallback=None,
                fatalCallback=None,
            )
        self.cfg = config
        self.default_expires = config.register_expires
        self.register_timeout = config.register_timeout  # type: ignore[assignment]  # pyVoIP: int; a select timeout, seconds
        self._on_registration = on_registration
        self._dialogs: dict[str, _Dialog] = {}
        self._closing: set[Any] = set()  # RTP clients stopped, sockets closing a frame later
        self._timers: list[tuple[float, int, Callable[[], object]]] = []
        self._seq = itertools.count()
        self._commands: list[Callable[[], None]] = []
        self._cmd_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._thread: threading.Thread | None = None
        self._free_ports = [p for p in range(config.rtp_port_low, config.rtp_port_high + 1, 2)]
        random.shuffle(self._free_ports)
        self._reg: dict[str, Any] = {}
        self.registered = False
        self.registration_error: str | None = None
        self._register_waiters: list[concurrent.futures.Future[None]] = []
        self._reg_failures = 0

    # lifecycle -----------------------------------------------------------------
    def start(self) -> concurrent.futures.Future[None]:  # type: ignore[override]
        """Bind, start the SIP thread, register. The future resolves on the first answer."""
        if self.NSD:
            raise RuntimeError("SIP client already started")
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.s.bind((self.myIP, self.myPort))
        except OSError as exc:
            self.s.close()
            raise PbxUnavailable(
                f"无法绑定本地 SIP 端口 / cannot bind local SIP port {self.myIP}:{self.myPort}: {exc}"
            ) from exc
        if self.myPort == 0:
            self.myPort = self.s.getsockname()[1]
        try:
            # Connected to the PBX: only the PBX's datagrams reach us, and an ICMP "port
            # unreachable" surfaces as ConnectionRefusedError, so a dead PBX fails fast.
            self.s.connect((self.server, self.port))
        except OSError as exc:
            self.s.close()
            raise PbxUnavailable(f"PBX 地址无效 / cannot reach sip:{self.server}:{self.port}: {exc}") from exc
        self.s.setblocking(False)
        self.out = self.s
        self.NSD = True
        fut: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._register_waiters.append(fut)
        self._thread = threading.Thread(target=self._loop, name=f"pbx-sip-{self.myPort}", daemon=True)
        self._thread.start()
        self.post(self._send_register)
        return fut

    def stop(self) -> None:
        if not self.NSD:
            return
        done = threading.Event()

        def _shutdown() -> None:
            for d in list(self._dialogs.values()):
                if d.state is not LegState.ENDED:
                    self.hangup(d.leg, LegCause.FAILED, detail="ua_stopped")
            if self.registered:
                self._send_register(expires=0)
            self.NSD = False
            done.set()

        self.post(_shutdown)
        done.wait(timeout=2.0)
        self.NSD = False
        self._wake()
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        for d in self._dialogs.values():
            self._stop_media(d)
        for client in list(self._closing):  # closes scheduled on the (now stopped) SIP thread
            self._closing.discard(client)
            try:
                client.stop()
            except OSError:
                pass
        self.s.close()
        self._wake_r.close()
        self._wake_w.close()

    # thread plumbing -------------------------------------------------------------
    def post(self, fn: Callable[[], None]) -> None:
        with self._cmd_lock:
            self._commands.append(fn)
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def call_later(self, delay: float, fn: Callable[[], object]) -> None:
        """Run `fn` on the SIP thread after `delay` seconds; what it returns is dropped."""
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), fn))

    def _loop(self) -> None:
        while self.NSD:
            timeout = 0.2
            if self._timers:
                timeout = max(0.0, min(timeout, self._timers[0][0] - time.monotonic()))
            try:
                ready, _, _ = select.select([self.s, self._wake_r], [], [], timeout)
            except (OSError, ValueError):
                break
            if self._wake_r in ready:
                try:
                    self._wake_r.recv(4096)
                except OSError:
                    pass
            if self.s in ready:
                for _ in range(64):
                    try:
                        raw, addr = self.s.recvfrom(65535)
                    except BlockingIOError:
                        break
                    except ConnectionRefusedError:
                        # ICMP port unreachable for something we sent: the PBX is not there.
                        self._on_icmp_refused()
                        continue
                    except OSError:
                        break
                    self._guard(lambda: self._handle(raw, addr))
            with self._cmd_lock:
                commands, self._commands = self._commands, []
            for cmd in commands:
                self._guard(cmd)
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                _, _, fn = heapq.heappop(self._timers)
                self._guard(fn)

    def _guard(self, fn: Callable[[], object]) -> None:
        try:
            with pv.preserved_warning_filters():
                fn()
        except Exception:
            log.exception("pbx.sip.internal_error")

    def _send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        try:
            self.s.send(data)
        except ConnectionRefusedError:
            self._on_icmp_refused()
        except OSError as exc:
            log.warning("pbx.sip.send_failed", error=str(exc))

    # registration -----------------------------------------------------------------
    def _send_register(self, challenge: Any = None, expires: int | None = None) -> None:
        if expires is not None:
            saved, self.default_expires = self.default_expires, expires
        try:
            msg = self.gen_register(challenge) if challenge is not None else self.gen_first_response()
        finally:
            if expires is not None:
                self.default_expires = saved
        call_id = re.search(r"Call-ID: (.+)\r\n", msg).group(1)  # type: ignore[union-attr]
        cseq = int(re.search(r"CSeq: (\d+) REGISTER", msg).group(1))  # type: ignore[union-attr]
        self._reg = {"call_id": call_id, "cseq": cseq, "msg": msg, "answered": False, "unregister": expires == 0}
        self._send(msg)
        if expires == 0:
            return
        self._retransmit(
            lambda: self._reg.get("cseq") == cseq and not self._reg.get("answered"),
            msg,
            on_timeout=lambda: self._register_failed(
                "PBX 无响应 / no answer from the PBX to REGISTER "
                f"(sip:{self.server}:{self.port}, {self.register_timeout:g} s)"
            ),
            total=self.register_timeout,
        )

    def _on_register_response(self, msg: Any, status: int) -> None:
        if int(msg.headers["CSeq"]["check"]) != self._reg.get("cseq"):
            return
        if status < 200:
            return
        self._reg["answered"] = True
        if self._reg.get("unregister"):
            return
        if status == 401 and self._reg.get("challenge") is None and self.password:
            self._send_register(challenge=msg)
            self._reg["challenge"] = True
            return
        if 200 <= status < 300:
            first = not self.registered
            self.registered, self.registration_error, self._reg_failures = True, None, 0
            if first:
                log.info("pbx.registered", server=f"{self.server}:{self.port}", user=self.username)
            self._on_registration(True, None)
            self._resolve_register(None)
            self.call_later(max(2.0, self._granted_expires(msg) * 0.8), self._send_register)
            return
        reason = msg.status.phrase if hasattr(msg.status, "phrase") else ""
        self._register_failed(f"PBX 拒绝注册 / the PBX refused REGISTER: {status} {reason}".strip())

    def _granted_expires(self, msg: Any) -> float:
        """What the registrar granted (our Contact's expires=, else Expires:), at most what we asked."""
        _, headers = _split_headers(getattr(msg, "raw", b"") or b"")
        mine = f"{self.myIP}:{self.myPort}"
        for contact in _all(headers, "contact"):
            m = re.search(r";\s*expires=(\d+)", contact)
            if mine in contact and m:
                return float(min(int(m.group(1)), self.default_expires))
        expires = _first(headers, "expires")
        if expires and expires.strip().isdigit():
            return float(min(int(expires.strip()), self.default_expires))
        return float(self.default_expires)

    def _register_failed(self, reason: str) -> None:
        self.registered = False
        self.registration_error = reason
        self._reg_failures += 1
        log.warning("pbx.register_failed", reason=reason, failures=self._reg_failures)
        self._on_registration(False, reason)
        self._resolve_register(reason)
        # keep trying in the background, capped jittered backoff
        delay = min(30.0, 2.0 ** min(self._reg_failures, 5)) * random.uniform(0.5, 1.0)
        self.call_later(delay, self._send_register)

    def _resolve_register(self, error: str | None) -> None:
        waiters, self._register_waiters = self._register_waiters, []
        for w in waiters:
            if not w.done():
                if error is None:
                    w.set_result(None)
                else:
                    w.set_exception(PbxUnavailable(error))

    def _on_icmp_refused(self) -> None:
        if not self._reg.get("answered") and not self.registered:
            self._reg["answered"] = True
            self._register_failed(
                f"PBX 不可达 / the PBX is unreachable: sip:{self.server}:{self.port} refused the connection"
            )

    # retransmission (RFC 3261 timers A/E, capped) -------------------------------------
    def _retransmit(self, still: Callable[[], bool], data: bytes | str, *, on_timeout: Callable[[], None] | None, total: float) -> None:
        start = time.monotonic()
        interval = [self.cfg.t1]

        def tick() -> None:
            if not still():
                return
            if time.monotonic() - start >= total:
                if on_timeout:
                    on_timeout()
                return
            self._send(data)
            interval[0] = min(interval[0] * 2, 4.0)
            self.call_later(min(interval[0], max(0.0, total - (time.monotonic() - start))), tick)

        self.call_later(min(self.cfg.t1, total), tick)

    # outbound calls ---------------------------------------------------------------------
    def invite_leg(self, leg: Leg) -> None:
        d = leg._d
        if not self.registered:
            raise PbxUnavailable(self.registration_error or "未注册到 PBX / not registered on the PBX")
        if not self._free_ports:
            raise LegSetupError("没有空闲的 RTP 端口 / no free RTP port")
        d.rtp_port = self._free_ports.pop()
        ms = {d.rtp_port: {0: pv.PayloadType.PCMU, 101: pv.PayloadType.EVENT}}
        d.branch = self.gen_branch()
        # pyVoIP annotates the payload numbers as str; its SDP writer formats whatever it is given.
        text = self.gen_invite(leg.target, str(random.randint(1, 2**31)), ms, pv.TransmitType.SENDRECV, d.branch, leg.call_id)  # type: ignore[arg-type]
        extra = "".join(f"{k}: {v}\r\n" for k, v in leg.headers.items() if re.fullmatch(r"[A-Za-z0-9-]+", k) and "\r" not in v and "\n" not in v)
        text = text.replace("\r\nContent-Type:", f"\r\n{extra}Content-Type:", 1)
        _, headers = _split_headers(text.encode())
        d.request_uri = text.split(" ", 2)[1]
        d.via = _first(headers, "via") or ""
        d.from_hdr = _first(headers, "from") or ""
        d.to_hdr = _first(headers, "to") or ""
        d.cseq = int((_first(headers, "cseq") or "1").split()[0])
        d.invite = text.encode()
        self._dialogs[leg.call_id] = d
        self._send(d.invite)
        log.info("pbx.leg.invite", leg=leg.id, role=leg.role, target=pv.mask(leg.target), call_id=leg.call_id)
        self._retransmit(lambda: not d.got_response and d.state is not LegState.ENDED, d.invite, on_timeout=None, total=leg.timeout)
        self.call_later(leg.timeout, lambda: self._ring_timeout(d))

    def _ring_timeout(self, d: _Dialog) -> None:
        if d.state in (LegState.CALLING, LegState.RINGING):
            if not d.got_response:
                self._end(d, LegCause.FAILED, None, "local", "no_response_from_pbx")
            else:
                self._send_cancel(d)
                self._end(d, no_answer(d.leg.role), None, "local", "ring_timeout")

    def hangup(self, leg: Leg, cause: LegCause | None, detail: str | None = None) -> None:
        d = leg._d
        if d.state is LegState.ENDED:
            return
        if d.state is LegState.ANSWERED:
            self._send_bye(d)
            self._end(d, cause or LegCause.COMPLETED, None, "local", detail)
        else:
            if d.got_response:
                self._send_cancel(d)
            self._end(d, cause or LegCause.FAILED, None, "local", detail or "cancelled")

    def _send_cancel(self, d: _Dialog) -> None:
        msg = (
            f"CANCEL {d.request_uri} SIP/2.0\r\nVia: {d.via}\r\nMax-Forwards: 70\r\n"
            f"From: {d.from_hdr}\r\nTo: {d.to_hdr}\r\nCall-ID: {d.leg.call_id}\r\n"
            f"CSeq: {d.cseq} CANCEL\r\nUser-Agent: dialgate\r\nContent-Length: 0\r\n\r\n"
        )
        d.pending["CANCEL"] = False
        self._send(msg)
        self._retransmit(lambda: d.pending.get("CANCEL") is False, msg, on_timeout=None, total=4.0)
        log.info("pbx.leg.cancel", leg=d.leg.id, role=d.leg.role)

    def _in_dialog(self, d: _Dialog, method: str, cseq: int, branch: str | None = None) -> str:
        route = "".join(f"Route: {r}\r\n" for r in d.route_set)
        to = d.to_hdr if ";tag=" in d.to_hdr else f"{d.to_hdr};tag={d.remote_tag}"
        return (
            f"{method} {d.remote_target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.myIP}:{self.myPort};branch={branch or self.gen_branch()};rport\r\n"
            f"{route}Max-Forwards: 70\r\nFrom: {d.from_hdr}\r\nTo: {to}\r\n"
            f"Call-ID: {d.leg.call_id}\r\nCSeq: {cseq} {method}\r\nUser-Agent: dialgate\r\nContent-Length: 0\r\n\r\n"
        )

    def _send_ack_2xx(self, d: _Dialog) -> None:
        self._send(self._in_dialog(d, "ACK", d.cseq))

    def _send_bye(self, d: _Dialog) -> None:
        msg = self._in_dialog(d, "BYE", d.cseq + 1)
        d.pending["BYE"] = False
        self._send(msg)
        self._retransmit(lambda: d.pending.get("BYE") is False, msg, on_timeout=None, total=4.0)

    def _send_ack_non2xx(self, d: _Dialog, to_value: str) -> None:
        self._send(
            f"ACK {d.request_uri} SIP/2.0\r\nVia: {d.via}\r\nMax-Forwards: 70\r\n"
            f"From: {d.from_hdr}\r\nTo: {to_value}\r\nCall-ID: {d.leg.call_id}\r\n"
            f"CSeq: {d.cseq} ACK\r\nContent-Length: 0\r\n\r\n"
        )

    def _authorize_invite(self, d: _Dialog, raw: bytes, status: int) -> bool:
        _, headers = _split_headers(raw)
        challenge = _first(headers, "www-authenticate" if status == 401 else "proxy-authenticate")
        if not challenge or not self.password or d.auth_tried:
            return False
        params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
        realm, nonce = params.get("realm", ""), params.get("nonce", "")
        uri = d.request_uri
        ha1 = hashlib.md5(f"{self.username}:{realm}:{self.password}".encode()).hexdigest()
        ha2 = hashlib.md5(f"INVITE:{uri}".encode()).hexdigest()
        resp = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
        name = "Authorization" if status == 401 else "Proxy-Authorization"
        auth = f'{name}: Digest username="{self.username}",realm="{realm}",nonce="{nonce}",uri="{uri}",response="{resp}",algorithm=MD5\r\n'
        d.auth_tried = True
        d.cseq += 1
        d.branch = self.gen_branch()
        text = d.invite.decode()
        text = re.sub(r"branch=[^;\r\n]+", f"branch={d.branch}", text, count=1)
        text = re.sub(r"CSeq: \d+ INVITE", f"CSeq: {d.cseq} INVITE", text, count=1)
        text = text.replace("\r\nContent-Type:", f"\r\n{auth}Content-Type:", 1)
        d.via = re.sub(r"branch=[^;\r\n]+", f"branch={d.branch}", d.via, count=1)
        d.invite = text.encode()
        d.got_response = False
        self._send(d.invite)
        self._retransmit(lambda: not d.got_response and d.state is not LegState.ENDED, d.invite, on_timeout=None, total=d.leg.timeout)
        return True

    # inbound ----------------------------------------------------------------------------
    def _handle(self, raw: bytes, addr: tuple[str, int]) -> None:
        if not raw.strip(b"\r\n\x00"):
            return  # keep-alive
        start = raw.split(b"\r\n", 1)[0].decode("utf-8", "replace")
        if start.startswith("SIP/2.0 "):
            try:
                msg = pv.SIPMessage(raw)
            except Exception as exc:
                log.warning("pbx.sip.unparsable_response", error=str(exc), start=pv.mask(start[:80]))
                return
            self._on_response(msg, raw)
        else:
            self._on_request(start.split(" ", 1)[0].upper(), raw, addr)

    def _reply(self, raw: bytes, addr: tuple[str, int], code: int, reason: str, *extra: str) -> None:
        try:
            self.s.sendto(build_response(raw, code, reason, to_tag=uuid.uuid4().hex[:10], extra=extra), addr)
        except OSError as exc:
            log.warning("pbx.sip.send_failed", error=str(exc))

    def _on_request(self, method: str, raw: bytes, addr: tuple[str, int]) -> None:
        _, headers = _split_headers(raw)
        call_id = _first(headers, "call-id") or ""
        d = self._dialogs.get(call_id)
        if method == "OPTIONS":
            self._reply(raw, addr, 200, "OK", f"Allow: {ALLOW}", "Accept: application/sdp")
        elif method == "ACK":
            return
        elif method == "BYE":
            if d is None:
                self._reply(raw, addr, 481, "Call/Transaction Does Not Exist")
                return
            self._reply(raw, addr, 200, "OK")
            if d.state is not LegState.ENDED:
                log.info("pbx.leg.remote_bye", leg=d.leg.id, role=d.leg.role)
                self._end(d, LegCause.COMPLETED if d.state is LegState.ANSWERED else LegCause.FAILED, None, "remote", "bye")
        elif method == "INVITE":
            if d is not None:
                self._reply(raw, addr, 488, "Not Acceptable Here")  # re-INVITE: keep the session as is
            else:
                self._reply(raw, addr, 486, "Busy Here", 'Warning: 399 dialgate "this account only originates calls"')
        elif method == "CANCEL":
            self._reply(raw, addr, 481, "Call/Transaction Does Not Exist")
        else:
            self._reply(raw, addr, 405, "Method Not Allowed", f"Allow: {ALLOW}")

    def _on_response(self, msg: Any, raw: bytes) -> None:
        status = int(msg.status)
        cseq = msg.headers.get("CSeq") or {}
        method = cseq.get("method", "")
        if method == "REGISTER":
            self._on_register_response(msg, status)
            return
        d = self._dialogs.get(msg.headers.get("Call-ID", ""))
        if d is None:
            return
        log.debug("pbx.sip.response", leg=d.leg.id, status=status, method=method)
        if method in ("CANCEL", "BYE"):
            if status >= 200:
                d.pending[method] = True
            return
        if method != "INVITE":
            return
        d.got_response = True
        if status < 200:
            d.got_provisional = True
            if status in (180, 183) and d.state is LegState.CALLING:
                d.state = LegState.RINGING
                self._emit(d, LegState.RINGING, None, status, None, None)
            return
        to_value = next((v for n, v in _split_headers(raw)[1] if n == "to"), d.to_hdr)
        if status >= 300:
            self._send_ack_non2xx(d, to_value)
            if status in (401, 407) and d.state is not LegState.ENDED and self._authorize_invite(d, raw, status):
                return
            if d.state is not LegState.ENDED:
                self._end(d, cause_for_status(status, d.leg.role), status, "remote", f"sip_{status}")
            return
        # 2xx
        d.remote_tag = _tag_of(to_value)
        _, headers = _split_headers(raw)
        contact = _first(headers, "contact")
        d.remote_target = _uri_of(contact) if contact else d.request_uri
        d.route_set = list(reversed(_all(headers, "record-route")))
        if d.state is LegState.ANSWERED:
            self._send_ack_2xx(d)  # a retransmitted 200
            return
        self._send_ack_2xx(d)
        if d.state is LegState.ENDED:
            # answered after we gave up (CANCEL crossed the 200): end that dialog too
            self._send_bye(d)
            return
        try:
            self._start_media(d, msg)
        except Exception as exc:
            log.warning("pbx.leg.media_failed", leg=d.leg.id, error=str(exc))
            d.state = LegState.ANSWERED
            self._send_bye(d)
            self._end(d, LegCause.FAILED, status, "local", f"media: {exc}")
            return
        d.state = LegState.ANSWERED
        log.info("pbx.leg.answered", leg=d.leg.id, role=d.leg.role)
        self._emit(d, LegState.ANSWERED, None, status, None, None)

    def _start_media(self, d: _Dialog, msg: Any) -> None:
        body = msg.body or {}
        conns, medias = body.get("c") or [], [m for m in body.get("m") or [] if m.get("type") == "audio"]
        if not conns or not medias:
            raise ValueError("no audio in the answer's SDP")
        if "0" not in medias[0]["methods"]:
            raise ValueError("the far end did not accept PCMU")
        assoc = {0: pv.PayloadType.PCMU}
        if "101" in medias[0]["methods"]:
            assoc[101] = pv.PayloadType.EVENT
        assert d.rtp_port is not None  # taken from the free ports before the INVITE went out
        client = pv.RTPClient(assoc, self.myIP, d.rtp_port, conns[0]["address"], medias[0]["port"], pv.TransmitType.SENDRECV)
        # pyVoIP declares its packet managers; it only calls read and write on them.
        client.pmin = d.leg.rx  # type: ignore[assignment]
        client.pmout = d.leg.tx  # type: ignore[assignment]
        client.start()
        # pyVoIP's receiver polls a non-blocking socket and sleeps 10 ms when it is empty:
        # up to 10 ms added to every relayed frame and 100 wake-ups/s per leg. A blocking
        # socket with a timeout delivers each packet at once; its loop still sees stop()
        # (a timeout is an OSError it already swallows).
        client.sin.settimeout(0.2)
        d.rtp = client

    def _stop_media(self, d: _Dialog) -> None:
        client, port = d.rtp, d.rtp_port
        d.rtp = d.rtp_port = None
        if client is None:
            if port is not None:
                self._free_ports.insert(0, port)
            return
        # pyVoIP's stop() closes the socket under its transmitter, which may be between
        # read() and sendto() ("RTP Packet failed to send!"). Stop the loops first, wake
        # the transmitter, close a frame later, then give the port back.
        client.NSD = False
        d.leg.tx.set_follow(0.0)
        self._closing.add(client)

        def close() -> None:
            if client not in self._closing:
                return
            self._closing.discard(client)
            try:
                client.stop()
            except OSError:
                pass
            if port is not None:
                self._free_ports.insert(0, port)

        if self.NSD:
            self.call_later(0.2, close)
        else:
            close()

    def _end(self, d: _Dialog, cause: LegCause, status: int | None, by: str, detail: str | None) -> None:
        d.state = LegState.ENDED
        self._stop_media(d)
        log.info("pbx.leg.ended", leg=d.leg.id, role=d.leg.role, cause=str(cause), status=status, by=by, detail=detail)
        self._emit(d, LegState.ENDED, cause, status, by, detail)
        # keep the dialog a while to absorb late responses and retransmissions
        self.call_later(32.0, lambda: self._dialogs.pop(d.leg.call_id, None))

    def _emit(self, d: _Dialog, state: LegState, cause: LegCause | None, status: int | None, by: str | None, detail: str | None) -> None:
        leg = d.leg
        try:
            leg._loop.call_soon_threadsafe(leg._apply, state, cause, status, by, detail)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            pass

    def active_legs(self) -> int:
        return sum(1 for d in self._dialogs.values() if d.state is not LegState.ENDED)


# --- the asyncio face -----------------------------------------------------------------------


class SipUserAgent:
    """Registers on the PBX and places legs. `async with SipUserAgent(cfg) as ua: ...`"""

    def __init__(self, config: SipUaConfig) -> None:
        self.config = config
        self._client: PyVoIPSipClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.state = "stopped"
        self.last_error: str | None = None

    async def __aenter__(self) -> "SipUserAgent":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def registered(self) -> bool:
        return self._client is not None and self._client.registered

    @property
    def local_port(self) -> int:
        return self._client.myPort if self._client else self.config.local_port

    def health(self) -> dict[str, Any]:
        return {
            "state": "registered" if self.registered else self.state,
            "server": f"{self.config.server}:{self.config.port}",
            "error": None if self.registered else self.last_error,
            "active_legs": self._client.active_legs() if self._client else 0,
        }

    def _on_registration(self, ok: bool, error: str | None) -> None:
        self.last_error = error
        self.state = "registered" if ok else "unregistered"

    async def start(self) -> None:
        """Register; raises `PbxUnavailable` within `register_timeout` (+1 s) when the PBX
        does not accept us, leaving nothing running."""
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        client = await asyncio.to_thread(PyVoIPSipClient, cfg, self._on_registration)
        self.state = "registering"
        try:
            fut = await asyncio.to_thread(client.start)
            await asyncio.wait_for(asyncio.wrap_future(fut), cfg.register_timeout + 1.0)
        except (PbxUnavailable, asyncio.TimeoutError) as exc:
            reason = exc.reason if isinstance(exc, PbxUnavailable) else (
                f"PBX 注册超时 / registration on sip:{cfg.server}:{cfg.port} timed out"
            )
            self.state, self.last_error = "failed", reason
            if client.NSD:
                await asyncio.to_thread(client.stop)
            raise PbxUnavailable(reason, server=f"{cfg.server}:{cfg.port}") from None
        self._client = client
        self.state = "registered"

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.stop)
        self.state = "stopped"

    async def _post(self, fn: Callable[[PyVoIPSipClient], None]) -> None:
        client = self._client
        if client is None:
            raise PbxUnavailable("SIP 用户代理未启动 / the SIP user agent is not started")
        fut: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            try:
                fn(client)
            except BaseException as exc:  # handed to the awaiting coroutine
                fut.set_exception(exc)
            else:
                fut.set_result(None)

        client.post(run)
        await asyncio.wait_for(asyncio.wrap_future(fut), 5.0)

    async def place_call(
        self, target: str, timeout: float, *, role: str = "callee", headers: Mapping[str, str] | None = None
    ) -> Leg:
        """Send an INVITE to `target` (an extension or number the PBX routes) and return the
        leg at once. It rings for at most `timeout` seconds, then is cancelled."""
        if not re.fullmatch(r"\+?[0-9A-Za-z*#._-]{1,64}", target or ""):
            raise ValueError(f"invalid call target {target!r}: digits, letters, + * # . _ - only")
        if timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        leg = Leg(self, target, role, timeout, headers or {})
        await self._post(lambda c: c.invite_leg(leg))
        return leg
