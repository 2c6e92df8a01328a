"""Real WAV files for tests, benchmarks and demos, streamed from generators.

`wav_stream` yields a valid RIFF/WAVE file piece by piece, so a multi-hour recording
never exists in memory as a whole.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator

PCM_RATE = 8000
PCM_CHANNELS = 2
PCM_WIDTH = 2


def wav_header(data_bytes: int, *, rate: int = PCM_RATE, channels: int = PCM_CHANNELS, width: int = PCM_WIDTH) -> bytes:
    """The 44-byte canonical PCM header for `data_bytes` of samples."""
    if data_bytes + 36 > 0xFFFFFFFF:
        raise ValueError("a RIFF WAV holds at most 4 GiB; use shorter recordings")
    block = channels * width
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, width * 8)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def wav_size(seconds: float, *, rate: int = PCM_RATE, channels: int = PCM_CHANNELS, width: int = PCM_WIDTH) -> int:
    return 44 + int(seconds * rate) * channels * width


def _tone_block(frames: int, start_frame: int, rate: int, channels: int, freq: float) -> bytes:
    out = bytearray()
    for i in range(frames):
        v = int(12000 * math.sin(2 * math.pi * freq * (start_frame + i) / rate))
        out += struct.pack("<h", v) * channels
    return bytes(out)


def wav_stream(
    seconds: float,
    *,
    rate: int = PCM_RATE,
    channels: int = PCM_CHANNELS,
    piece: int = 64 * 1024,
    tone_hz: float | None = None,
    marker: bytes | None = None,
) -> Iterator[bytes]:
    """A WAV file in pieces of `piece` bytes (the last may be shorter).

    Silence by default; `tone_hz` makes the first second a sine tone repeated; a
    `marker` is written at the start of every piece's samples so tests can look for
    plaintext on disk.
    """
    width = PCM_WIDTH
    frames = int(seconds * rate)
    data_bytes = frames * channels * width
    yield wav_header(data_bytes, rate=rate, channels=channels, width=width)
    if tone_hz is not None:
        pattern = _tone_block(rate, 0, rate, channels, tone_hz)
    else:
        pattern = bytes(rate * channels * width)
    block = (pattern * (piece // len(pattern) + 2))
    remaining = data_bytes
    offset = 0
    while remaining > 0:
        n = min(piece, remaining)
        start = offset % len(pattern)
        chunk = block[start : start + n]
        if marker is not None and n >= len(marker):
            chunk = marker + chunk[len(marker) :]
        yield chunk
        remaining -= n
        offset += n


# -- actors and requests used across the vault's tests ------------------------------

from collections.abc import AsyncIterable, Callable, Iterable  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from typing import Protocol  # noqa: E402

from recordings.model import Actor, IngestRequest, Link, Recording  # noqa: E402

PBX = Actor("pbx-1", "pbx")
ADMIN = Actor("ops-wang", "admin")
QA_A = Actor("qa-li", "qa", frozenset({"bank-a"}))
QA_B = Actor("qa-zhao", "qa", frozenset({"bank-b"}))
SUP_A = Actor("sup-chen", "supervisor", frozenset({"bank-a"}))
COMPLIANCE = Actor("comp-sun", "compliance", frozenset({"bank-a", "bank-b"}))


def request(
    source_id: str,
    *,
    creditor: str | None = "bank-a",
    case_id: str | None = "case-1",
    agent: str | None = "agent-7",
    number: str | None = "+8613800000001",
    started_at: datetime | None = None,
    kind: str = "attempt",
    media_type: str = "audio/wav",
) -> IngestRequest:
    return IngestRequest(
        source_kind=kind,
        source_id=source_id,
        started_at=started_at or datetime(2026, 11, 23, 9, 30, tzinfo=timezone.utc),
        media_type=media_type,
        duration_s=10.0,
        link=Link(creditor=creditor, case_id=case_id if creditor else None, agent=agent, number=number),
    )


def wav_bytes(seconds: float = 10.0, tone_hz: float = 440.0) -> bytes:
    return b"".join(wav_stream(seconds, tone_hz=tone_hz))


class _Ingested(Protocol):
    @property
    def recording(self) -> Recording: ...


class _IngestingVault(Protocol):
    """What `ingest_as_of` needs of a vault (the vault itself, without importing it here)."""

    clock: Callable[[], datetime]

    async def ingest(
        self, req: IngestRequest, body: AsyncIterable[bytes] | Iterable[bytes], actor: Actor
    ) -> _Ingested: ...


async def ingest_as_of(
    vault: _IngestingVault,
    req: IngestRequest,
    body: AsyncIterable[bytes] | Iterable[bytes] | None = None,
    actor: Actor = PBX,
) -> Recording:
    """`vault.ingest` run on the day the call was made: retention never runs from
    earlier than the day of ingest, so a test that needs a recording already due
    uploads it back then."""
    clock = vault.clock
    vault.clock = lambda: req.started_at
    try:
        return (await vault.ingest(req, body if body is not None else [wav_bytes(1)], actor)).recording
    finally:
        vault.clock = clock
