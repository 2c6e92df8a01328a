"""Bridge two answered legs both ways and record them as a stereo WAV, streamed.

Audio path (no extra buffering): each leg's receive buffer gets a *tap* that runs on
pyVoIP's RTP receive thread and puts the frame straight into the other leg's send
buffer (pyVoIP's transmitter sends it within 20 ms) and into the recorder's queue for
that side. A recorder thread ticks every 20 ms on a monotonic schedule, takes one frame
per side (silence when a side sent nothing), interleaves them — agent LEFT, debtor
RIGHT, 16-bit signed, 8 kHz — and hands ~1 s chunks to the event loop, where a task
writes them to the sink. The whole call is never in memory: at most
`max_pending_chunks` seconds wait for a slow sink; beyond that the call is ended rather
than recorded with holes (a call that cannot be recorded must not go on).

The WAV header (documented choice): a recording streams while the call runs, so its
length is unknown when the first bytes leave. The stream therefore starts with the
de-facto streaming header — RIFF and data sizes 0xFFFFFFFF, which Python's `wave`,
ffmpeg/sox and browsers read as "until end of file" — and when the call ends the sink
receives `seal(final_header=…)`, the same 44 bytes with the true sizes. A sink that can
rewrite its first bytes (a local file; the vault, which encrypts in independent chunks
and can re-encrypt chunk 0 before it commits) patches them, so the stored file is an
exact, standard WAV; a pure byte-pipe sink may ignore it and still hold a playable file.

Either side hanging up ends the other. `BridgeLimiter` caps simultaneous bridged calls:
beyond the configured maximum `acquire()` raises `CapacityExceeded` at once (the service
answers 503), it never queues.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import structlog

from adapters.pbx.audio import FRAME_BYTES, FRAME_MS, SILENCE_U8, WAV_HEADER_BYTES, fit_frame, stereo_s16, wav_header
from adapters.pbx.errors import CapacityExceeded
from adapters.pbx.sip_ua import Leg, LegCause

log = structlog.get_logger("adapters.pbx.bridge")

# How long a bridged leg's transmitter waits for the next relayed frame before it sends
# silence: a little more than one 20 ms frame.
FOLLOW_WAIT = 0.025


class RecordingSink(Protocol):
    """Where a recording streams to. Called from one task, in order: write…, then
    exactly one of seal / abort."""

    async def write(self, chunk: bytes) -> None: ...

    async def seal(self, *, final_header: bytes, duration: float) -> str | None:
        """The recording is complete; `final_header` replaces the first 44 bytes.
        Returns the recording id, if the sink has one."""
        ...

    async def abort(self, reason: str) -> None: ...


class FileSink:
    """A recording written to a local file (tests, bench, debugging): patches the header."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._f = open(self.path, "wb")
        self.sealed = False

    async def write(self, chunk: bytes) -> None:
        await asyncio.to_thread(self._f.write, chunk)

    async def seal(self, *, final_header: bytes, duration: float) -> str | None:
        def _seal() -> None:
            self._f.seek(0)
            self._f.write(final_header)
            self._f.close()

        await asyncio.to_thread(_seal)
        self.sealed = True
        return str(self.path)

    async def abort(self, reason: str) -> None:
        self._f.close()
        self.path.unlink(missing_ok=True)


class BridgeLimiter:
    """At most `max_calls` calls hold a slot; more are refused at once."""

    def __init__(self, max_calls: int) -> None:
        if max_calls < 1:
            raise ValueError("pbx.max_bridged_calls must be >= 1")
        self.max_calls = max_calls
        self._in_use = 0
        self._lock = threading.Lock()

    @property
    def in_use(self) -> int:
        return self._in_use

    def acquire(self) -> "BridgeSlot":
        with self._lock:
            if self._in_use >= self.max_calls:
                raise CapacityExceeded(
                    f"同时通话数已达上限 {self.max_calls}，请稍后再拨 / "
                    f"all {self.max_calls} call slots of this instance are busy, try again shortly",
                    max_calls=self.max_calls,
                )
            self._in_use += 1
        return BridgeSlot(self)

    def _release(self) -> None:
        with self._lock:
            self._in_use -= 1


