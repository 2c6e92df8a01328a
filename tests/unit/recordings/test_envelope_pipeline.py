"""The pipelined writer (writing, and optionally hashing, on a thread of its own)
against the one-thread writer: the same bytes, bounded memory, back-pressure, errors and abort."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recordings.envelope import CHUNK_SIZE, EnvelopeReader, EnvelopeWriter, PipelinedEnvelopeWriter, pipeline

KEY = bytes(range(7, 39))
WAIT = 10.0  # an upper bound against hanging, never a pacing sleep


def seal_with(cls: type, plain: bytes, pieces: list[int], **kw: int) -> tuple[bytes, object]:
    out = io.BytesIO()
    w = cls(out, KEY, recording_id="rec-pipe", key_id="dk-9", **kw)
    pos = 0
    for n in pieces:
        w.write(plain[pos : pos + n])
        pos += n
    w.write(plain[pos:])
    summary = w.finish()
    return out.getvalue(), summary


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.integers(0, 6_000), max_size=30),
    st.sampled_from([13, 1024, 4096]),
    st.sampled_from([1, 5000, 3 * 4096, 64 * 1024]),
    st.integers(2, 5),
    st.booleans(),
)
def test_the_pipelined_writer_seals_byte_for_byte_what_the_one_thread_writer_seals(
    pieces: list[int], chunk: int, batch: int, depth: int, hash_on_worker: bool
) -> None:
    plain = os.urandom(sum(pieces) + 17)
    one, s1 = seal_with(EnvelopeWriter, plain, pieces, chunk_size=chunk, batch_bytes=batch)
    two, s2 = seal_with(
        PipelinedEnvelopeWriter, plain, pieces, chunk_size=chunk, batch_bytes=batch, depth=depth,
        hash_on_worker=hash_on_worker,
    )
    assert two == one and s2 == s1
    assert b"".join(EnvelopeReader(io.BytesIO(two), KEY, len(two)).iter_all()) == plain


class LendingSink(io.BytesIO):
    """A sink that lends buffers of `room` bytes (`Stager`), as the direct-I/O blob
    writer does; counts what arrives each way."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room
        self.staged = 0
        self.copied = 0
        self._lent: bytearray | None = None

    def stage(self, n: int) -> memoryview | None:
        if n > self.room:
            return None
        self._lent = bytearray(n)
        return memoryview(self._lent)

    def commit(self, n: int) -> None:
        assert self._lent is not None
        super().write(bytes(self._lent[:n]))
        self.staged += n
        self._lent = None

    def write(self, data: bytes | memoryview) -> int:  # type: ignore[override]
        self.copied += len(data)
        return super().write(data)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 6_000), max_size=30),
    st.sampled_from([13, 1024, 4096]),
    st.sampled_from([1, 5000, 3 * 4096]),
    st.sampled_from([0, 5000, 1 << 20]),
    st.sampled_from([1, 4096, 1 << 20]),
    st.booleans(),
)
def test_a_sink_that_lends_its_buffers_gets_the_same_bytes_sealed_in_place(
    pieces: list[int], chunk: int, batch: int, room: int, run: int, hash_on_worker: bool
) -> None:
    plain = os.urandom(sum(pieces) + 17)
    one, s1 = seal_with(EnvelopeWriter, plain, pieces, chunk_size=chunk, batch_bytes=batch)
    sink = LendingSink(room)
    # A batch is sealed into the lent buffers in runs of at most STAGE_RUN bytes.
    with mock.patch.object(pipeline, "STAGE_RUN", run):
        w = PipelinedEnvelopeWriter(
            sink, KEY, recording_id="rec-pipe", key_id="dk-9", chunk_size=chunk, batch_bytes=batch,
            hash_on_worker=hash_on_worker,
        )
        pos = 0
        for n in pieces:
            w.write(plain[pos : pos + n])
            pos += n
        w.write(plain[pos:])
        assert w.finish() == s1
    assert sink.getvalue() == one
    if room == 1 << 20 and len(plain) > max(1, batch // chunk) * chunk:
        assert sink.staged > 0  # batches handed to the threads were sealed in place


@pytest.mark.parametrize("hash_on_worker", [False, True])
@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, 4 * CHUNK_SIZE, 4 * CHUNK_SIZE + 1, 40 * CHUNK_SIZE])
def test_recordings_at_batch_boundaries_round_trip_through_the_pipelined_writer(size: int, hash_on_worker: bool) -> None:
    plain = os.urandom(size)
    blob, summary = seal_with(
        PipelinedEnvelopeWriter, plain, [], batch_bytes=4 * CHUNK_SIZE, hash_on_worker=hash_on_worker
    )
    reader = EnvelopeReader(io.BytesIO(blob), KEY, len(blob), recording_id="rec-pipe")
    assert b"".join(reader.iter_all()) == plain
    assert summary.size == size and summary.blob_size == len(blob)
    assert summary.sha256 == hashlib.sha256(plain).hexdigest()


