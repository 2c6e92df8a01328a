"""Click-to-dial: call the agent, decide again, call the debtor, bridge, record.

State machine of one attempt (every transition reported with its timestamp):

    originating → agent_ringing → agent_answered → callee_ringing → connected → ended
         └──────────────┴───────────────┴────────────────┴──────────────┴──→ ended

End causes: agent_no_answer, callee_no_answer, busy, declined, blocked, failed,
completed. The debtor is never dialled unless the agent answered AND the decision
taken again at that moment still allows the call (a stop may have arrived while the
agent's phone rang: a complaint flag, the window closing). A ringing state is reported
when the PBX says the phone rings (180/183); a leg answered without ringing passes
through the ringing state at the answer time, so the sequence is always complete.

Ports this module defines for the service (which persists the progress):

    ProgressSink   async callable(Progress) — called after every transition, in order
    Redecide       async callable(OriginateRequest) -> Recheck
    SinkFactory    async callable(OriginateRequest) -> RecordingSink | None
"""

from __future__ import annotations

import asyncio
import enum
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Awaitable, Callable, Mapping, Protocol

import structlog

from adapters.pbx.bridge import Bridge, BridgeLimiter, BridgeSlot, RecordingSink
from adapters.pbx.errors import PbxUnavailable
from adapters.pbx.sip_ua import Leg, LegCause, LegState

log = structlog.get_logger("adapters.pbx.originate")


class AttemptState(enum.StrEnum):
    ORIGINATING = "originating"
    AGENT_RINGING = "agent_ringing"
    AGENT_ANSWERED = "agent_answered"
    CALLEE_RINGING = "callee_ringing"
    CONNECTED = "connected"
    ENDED = "ended"


class EndCause(enum.StrEnum):
    AGENT_NO_ANSWER = "agent_no_answer"
    CALLEE_NO_ANSWER = "callee_no_answer"
    BUSY = "busy"
    DECLINED = "declined"
    BLOCKED = "blocked"
    FAILED = "failed"
    COMPLETED = "completed"


@dataclass(frozen=True)
class Recheck:
    """The second decision, taken when the agent has answered."""

    allowed: bool
    rule_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class OriginateRequest:
    attempt_id: str
    agent_extension: str
    callee_number: str
    case_id: str | None = None
    agent_id: str | None = None
    # extra SIP headers on the debtor leg, e.g. X-DialGate-Attempt for the SIP gate
    callee_headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Progress:
    attempt_id: str
    state: AttemptState
    at: datetime
    cause: EndCause | None = None
    rule_id: str | None = None
    detail: str | None = None
    recording_id: str | None = None
    callee_dialled: bool = False  # on `ended`: was the debtor's phone ever dialled?


@dataclass
class OriginateResult:
    attempt_id: str
    state: AttemptState = AttemptState.ORIGINATING
    cause: EndCause | None = None
    rule_id: str | None = None
    detail: str | None = None
    recording_id: str | None = None
    callee_dialled: bool = False
    timestamps: dict[str, datetime] = field(default_factory=dict)


ProgressSink = Callable[[Progress], Awaitable[None]]
Redecide = Callable[[OriginateRequest], Awaitable[Recheck]]
SinkFactory = Callable[[OriginateRequest], Awaitable[RecordingSink | None]]


class UserAgent(Protocol):
    """What the originator needs from a SIP user agent (`SipUserAgent` or a fake)."""

    @property
    def registered(self) -> bool: ...

    async def place_call(self, target: str, timeout: float, *, role: str = ..., headers: Mapping[str, str] | None = ...) -> Leg: ...


# Ringback the agent hears while the debtor's phone rings (China: 450 Hz, 1 s on, 4 s
# off), 8-bit unsigned like everything on pyVoIP's side.
_RINGBACK_ON = bytes(int(128 + 40 * math.sin(2 * math.pi * 450 * i / 8000)) for i in range(8000))


async def _ringback(agent: Leg) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    frame_no = 0
    while not agent.ended:
        position = frame_no % 250  # 5 s cycle of 20 ms frames
        if position < 50:
            agent.write_audio(_RINGBACK_ON[position * 160 : position * 160 + 160])
        frame_no += 1
        await asyncio.sleep(max(0.0, start + frame_no * 0.02 - loop.time()))


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


