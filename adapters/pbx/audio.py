"""Audio plumbing for pyVoIP legs: bounded buffers, sample formats, streaming WAV.

pyVoIP's `RTPClient` keeps two `RTPPacketManager`s (`pmin` received, `pmout` to send).
Both are a `BytesIO` that grows for the whole call and a dict that keeps every packet
ever received (about 8 KB/s per direction, never freed), and `read()` of the receive
side places audio by RTP timestamp, so a reader running slower or faster than the
sender drifts into growing delay or lost audio. We replace both, before the client
starts, with bounded buffers that have the same two methods (`write(offset, data)`,
`read(length)`):

  RxBuffer    received frames in arrival order, bounded depth (oldest dropped), or —
              while bridged — handed straight to a tap (no extra buffering delay).
  TxBuffer    bytes to send; pyVoIP's transmitter thread takes 160 bytes every 20 ms
              and sends silence when empty; bounded (oldest dropped) so the delay a
              slow far end could build up stays capped.

Samples on pyVoIP's side are 8-bit unsigned linear at 8 kHz (0x80 = silence), 160 bytes
per 20 ms frame. Recordings are 16-bit signed little-endian stereo at 8 kHz.
"""

from __future__ import annotations

import struct
import threading
import time
from collections import deque
from typing import Callable

from adapters.pbx._pyvoip import audioop

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_BYTES = SAMPLE_RATE * FRAME_MS // 1000  # 160 one-byte samples
SILENCE_U8 = b"\x80" * FRAME_BYTES

# Placeholder sizes written while a recording streams: readers (Python's wave module,
# ffmpeg, browsers) treat 0xFFFFFFFF as "to the end of the file". The real sizes are in
# `wav_header(data_bytes)`, handed to the sink when the recording is sealed.
STREAMING_SIZE = 0xFFFFFFFF
WAV_HEADER_BYTES = 44


def wav_header(data_bytes: int | None, *, channels: int = 2, rate: int = SAMPLE_RATE) -> bytes:
    """A 44-byte PCM WAV header for 16-bit samples; `None` gives the streaming header."""
    block_align = channels * 2
    if data_bytes is None:
        riff_size, data_size = STREAMING_SIZE, STREAMING_SIZE
    else:
        if data_bytes < 0 or data_bytes % block_align:
            raise ValueError(f"data_bytes must be a non-negative multiple of {block_align}, got {data_bytes}")
        if data_bytes > STREAMING_SIZE - 36:
            raise ValueError("recording too long for a RIFF/WAV file (4 GiB limit)")
        riff_size, data_size = 36 + data_bytes, data_bytes
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        riff_size,
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        channels,
        rate,
        rate * block_align,
        block_align,
        16,
        b"data",
        data_size,
    )


def u8_to_s16(u8: bytes) -> bytes:
    """8-bit unsigned mono → 16-bit signed little-endian mono (audioop: width 1 is signed)."""
    return audioop.lin2lin(audioop.bias(u8, 1, -128), 1, 2)


def stereo_s16(left_u8: bytes, right_u8: bytes) -> bytes:
    """Interleave two 8-bit unsigned mono frames into 16-bit stereo (left, right)."""
    if len(left_u8) != len(right_u8):
        raise ValueError(f"channel lengths differ: {len(left_u8)} != {len(right_u8)}")
    left = audioop.tostereo(u8_to_s16(left_u8), 2, 1, 0)
    right = audioop.tostereo(u8_to_s16(right_u8), 2, 0, 1)
    return audioop.add(left, right, 2)


def fit_frame(data: bytes, length: int = FRAME_BYTES) -> bytes:
    if len(data) == length:
        return data
    if len(data) > length:
        return data[:length]
    return data + b"\x80" * (length - len(data))


class RxBuffer:
    """Receive side of a leg (replaces `RTPClient.pmin`). Thread-safe."""

    def __init__(self, max_frames: int = 10) -> None:
        self._frames: deque[tuple[bytes, float]] = deque()
        self._max = max_frames
        self._lock = threading.Lock()
        self._tap: Callable[[bytes, float], None] | None = None
        self.received = 0
        self.dropped = 0
        self.last_arrival: float | None = None

    # pyVoIP's interface -------------------------------------------------------------
    def write(self, offset: int, data: bytes) -> None:  # noqa: ARG002 (RTP timestamp unused)
        now = time.monotonic()
        with self._lock:
            self.received += 1
            self.last_arrival = now
            tap = self._tap
            if tap is None:
                self._frames.append((data, now))
                while len(self._frames) > self._max:
                    self._frames.popleft()
                    self.dropped += 1
                return
        tap(data, now)

    def read(self, length: int = FRAME_BYTES) -> bytes:
        frame = self.pop()
        return fit_frame(frame[0], length) if frame else b"\x80" * length

    # ours ---------------------------------------------------------------------------
    def pop(self) -> tuple[bytes, float] | None:
        """The oldest received frame and its arrival time, or None."""
        with self._lock:
            return self._frames.popleft() if self._frames else None

    def set_tap(self, tap: Callable[[bytes, float], None] | None) -> None:
        """Hand every received frame to `tap(frame, arrival)` on pyVoIP's receive thread."""
        with self._lock:
            self._tap = tap
            self._frames.clear()


class TxBuffer:
    """Send side of a leg (replaces `RTPClient.pmout`). Thread-safe.

    pyVoIP's transmitter thread calls `read()` and then sleeps 20 ms minus the time the
    call took. In *follow* mode (set while bridged) `read()` waits up to `follow_wait`
    for the next frame, so the transmitter sends each relayed frame the moment it
    arrives instead of on its own 20 ms clock: no queue builds up between two clocks
    that drift, and the bridge adds no buffering delay. A backlog beyond two frames is
    dropped (counted) for the same reason.
    """

    def __init__(self, max_bytes: int = FRAME_BYTES * 6) -> None:
        self._buf = bytearray()
        self._max = max_bytes
        self._cond = threading.Condition(threading.Lock())
        self.follow_wait = 0.0
        self.dropped_bytes = 0
        self.sent_frames = 0
        self.silent_frames = 0

    def write(self, offset: int, data: bytes) -> None:  # noqa: ARG002 (pyVoIP's offset unused)
        with self._cond:
            self._buf += data
            limit = 3 * FRAME_BYTES if self.follow_wait else self._max
            excess = len(self._buf) - limit
            if excess > 0:
                if self.follow_wait:
                    excess = len(self._buf) - 2 * FRAME_BYTES
                del self._buf[:excess]
                self.dropped_bytes += excess
            self._cond.notify()

    def read(self, length: int = FRAME_BYTES) -> bytes:
        with self._cond:
            if self.follow_wait and len(self._buf) < length:
                self._cond.wait_for(lambda: len(self._buf) >= length, timeout=self.follow_wait)
            if len(self._buf) >= length:
                out = bytes(self._buf[:length])
                del self._buf[:length]
                self.sent_frames += 1
                return out
            out = bytes(self._buf) + b"\x80" * (length - len(self._buf))
            self._buf.clear()
            self.silent_frames += 1
            return out

    def set_follow(self, wait: float) -> None:
        """Follow the writer's clock (`wait` > 0, e.g. 0.025 s) or pace at 20 ms (0)."""
        with self._cond:
            self.follow_wait = wait
            self._cond.notify_all()

    def buffered(self) -> int:
        with self._cond:
            return len(self._buf)
