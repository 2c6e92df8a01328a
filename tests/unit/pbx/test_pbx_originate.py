"""The click-to-dial state machine and the bridge, with an in-memory user agent."""

from __future__ import annotations

import asyncio
import struct
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from pbx_fake_ua import FakeLeg, FakeUserAgent, answers, refuses, rings_forever  # noqa: E402

from adapters.pbx.bridge import Bridge, BridgeLimiter  # noqa: E402
from adapters.pbx.errors import CapacityExceeded, PbxUnavailable  # noqa: E402
from adapters.pbx.originate import EndCause, Originator, OriginateRequest, Progress, Recheck  # noqa: E402
from adapters.pbx.sip_ua import LegCause  # noqa: E402

REQ = OriginateRequest(attempt_id="a-1", agent_extension="1001", callee_number="13800000001", case_id="C-9")


class StepClock:
    def __init__(self) -> None:
        self.t = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        self.t += timedelta(seconds=1)
        return self.t


class Journal:
    def __init__(self) -> None:
        self.rows: list[Progress] = []

    async def __call__(self, p: Progress) -> None:
        self.rows.append(p)

    @property
    def states(self) -> list[str]:
        return [str(r.state) for r in self.rows]


class MemorySink:
    def __init__(self, fail_on_write: int | None = None) -> None:
        self.chunks: list[bytes] = []
        self.final_header: bytes | None = None
        self.aborted: str | None = None
        self.fail_on_write = fail_on_write

    async def write(self, chunk: bytes) -> None:
        if self.fail_on_write is not None and len(self.chunks) >= self.fail_on_write:
            raise OSError("vault unreachable")
        self.chunks.append(chunk)

    async def seal(self, *, final_header: bytes, duration: float) -> str:
        self.final_header = final_header
        return "rec-1"

    async def abort(self, reason: str) -> None:
        self.aborted = reason

    @property
    def audio(self) -> bytes:
        return b"".join(self.chunks)[44:]