class BridgeSlot:
    def __init__(self, limiter: BridgeLimiter) -> None:
        self._limiter = limiter
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limiter._release()

    def __enter__(self) -> "BridgeSlot":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class BridgeResult:
    duration: float = 0.0
    data_bytes: int = 0
    recording_id: str | None = None
    recording_error: str | None = None
    ended_by: str = ""  # "agent", "callee", "max_duration", "recording"
    frames: dict[str, int] = field(default_factory=dict)


class _Recorder(threading.Thread):
    """20 ms ticker: one frame per side → stereo → ~1 s chunks to the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, out: asyncio.Queue[bytes | None], chunk_frames: int, max_pending: int):
        super().__init__(name="pbx-recorder", daemon=True)
        self.left: deque[bytes] = deque()
        self.right: deque[bytes] = deque()
        self.lock = threading.Lock()
        self._loop = loop
        self._out = out
        self._chunk_frames = chunk_frames
        self._max_pending = max_pending
        self._halt = threading.Event()
        self.overflow = asyncio.Event()  # set on the loop when the sink falls too far behind
        self.frames = {"agent_in": 0, "callee_in": 0, "agent_late_dropped": 0, "callee_late_dropped": 0, "ticks": 0}
        self.data_bytes = 0
        self.overflowed = False

    def push(self, side: str, frame: bytes) -> None:
        q = self.left if side == "agent" else self.right
        with self.lock:
            self.frames[f"{side}_in"] += 1
            q.append(fit_frame(frame))
            # a side running ahead of the clock (sender drift) must not build up delay
            while len(q) > 5:
                q.popleft()
                self.frames[f"{side}_late_dropped"] += 1

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        buf = bytearray()
        tick = FRAME_MS / 1000
        next_t = time.monotonic() + tick
        while not self._halt.is_set():
            delay = next_t - time.monotonic()
            if delay > 0 and self._halt.wait(delay):
                break
            next_t += tick
            with self.lock:
                left = self.left.popleft() if self.left else SILENCE_U8
                right = self.right.popleft() if self.right else SILENCE_U8
            self.frames["ticks"] += 1
            buf += stereo_s16(left, right)
            if len(buf) >= self._chunk_frames * FRAME_BYTES * 4:
                self._hand_over(bytes(buf))
                buf.clear()
            if next_t < time.monotonic() - 0.2:  # badly late (machine stalled): don't burst
                next_t = time.monotonic() + tick
        with self.lock:  # what arrived before the hang-up is recorded too
            while self.left or self.right:
                left = self.left.popleft() if self.left else SILENCE_U8
                right = self.right.popleft() if self.right else SILENCE_U8
                buf += stereo_s16(left, right)
        if buf:
            self._hand_over(bytes(buf))
        try:
            self._loop.call_soon_threadsafe(self._out.put_nowait, None)
        except RuntimeError:
            pass

    def _hand_over(self, chunk: bytes) -> None:
        if self.overflowed or self._out.qsize() >= self._max_pending:  # qsize: a len() read
            if not self.overflowed:
                self.overflowed = True
                try:
                    self._loop.call_soon_threadsafe(self.overflow.set)
                except RuntimeError:
                    pass
            return
        self.data_bytes += len(chunk)
        try:
            self._loop.call_soon_threadsafe(self._out.put_nowait, chunk)
        except RuntimeError:
            pass


class Bridge:
    """Connects two answered legs until either hangs up; records into `sink` if given."""

    def __init__(
        self,
        agent: Leg,
        callee: Leg,
        sink: RecordingSink | None,
        *,
        max_duration: float = 4 * 3600,
        chunk_seconds: float = 1.0,
        max_pending_chunks: int = 30,
    ) -> None:
        self.agent = agent
        self.callee = callee
        self.sink = sink
        self.max_duration = max_duration
        self.chunk_frames = max(1, int(chunk_seconds * 1000 / FRAME_MS))
        self.max_pending = max_pending_chunks

    async def run(self) -> BridgeResult:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        rec = _Recorder(loop, queue, self.chunk_frames, self.max_pending)
        agent, callee = self.agent, self.callee
        result = BridgeResult()

        def agent_heard(frame: bytes, _t: float) -> None:
            callee.tx.write(0, frame)
            rec.push("agent", frame)

        def callee_heard(frame: bytes, _t: float) -> None:
            agent.tx.write(0, frame)
            rec.push("callee", frame)

        started = time.monotonic()
        agent.tx.set_follow(FOLLOW_WAIT)
        callee.tx.set_follow(FOLLOW_WAIT)
        agent.rx.set_tap(agent_heard)
        callee.rx.set_tap(callee_heard)
        rec.start()
        writer = asyncio.create_task(self._write(queue, rec), name=f"pbx-recording-{agent.id}")
        overflow = asyncio.create_task(rec.overflow.wait(), name="pbx-rec-overflow")
        waits = {
            asyncio.create_task(agent.wait_ended(), name="agent-ended"): "agent",
            asyncio.create_task(callee.wait_ended(), name="callee-ended"): "callee",
            writer: "recording",
            overflow: "recording",
        }
        try:
            done, _ = await asyncio.wait(waits, timeout=self.max_duration, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                result.ended_by = "max_duration"
            else:
                first = next(iter(done))
                result.ended_by = waits[first]
                if first is overflow:
                    result.recording_error = "recording sink too slow: call ended rather than recorded with gaps"
                elif first is writer and writer.exception() is not None:
                    result.recording_error = f"recording sink failed: {writer.exception()}"
        finally:
            agent.rx.set_tap(None)
            callee.rx.set_tap(None)
            agent.tx.set_follow(0.0)
            callee.tx.set_follow(0.0)
            rec.stop()
            for task in waits:
                if task is not writer and not task.done():
                    task.cancel()
            await asyncio.gather(agent.hangup(LegCause.COMPLETED), callee.hangup(LegCause.COMPLETED), return_exceptions=True)
        result.duration = time.monotonic() - started
        result.frames = dict(rec.frames)
        await asyncio.to_thread(rec.join, 2.0)
        try:
            await writer
        except Exception as exc:  # already recorded as recording_error
            result.recording_error = result.recording_error or f"recording sink failed: {exc}"
        result.data_bytes = rec.data_bytes
        if self.sink is not None:
            if result.recording_error:
                await self._abort(result.recording_error)
            else:
                try:
                    result.recording_id = await self.sink.seal(
                        final_header=wav_header(result.data_bytes), duration=result.data_bytes / (8000 * 4)
                    )
                except Exception as exc:
                    result.recording_error = f"sealing the recording failed: {exc}"
                    log.warning("pbx.recording.seal_failed", error=str(exc))
        log.info(
            "pbx.bridge.ended",
            agent_leg=agent.id,
            callee_leg=callee.id,
            ended_by=result.ended_by,
            seconds=round(result.duration, 2),
            recording_id=result.recording_id,
            recording_error=result.recording_error,
        )
        return result

    async def _write(self, queue: asyncio.Queue[bytes | None], rec: _Recorder) -> None:
        sink = self.sink
        if sink is not None:
            await sink.write(wav_header(None))
        while True:
            chunk = await queue.get()
            if chunk is None:
                return
            if sink is not None:
                await sink.write(chunk)

    async def _abort(self, reason: str) -> None:
        assert self.sink is not None
        try:
            await self.sink.abort(reason)
        except Exception as exc:
            log.warning("pbx.recording.abort_failed", error=str(exc))


__all__ = ["Bridge", "BridgeLimiter", "BridgeResult", "BridgeSlot", "FileSink", "RecordingSink", "WAV_HEADER_BYTES"]
