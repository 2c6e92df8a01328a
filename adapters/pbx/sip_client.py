"""`PyVoIPSipClient`: pyVoIP's SIP client with a single-threaded, non-blocking
transaction layer: one thread receives, runs timers and executes posted commands."""

from __future__ import annotations

import concurrent.futures
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
from typing import TYPE_CHECKING, Any, Callable

import structlog

from adapters.pbx import _pyvoip as pv
from adapters.pbx.errors import LegSetupError, PbxUnavailable
from adapters.pbx.legs import Dialog, Leg, LegCause, LegState, cause_for_status, no_answer
from adapters.pbx.sip_messages import ALLOW, all_headers, build_response, first_header, split_headers, tag_of, uri_of
from adapters.pbx.sip_registration import SipRegistration
from dialer.masking import mask_sip_text


if TYPE_CHECKING:
    from adapters.pbx.sip_ua import SipUaConfig

log = structlog.get_logger("adapters.pbx.sip_ua")


# --- the SIP client ---------------------------------------------------------------------


class _PhoneShim:
    """pyVoIP's SIPClient expects a phone to write a status into; we keep our own."""

    _status = pv.PhoneStatus.INACTIVE


class PyVoIPSipClient(SipRegistration, pv.SIPClient):
    """pyVoIP's SIPClient with a single-threaded, non-blocking transaction layer."""

    def __init__(self, config: SipUaConfig, on_registration: Callable[[bool, str | None], None]):
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
        self._dialogs: dict[str, Dialog] = {}
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
        text = self.gen_invite(leg.target, str(random.randint(1, 2**31)), ms, pv.TransmitType.SENDRECV, d.branch, leg.call_id)  # type: ignore[arg-type]
        extra = "".join(f"{k}: {v}\r\n" for k, v in leg.headers.items() if re.fullmatch(r"[A-Za-z0-9-]+", k) and "\r" not in v and "\n" not in v)
        text = text.replace("\r\nContent-Type:", f"\r\n{extra}Content-Type:", 1)
        _, headers = split_headers(text.encode())
        d.request_uri = text.split(" ", 2)[1]
        d.via = first_header(headers, "via") or ""
        d.from_hdr = first_header(headers, "from") or ""
        d.to_hdr = first_header(headers, "to") or ""
        d.cseq = int((first_header(headers, "cseq") or "1").split()[0])
        d.invite = text.encode()
        self._dialogs[leg.call_id] = d
        self._send(d.invite)
        log.info("pbx.leg.invite", leg=leg.id, role=leg.role, target=mask_sip_text(leg.target), call_id=leg.call_id)
        self._retransmit(lambda: not d.got_response and d.state is not LegState.ENDED, d.invite, on_timeout=None, total=leg.timeout)
        self.call_later(leg.timeout, lambda: self._ring_timeout(d))

    def _ring_timeout(self, d: Dialog) -> None:
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

    def _send_cancel(self, d: Dialog) -> None:
        msg = (
            f"CANCEL {d.request_uri} SIP/2.0\r\nVia: {d.via}\r\nMax-Forwards: 70\r\n"
            f"From: {d.from_hdr}\r\nTo: {d.to_hdr}\r\nCall-ID: {d.leg.call_id}\r\n"
            f"CSeq: {d.cseq} CANCEL\r\nUser-Agent: dialgate\r\nContent-Length: 0\r\n\r\n"
        )
        d.pending["CANCEL"] = False
        self._send(msg)
        self._retransmit(lambda: d.pending.get("CANCEL") is False, msg, on_timeout=None, total=4.0)
        log.info("pbx.leg.cancel", leg=d.leg.id, role=d.leg.role)

    def _in_dialog(self, d: Dialog, method: str, cseq: int, branch: str | None = None) -> str:
        route = "".join(f"Route: {r}\r\n" for r in d.route_set)
        to = d.to_hdr if ";tag=" in d.to_hdr else f"{d.to_hdr};tag={d.remote_tag}"
        return (
            f"{method} {d.remote_target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.myIP}:{self.myPort};branch={branch or self.gen_branch()};rport\r\n"
            f"{route}Max-Forwards: 70\r\nFrom: {d.from_hdr}\r\nTo: {to}\r\n"
            f"Call-ID: {d.leg.call_id}\r\nCSeq: {cseq} {method}\r\nUser-Agent: dialgate\r\nContent-Length: 0\r\n\r\n"
        )

    def _send_ack_2xx(self, d: Dialog) -> None:
        self._send(self._in_dialog(d, "ACK", d.cseq))

    def _send_bye(self, d: Dialog) -> None:
        msg = self._in_dialog(d, "BYE", d.cseq + 1)
        d.pending["BYE"] = False
        self._send(msg)
        self._retransmit(lambda: d.pending.get("BYE") is False, msg, on_timeout=None, total=4.0)

    def _send_ack_non2xx(self, d: Dialog, to_value: str) -> None:
        self._send(
            f"ACK {d.request_uri} SIP/2.0\r\nVia: {d.via}\r\nMax-Forwards: 70\r\n"
            f"From: {d.from_hdr}\r\nTo: {to_value}\r\nCall-ID: {d.leg.call_id}\r\n"
            f"CSeq: {d.cseq} ACK\r\nContent-Length: 0\r\n\r\n"
        )

    def _authorize_invite(self, d: Dialog, raw: bytes, status: int) -> bool:
        _, headers = split_headers(raw)
        challenge = first_header(headers, "www-authenticate" if status == 401 else "proxy-authenticate")
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
                log.warning("pbx.sip.unparsable_response", error=str(exc), start=mask_sip_text(start[:80]))
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
        _, headers = split_headers(raw)
        call_id = first_header(headers, "call-id") or ""
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
        to_value = next((v for n, v in split_headers(raw)[1] if n == "to"), d.to_hdr)
        if status >= 300:
            self._send_ack_non2xx(d, to_value)
            if status in (401, 407) and d.state is not LegState.ENDED and self._authorize_invite(d, raw, status):
                return
            if d.state is not LegState.ENDED:
                self._end(d, cause_for_status(status, d.leg.role), status, "remote", f"sip_{status}")
            return
        # 2xx
        d.remote_tag = tag_of(to_value)
        _, headers = split_headers(raw)
        contact = first_header(headers, "contact")
        d.remote_target = uri_of(contact) if contact else d.request_uri
        d.route_set = list(reversed(all_headers(headers, "record-route")))
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

    def _start_media(self, d: Dialog, msg: Any) -> None:
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
        client.pmin = d.leg.rx  # type: ignore[assignment]
        client.pmout = d.leg.tx  # type: ignore[assignment]
        client.start()
        # pyVoIP's receiver polls a non-blocking socket and sleeps 10 ms when it is empty:
        # up to 10 ms added to every relayed frame and 100 wake-ups/s per leg. A blocking
        # socket with a timeout delivers each packet at once; its loop still sees stop()
        # (a timeout is an OSError it already swallows).
        client.sin.settimeout(0.2)
        d.rtp = client

    def _stop_media(self, d: Dialog) -> None:
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

    def _end(self, d: Dialog, cause: LegCause, status: int | None, by: str, detail: str | None) -> None:
        d.state = LegState.ENDED
        self._stop_media(d)
        log.info("pbx.leg.ended", leg=d.leg.id, role=d.leg.role, cause=str(cause), status=status, by=by, detail=detail)
        self._emit(d, LegState.ENDED, cause, status, by, detail)
        # keep the dialog a while to absorb late responses and retransmissions
        self.call_later(32.0, lambda: self._dialogs.pop(d.leg.call_id, None))

    def _emit(self, d: Dialog, state: LegState, cause: LegCause | None, status: int | None, by: str | None, detail: str | None) -> None:
        leg = d.leg
        try:
            leg._loop.call_soon_threadsafe(leg._apply, state, cause, status, by, detail)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            pass

    def active_legs(self) -> int:
        return sum(1 for d in self._dialogs.values() if d.state is not LegState.ENDED)