class GatedSink:
    """Holds every sealed write until the test opens the gate."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.out = io.BytesIO()
        self.calls = 0

    def write(self, data: bytes) -> None:
        self.calls += 1
        if self.calls > 1:  # the header goes through on the caller's thread
            self.entered.set()
            assert self.gate.wait(WAIT), "test never opened the gate"
        self.out.write(data)


def test_a_slow_sink_makes_the_writer_take_no_more_than_depth_batches_then_say_when_there_is_room() -> None:
    sink = GatedSink()
    room = threading.Event()
    batch = 2 * CHUNK_SIZE
    w = PipelinedEnvelopeWriter(sink, KEY, recording_id="rec-pipe", key_id="dk-9", batch_bytes=batch, depth=3, on_room=room.set)
    plain = os.urandom(20 * batch + 5)
    taken = w.write_some(plain)
    # Two batches handed to the worker, the third held back as possibly the final
    # one: the rest is refused, not buffered.
    assert taken == 3 * batch
    assert sink.entered.wait(WAIT)
    assert w.in_flight == 2
    assert w.write_some(plain[taken:]) == 0
    assert not room.is_set()
    sink.gate.set()
    assert room.wait(WAIT)
    w.write(plain[taken:], timeout=WAIT)
    summary = w.finish(WAIT)
    blob = sink.out.getvalue()
    assert summary.size == len(plain)
    assert b"".join(EnvelopeReader(io.BytesIO(blob), KEY, len(blob)).iter_all()) == plain


class FailingSink:
    def __init__(self, fail_on_call: int) -> None:
        self.calls = 0
        self.fail_on_call = fail_on_call

    def write(self, data: bytes) -> None:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise OSError(28, "No space left on device")


@pytest.mark.parametrize("hash_on_worker", [False, True])
def test_a_sink_error_on_the_seal_thread_is_raised_to_the_caller_and_the_workers_end(hash_on_worker: bool) -> None:
    sink = FailingSink(fail_on_call=2)  # the first sealed batch
    w = PipelinedEnvelopeWriter(
        sink, KEY, recording_id="rec-pipe", key_id="dk-9", batch_bytes=CHUNK_SIZE, depth=2, hash_on_worker=hash_on_worker
    )
    piece = os.urandom(CHUNK_SIZE)
    with pytest.raises(OSError, match="No space left"):
        for _ in range(1000):
            w.write(piece, timeout=WAIT)
        w.finish(WAIT)
    w.abort()
    assert not [t for t in threading.enumerate() if t.name.startswith("envelope-")]
    with pytest.raises(OSError, match="No space left"):
        w.finish(WAIT)


@pytest.mark.parametrize("hash_on_worker", [False, True])
def test_abort_stops_the_workers_and_nothing_reaches_the_sink_afterwards(hash_on_worker: bool) -> None:
    sink = GatedSink()
    w = PipelinedEnvelopeWriter(
        sink, KEY, recording_id="rec-pipe", key_id="dk-9", batch_bytes=CHUNK_SIZE, depth=3, hash_on_worker=hash_on_worker
    )
    w.write_some(os.urandom(10 * CHUNK_SIZE))
    assert sink.entered.wait(WAIT)  # the seal thread is inside a write
    w.abort(timeout=0)  # stop requested while the write is still held
    sink.gate.set()
    w.abort(timeout=WAIT)
    assert not [t for t in threading.enumerate() if t.name.startswith("envelope-")]
    calls = sink.calls
    assert calls == 2  # header and the one batch in hand; the queued ones were dropped
    with pytest.raises(ValueError, match="finished"):
        w.write_some(b"more")


def test_a_recording_of_one_batch_or_less_is_sealed_without_starting_threads() -> None:
    seen: list[str] = []

    class Sink(io.BytesIO):
        def write(self, data: bytes) -> int:  # type: ignore[override]
            seen.append(threading.current_thread().name)
            return super().write(data)

    sink = Sink()
    w = PipelinedEnvelopeWriter(sink, KEY, recording_id="rec-pipe", key_id="dk-9", batch_bytes=4 * CHUNK_SIZE)
    w.write(os.urandom(4 * CHUNK_SIZE))
    w.finish()
    assert seen == [threading.current_thread().name] * 2  # header, the one final batch



class CountingSha:
    """SHA-256 that says when it has taken `expect` updates."""

    def __init__(self, expect: int) -> None:
        self.inner = hashlib.sha256()
        self.expect = expect
        self.updates = 0
        self.done = threading.Event()

    def update(self, data: bytes) -> None:
        self.inner.update(data)
        self.updates += 1
        if self.updates == self.expect:
            self.done.set()

    def hexdigest(self) -> str:
        return self.inner.hexdigest()


def test_with_hashing_on_a_thread_a_write_held_by_the_sink_holds_back_no_hash() -> None:
    sink = GatedSink()
    batch = 2 * CHUNK_SIZE
    w = PipelinedEnvelopeWriter(
        sink, KEY, recording_id="rec-pipe", key_id="dk-9", batch_bytes=batch, depth=3, hash_on_worker=True
    )
    sha = CountingSha(expect=2)
    w._sha = sha  # type: ignore[assignment]  # observe the hasher's progress
    plain = os.urandom(3 * batch + 1)
    taken = w.write_some(plain)
    assert taken == 3 * batch  # two batches handed off, the third held back
    assert sink.entered.wait(WAIT)  # the writer is held inside the first sealed batch
    # Both batches handed off are hashed while their writes wait: hashing never
    # waits for the disk.
    assert sha.done.wait(WAIT)
    assert w.in_flight == 2
    sink.gate.set()
    w.write(plain[taken:], timeout=WAIT)
    summary = w.finish(WAIT)
    blob = sink.out.getvalue()
    assert summary.sha256 == hashlib.sha256(plain).hexdigest() and sha.updates == 4
    assert b"".join(EnvelopeReader(io.BytesIO(blob), KEY, len(blob)).iter_all()) == plain
