"""REGISTER for `PyVoIPSipClient`: sending, digest challenges, the granted expiry, and
failures that make the PBX unavailable."""

from __future__ import annotations

import concurrent.futures
import random
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from adapters.pbx.errors import PbxUnavailable
from adapters.pbx.sip_messages import all_headers, first_header, split_headers


log = structlog.get_logger("adapters.pbx.sip_ua")


class SipRegistration:
    """The registration steps of `PyVoIPSipClient`, run on its SIP thread."""

    if TYPE_CHECKING:
        # What the client this is mixed into (pyVoIP's SIPClient and PyVoIPSipClient) has.
        server: str
        port: int
        username: str
        password: str
        myIP: str
        myPort: int
        default_expires: int
        register_timeout: int  # as pyVoIP declares it; the client stores seconds as a float
        registered: bool
        registration_error: str | None
        _reg: dict[str, Any]
        _reg_failures: int
        _register_waiters: list[concurrent.futures.Future[None]]
        _on_registration: Callable[[bool, str | None], None]

        def gen_register(self, request: Any, deregister: bool = False) -> str: ...
        def gen_first_response(self, deregister: bool = False) -> str: ...
        def _send(self, data: bytes | str) -> None: ...
        def _retransmit(
            self, still: Callable[[], bool], data: bytes | str, *, on_timeout: Callable[[], None] | None, total: float
        ) -> None: ...
        def call_later(self, delay: float, fn: Callable[[], object]) -> None: ...

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
        _, headers = split_headers(getattr(msg, "raw", b"") or b"")
        mine = f"{self.myIP}:{self.myPort}"
        for contact in all_headers(headers, "contact"):
            m = re.search(r";\s*expires=(\d+)", contact)
            if mine in contact and m:
                return float(min(int(m.group(1)), self.default_expires))
        expires = first_header(headers, "expires")
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
