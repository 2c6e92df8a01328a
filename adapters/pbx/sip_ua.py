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
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from adapters.pbx.errors import PbxUnavailable
from adapters.pbx.legs import Leg, LegCause, LegState, cause_for_status, no_answer
from adapters.pbx.sip_client import PyVoIPSipClient
from adapters.pbx.sip_messages import build_response


__all__ = [
    "Leg", "LegCause", "LegState", "PyVoIPSipClient", "SipUaConfig", "SipUserAgent", "build_response",
    "cause_for_status", "no_answer",
]


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