_LEG_CAUSE = {
    LegCause.AGENT_NO_ANSWER: EndCause.AGENT_NO_ANSWER,
    LegCause.CALLEE_NO_ANSWER: EndCause.CALLEE_NO_ANSWER,
    LegCause.BUSY: EndCause.BUSY,
    LegCause.DECLINED: EndCause.DECLINED,
    LegCause.FAILED: EndCause.FAILED,
    LegCause.COMPLETED: EndCause.COMPLETED,
}


class Originator:
    def __init__(
        self,
        ua: UserAgent,
        limiter: BridgeLimiter,
        *,
        agent_ring_timeout: float = 30.0,
        callee_ring_timeout: float = 45.0,
        redecide_timeout: float = 5.0,
        max_call_duration: float = 4 * 3600,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.ua = ua
        self.limiter = limiter
        self.agent_ring_timeout = agent_ring_timeout
        self.callee_ring_timeout = callee_ring_timeout
        self.redecide_timeout = redecide_timeout
        self.max_call_duration = max_call_duration
        self.clock = clock

    def reserve(self) -> BridgeSlot:
        """Take a call slot now, before the API answers 201: raises `PbxUnavailable` when
        not registered, `CapacityExceeded` when every slot is busy (→ 503)."""
        if not self.ua.registered:
            raise PbxUnavailable("未注册到 PBX，无法外呼 / not registered on the PBX: click-to-dial is unavailable")
        return self.limiter.acquire()

    async def run(
        self,
        slot: BridgeSlot,
        req: OriginateRequest,
        *,
        redecide: Redecide,
        report: ProgressSink,
        sink_factory: SinkFactory | None = None,
    ) -> OriginateResult:
        """Run one attempt to its end. Never raises for call outcomes; the slot is released."""
        res = OriginateResult(attempt_id=req.attempt_id)
        reported: set[AttemptState] = set()
        order = asyncio.Lock()  # progress reaches the sink one at a time, in order

        async def to(state: AttemptState, **kw: object) -> None:
            async with order:
                if state in reported or AttemptState.ENDED in reported:
                    return
                reported.add(state)
                at = self.clock()
                res.state = state
                res.timestamps[state.value] = at
                try:
                    await report(Progress(req.attempt_id, state, at, **kw))  # type: ignore[arg-type]
                except Exception:
                    log.exception("pbx.originate.report_failed", attempt_id=req.attempt_id, state=str(state))

        async def end(cause: EndCause, *, rule_id: str | None = None, detail: str | None = None) -> OriginateResult:
            res.cause, res.rule_id, res.detail = cause, rule_id, detail
            await to(AttemptState.ENDED, cause=cause, rule_id=rule_id, detail=detail, recording_id=res.recording_id,
                     callee_dialled=res.callee_dialled)
            log.info(
                "pbx.originate.ended", attempt_id=req.attempt_id, cause=str(cause), rule_id=rule_id, detail=detail,
                callee_dialled=res.callee_dialled, recording_id=res.recording_id,
            )
            return res

        def report_ringing(leg: Leg, state: AttemptState) -> None:
            def on_change(changed: Leg) -> None:
                if changed.state is LegState.RINGING:
                    asyncio.ensure_future(to(state))

            leg.on_change(on_change)
            if leg.state is LegState.RINGING:  # the 180 may have come before we listened
                asyncio.ensure_future(to(state))

        agent: Leg | None = None
        callee: Leg | None = None
        try:
            await to(AttemptState.ORIGINATING)
            # 1. the agent's own phone
            try:
                agent = await self.ua.place_call(
                    req.agent_extension, self.agent_ring_timeout, role="agent",
                    headers={"X-DialGate-Attempt": req.attempt_id},
                )
            except (PbxUnavailable, ValueError, OSError) as exc:
                return await end(EndCause.FAILED, detail=f"agent leg: {getattr(exc, 'reason', exc)}")
            report_ringing(agent, AttemptState.AGENT_RINGING)
            if not await agent.wait_answered():
                return await end(_LEG_CAUSE[agent.cause or LegCause.FAILED], detail=f"agent leg: {agent.detail}")
            await to(AttemptState.AGENT_RINGING)
            await to(AttemptState.AGENT_ANSWERED)

            # 2. decide again: the world may have changed while the agent's phone rang
            try:
                recheck = await asyncio.wait_for(redecide(req), self.redecide_timeout)
            except Exception as exc:  # could not decide → fail closed
                recheck = Recheck(False, "system.redecide_failed", f"{type(exc).__name__}: {exc}")
            if agent.ended:
                return await end(EndCause.FAILED, detail="agent hung up before the debtor was dialled")
            if not recheck.allowed:
                await agent.hangup(LegCause.COMPLETED)
                return await end(EndCause.BLOCKED, rule_id=recheck.rule_id, detail=recheck.reason)

            # 3. the debtor, through the PBX (and its SIP gate)
            try:
                callee = await self.ua.place_call(
                    req.callee_number, self.callee_ring_timeout, role="callee",
                    headers={"X-DialGate-Attempt": req.attempt_id, **dict(req.callee_headers)},
                )
            except (PbxUnavailable, ValueError, OSError) as exc:
                await agent.hangup(LegCause.COMPLETED)
                return await end(EndCause.FAILED, detail=f"callee leg: {getattr(exc, 'reason', exc)}")
            res.callee_dialled = True
            report_ringing(callee, AttemptState.CALLEE_RINGING)
            answered = asyncio.ensure_future(callee.wait_answered())
            agent_gone = asyncio.ensure_future(agent.wait_ended())
            ringback = asyncio.ensure_future(_ringback(agent))  # the agent hears the debtor ring
            try:
                await asyncio.wait([answered, agent_gone], return_when=asyncio.FIRST_COMPLETED)
            finally:
                ringback.cancel()
            if agent_gone.done() and not answered.done():
                answered.cancel()
                await callee.hangup(LegCause.FAILED)
                return await end(EndCause.FAILED, detail="agent hung up while the debtor's phone rang")
            agent_gone.cancel()
            if not answered.result():
                await agent.hangup(LegCause.COMPLETED)
                return await end(_LEG_CAUSE[callee.cause or LegCause.FAILED], detail=f"callee leg: {callee.detail}")
            await to(AttemptState.CALLEE_RINGING)
            if agent.ended:  # the agent may hang up while the debtor rings
                await callee.hangup(LegCause.COMPLETED)  # type: ignore[unreachable]  # mypy keeps the step-2 check across the awaits
                return await end(EndCause.FAILED, detail="agent hung up as the debtor answered")

            # 4. connected: bridge and record
            sink = await sink_factory(req) if sink_factory else None
            await to(AttemptState.CONNECTED)
            result = await Bridge(agent, callee, sink, max_duration=self.max_call_duration).run()
            res.recording_id = result.recording_id
            if result.recording_error:
                return await end(EndCause.FAILED, detail=result.recording_error)
            return await end(EndCause.COMPLETED, detail=f"ended by {result.ended_by}")
        except asyncio.CancelledError:
            for leg in (agent, callee):
                if leg is not None and not leg.ended:
                    await asyncio.shield(leg.hangup(LegCause.FAILED))
            await asyncio.shield(end(EndCause.FAILED, detail="cancelled (service stopping)"))
            raise
        except Exception as exc:
            log.exception("pbx.originate.crashed", attempt_id=req.attempt_id)
            for leg in (agent, callee):
                if leg is not None and not leg.ended:
                    try:
                        await leg.hangup(LegCause.FAILED)
                    except Exception:
                        pass
            return await end(EndCause.FAILED, detail=f"internal error: {type(exc).__name__}")
        finally:
            slot.release()


__all__ = [
    "AttemptState",
    "EndCause",
    "OriginateRequest",
    "OriginateResult",
    "Originator",
    "Progress",
    "ProgressSink",
    "Recheck",
    "Redecide",
    "SinkFactory",
    "UserAgent",
]