async def until(condition, timeout: float = 2.0) -> None:  # noqa: ANN001
    """Wait for a condition another task or thread makes true (fails after `timeout`)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def bridged(*legs: FakeLeg) -> bool:
    return all(leg.rx._tap is not None for leg in legs)


async def allow(_r: OriginateRequest) -> Recheck:
    return Recheck(True)


def originator(ua: FakeUserAgent, slots: int = 2, **kw: object) -> Originator:
    return Originator(ua, BridgeLimiter(slots), clock=StepClock(), **kw)  # type: ignore[arg-type]


async def test_agent_not_answering_ends_agent_no_answer_and_never_dials_the_debtor() -> None:
    ua = FakeUserAgent({"agent": refuses(LegCause.AGENT_NO_ANSWER), "callee": answers})
    o, journal = originator(ua), Journal()
    res = await o.run(o.reserve(), REQ, redecide=allow, report=journal)
    assert res.cause is EndCause.AGENT_NO_ANSWER and not res.callee_dialled
    assert ua.dialled("callee") == []
    assert journal.states == ["originating", "agent_ringing", "ended"]
    assert o.limiter.in_use == 0


@pytest.mark.parametrize(("cause", "expected"), [(LegCause.BUSY, EndCause.BUSY), (LegCause.DECLINED, EndCause.DECLINED), (LegCause.CALLEE_NO_ANSWER, EndCause.CALLEE_NO_ANSWER), (LegCause.FAILED, EndCause.FAILED)])
async def test_debtor_refusing_ends_with_its_cause_and_the_agent_is_hung_up(cause: LegCause, expected: EndCause) -> None:
    ua = FakeUserAgent({"agent": answers, "callee": refuses(cause)})
    o, journal = originator(ua), Journal()
    res = await o.run(o.reserve(), REQ, redecide=allow, report=journal)
    assert res.cause is expected and res.callee_dialled
    agent = ua.dialled("agent")[0]
    assert agent.ended and agent.hangup_by == "local"
    assert journal.states == ["originating", "agent_ringing", "agent_answered", "callee_ringing", "ended"]


async def test_blocked_on_the_second_decision_hangs_up_the_agent_and_never_dials_the_debtor() -> None:
    ua = FakeUserAgent({"agent": answers, "callee": answers})

    async def blocked(_r: OriginateRequest) -> Recheck:
        return Recheck(False, "window.closed", "超出拨打时段 / outside calling hours")

    o, journal = originator(ua), Journal()
    res = await o.run(o.reserve(), REQ, redecide=blocked, report=journal)
    assert (res.cause, res.rule_id) == (EndCause.BLOCKED, "window.closed")
    assert journal.rows[-1].rule_id == "window.closed" and journal.rows[-1].detail == "超出拨打时段 / outside calling hours"
    assert ua.dialled("callee") == [] and ua.dialled("agent")[0].ended


async def test_a_second_decision_that_errors_or_times_out_fails_closed_as_blocked() -> None:
    async def broken(_r: OriginateRequest) -> Recheck:
        raise RuntimeError("store down")

    async def slow(_r: OriginateRequest) -> Recheck:
        await asyncio.sleep(10)
        return Recheck(True)

    for redecide in (broken, slow):
        ua = FakeUserAgent({"agent": answers, "callee": answers})
        o = originator(ua, redecide_timeout=0.05)
        res = await o.run(o.reserve(), REQ, redecide=redecide, report=Journal())
        assert (res.cause, res.rule_id) == (EndCause.BLOCKED, "system.redecide_failed")
        assert ua.dialled("callee") == []


async def test_agent_hanging_up_while_the_debtor_rings_cancels_the_debtor_leg() -> None:
    agent_leg: list[FakeLeg] = []

    async def agent_script(leg: FakeLeg) -> None:
        agent_leg.append(leg)
        await answers(leg)

    async def callee_script(leg: FakeLeg) -> None:
        leg.ring()
        await asyncio.sleep(0)
        agent_leg[0].end(LegCause.COMPLETED)

    ua = FakeUserAgent({"agent": agent_script, "callee": callee_script})
    o = originator(ua)
    res = await asyncio.wait_for(o.run(o.reserve(), REQ, redecide=allow, report=Journal()), 2)
    assert res.cause is EndCause.FAILED and "rang" in (res.detail or "")
    callee = ua.dialled("callee")[0]
    assert callee.ended and callee.hangup_by == "local"


async def test_connected_call_bridges_both_ways_records_agent_left_debtor_right_and_completes() -> None:
    ua = FakeUserAgent({"agent": answers, "callee": answers})
    o, journal, sink = originator(ua), Journal(), MemorySink()

    async def sink_factory(_r: OriginateRequest) -> MemorySink:
        return sink

    run = asyncio.create_task(o.run(o.reserve(), REQ, redecide=allow, report=journal, sink_factory=sink_factory))
    await until(lambda: len(ua.dialled("callee")) == 1 and bridged(*ua.legs))
    agent, callee = ua.dialled("agent")[0], ua.dialled("callee")[0]
    for _ in range(4):  # what each phone sends arrives on its leg's receive side
        agent.rx.write(0, bytes([0x90]) * 160)
        callee.rx.write(0, bytes([0x70]) * 160)
    callee.end(LegCause.COMPLETED)  # the debtor hangs up
    res = await asyncio.wait_for(run, 3)

    assert res.cause is EndCause.COMPLETED and res.recording_id == "rec-1"
    assert agent.ended and agent.hangup_by == "local"
    assert agent.tx.read(160) == bytes([0x70]) * 160  # the agent hears the debtor
    assert callee.tx.read(160) == bytes([0x90]) * 160  # the debtor hears the agent
    samples = struct.unpack(f"<{len(sink.audio) // 2}h", sink.audio)
    left, right = set(samples[0::2]), set(samples[1::2])
    assert (0x90 - 128) << 8 in left and (0x70 - 128) << 8 in right
    assert (0x70 - 128) << 8 not in left and (0x90 - 128) << 8 not in right
    assert sink.chunks[0][:4] == b"RIFF" and sink.chunks[0][4:8] == b"\xff\xff\xff\xff"  # streaming header first
    assert sink.final_header is not None and struct.unpack("<I", sink.final_header[40:44])[0] == len(sink.audio)
    assert journal.states == ["originating", "agent_ringing", "agent_answered", "callee_ringing", "connected", "ended"]
    assert journal.rows[-1].recording_id == "rec-1"


async def test_a_recording_sink_that_fails_ends_the_call_rather_than_leaving_it_unrecorded() -> None:
    ua = FakeUserAgent({"agent": answers, "callee": answers})
    o, sink = originator(ua), MemorySink(fail_on_write=1)

    async def sink_factory(_r: OriginateRequest) -> MemorySink:
        return sink

    res = await asyncio.wait_for(o.run(o.reserve(), REQ, redecide=allow, report=Journal(), sink_factory=sink_factory), 5)
    assert res.cause is EndCause.FAILED and "recording" in (res.detail or "")
    assert all(leg.ended for leg in ua.legs)
    assert sink.aborted and sink.final_header is None


async def test_either_side_hanging_up_ends_the_bridge_and_the_other_side() -> None:
    for who in ("agent", "callee"):
        a, c = FakeLeg("1001", "agent", {}), FakeLeg("138", "callee", {})
        a.answer()
        c.answer()
        bridge = asyncio.create_task(Bridge(a, c, None).run())
        await until(lambda: bridged(a, c))
        (a if who == "agent" else c).end(LegCause.COMPLETED)
        result = await asyncio.wait_for(bridge, 2)
        assert result.ended_by == who and a.ended and c.ended


async def test_a_bridge_longer_than_the_maximum_duration_is_ended() -> None:
    a, c = FakeLeg("1001", "agent", {}), FakeLeg("138", "callee", {})
    a.answer()
    c.answer()
    result = await asyncio.wait_for(Bridge(a, c, None, max_duration=0.1).run(), 2)
    assert result.ended_by == "max_duration" and a.ended and c.ended


def test_a_full_limiter_refuses_at_once_and_frees_a_slot_on_release() -> None:
    limiter = BridgeLimiter(2)
    s1, s2 = limiter.acquire(), limiter.acquire()
    with pytest.raises(CapacityExceeded) as exc:
        limiter.acquire()
    assert exc.value.details == {"max_calls": 2}
    s1.release()
    s1.release()  # idempotent
    assert limiter.in_use == 1
    limiter.acquire()
    s2.release()


def test_reserving_while_not_registered_is_refused_with_pbx_unavailable() -> None:
    o = originator(FakeUserAgent({}, registered=False))
    with pytest.raises(PbxUnavailable) as exc:
        o.reserve()
    assert "PBX" in exc.value.reason
    assert o.limiter.in_use == 0


async def test_the_agent_hears_ringback_while_the_debtor_rings() -> None:
    callee_legs: list[FakeLeg] = []

    async def callee_script(leg: FakeLeg) -> None:
        callee_legs.append(leg)
        leg.ring()

    ua = FakeUserAgent({"agent": answers, "callee": callee_script})
    o = originator(ua, callee_ring_timeout=5)
    run = asyncio.create_task(o.run(o.reserve(), REQ, redecide=allow, report=Journal()))
    await until(lambda: len(callee_legs) == 1)
    agent = ua.dialled("agent")[0]
    await until(lambda: agent.tx.buffered() >= 320)  # ringback frames queued for the agent
    tone = agent.tx.read(320)
    assert min(tone) < 100 and max(tone) > 156  # a tone, not silence (0x80)
    callee_legs[0].end(LegCause.CALLEE_NO_ANSWER)
    res = await asyncio.wait_for(run, 2)
    assert res.cause is EndCause.CALLEE_NO_ANSWER


async def test_a_ringing_signal_that_arrives_before_the_originator_listens_is_still_reported() -> None:
    async def times_out(leg: FakeLeg) -> None:  # rang once, before place_call returned
        await asyncio.sleep(0)
        leg.end(LegCause.AGENT_NO_ANSWER)

    ua = FakeUserAgent({"agent": times_out, "callee": answers}, ring_before_return=True)
    o, journal = originator(ua), Journal()
    await o.run(o.reserve(), REQ, redecide=allow, report=journal)
    assert journal.states == ["originating", "agent_ringing", "ended"]
