"""A call leg of the service's SIP user agent: its states, the cause it ends with, and
the dialog the SIP thread keeps for it."""

from __future__ import annotations

import asyncio
import enum
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

import structlog

from adapters.pbx.audio import FRAME_BYTES, RxBuffer, TxBuffer
from dialer.masking import mask_sip_text


if TYPE_CHECKING:
    from adapters.pbx.sip_ua import SipUserAgent

log = structlog.get_logger("adapters.pbx.sip_ua")


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
        self._d = Dialog(self)

    def __repr__(self) -> str:
        return f"<Leg {self.role} {mask_sip_text(self.target)} {self.state} {self.cause}>"

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
class Dialog:
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
