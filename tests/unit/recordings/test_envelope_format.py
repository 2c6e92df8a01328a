"""The sealed blob format on its own: round trips, every tamper case, exact ranges."""

from __future__ import annotations

import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recordings import envelope
from recordings.envelope import CHUNK_SIZE, TAG_SIZE, EnvelopeReader, EnvelopeWriter, read_header
from recordings.errors import IntegrityError

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def seal(plaintext: bytes, *, key: bytes = KEY, rid: str = "rec-0001", kid: str = "dk-1", chunk: int = CHUNK_SIZE, piece: int = 10_000) -> bytes:
    out = io.BytesIO()
    w = EnvelopeWriter(out, key, recording_id=rid, key_id=kid, chunk_size=chunk)
    for i in range(0, len(plaintext), piece):
        w.write(plaintext[i : i + piece])
    summary = w.finish()
    blob = out.getvalue()
    assert summary.blob_size == len(blob)
    assert summary.size == len(plaintext)
    return blob


def open_blob(blob: bytes, *, key: bytes = KEY, rid: str | None = "rec-0001") -> EnvelopeReader:
    return EnvelopeReader(io.BytesIO(blob), key, len(blob), recording_id=rid)


def read_all(blob: bytes, **kw) -> bytes:
    return b"".join(open_blob(blob, **kw).iter_all())


def chunk_spans(blob: bytes, chunk: int = CHUNK_SIZE) -> list[tuple[int, int]]:
    _, _, base = read_header(io.BytesIO(blob))
    spans = []
    pos = base
    while pos < len(blob):
        end = min(pos + chunk + TAG_SIZE, len(blob))
        spans.append((pos, end))
        pos = end
    return spans


PLAIN = os.urandom(5 * CHUNK_SIZE + 1234)


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE, 3 * CHUNK_SIZE + 7])
def test_plaintext_of_any_length_comes_back_byte_for_byte(size: int) -> None:
    plain = os.urandom(size)
    blob = seal(plain)
    assert read_all(blob) == plain
    assert open_blob(blob).size == size


def test_the_same_audio_sealed_twice_with_different_keys_shares_no_ciphertext() -> None:
    a = seal(PLAIN, key=KEY)
    b = seal(PLAIN, key=OTHER_KEY)
    assert a[200:264] != b[200:264]
    assert PLAIN[:64] not in a


def test_a_flipped_byte_anywhere_in_a_chunk_or_its_tag_is_detected() -> None:
    blob = seal(PLAIN)
    for start, end in chunk_spans(blob):
        for pos in (start, (start + end) // 2, end - 1):  # first byte, middle, last tag byte
            bad = bytearray(blob)
            bad[pos] ^= 0x01
            with pytest.raises(IntegrityError):
                read_all(bytes(bad))


def test_a_flipped_byte_in_the_header_is_detected() -> None:
    blob = seal(PLAIN)
    _, _, base = read_header(io.BytesIO(blob))
    for pos in range(0, base):
        bad = bytearray(blob)
        bad[pos] ^= 0x01
        with pytest.raises(IntegrityError):
            read_all(bytes(bad), rid=None)


def test_a_dropped_chunk_is_detected() -> None:
    blob = seal(PLAIN)
    spans = chunk_spans(blob)
    for i in range(len(spans)):
        start, end = spans[i]
        with pytest.raises(IntegrityError):
            read_all(blob[:start] + blob[end:])


def test_reordered_chunks_are_detected() -> None:
    blob = seal(PLAIN)
    spans = chunk_spans(blob)
    (a0, a1), (b0, b1) = spans[1], spans[2]
    swapped = blob[:a0] + blob[b0:b1] + blob[a0:a1] + blob[b1:]
    assert len(swapped) == len(blob)
    with pytest.raises(IntegrityError):
        read_all(swapped)


def test_a_duplicated_chunk_is_detected() -> None:
    blob = seal(PLAIN)
    start, end = chunk_spans(blob)[1]
    with pytest.raises(IntegrityError):
        read_all(blob[:end] + blob[start:end] + blob[end:])


def test_truncation_at_every_chunk_boundary_and_inside_a_chunk_is_detected() -> None:
    blob = seal(PLAIN)
    cuts = [end for _, end in chunk_spans(blob)[:-1]] + [len(blob) - 1, len(blob) - TAG_SIZE, len(blob) - 100]
    for cut in cuts:
        with pytest.raises(IntegrityError):
            read_all(blob[:cut])


def test_a_chunk_from_another_recording_sealed_with_the_same_key_is_detected() -> None:
    mine = seal(PLAIN, rid="rec-0001")
    theirs = seal(PLAIN, rid="rec-0002")
    s0, s1 = chunk_spans(mine)[2]
    spliced = mine[:s0] + theirs[s0:s1] + mine[s1:]
    with pytest.raises(IntegrityError):
        read_all(spliced)


def test_the_wrong_key_is_detected() -> None:
    blob = seal(PLAIN)
    with pytest.raises(IntegrityError):
        read_all(blob, key=OTHER_KEY)


def test_a_blob_presented_as_another_recording_is_refused() -> None:
    blob = seal(PLAIN, rid="rec-0001")
    with pytest.raises(IntegrityError, match="another recording"):
        open_blob(blob, rid="rec-0002")


def test_a_range_read_decrypts_only_the_chunks_it_touches() -> None:
    blob = seal(PLAIN)
    start, end = chunk_spans(blob)[4]
    bad = bytearray(blob)
    bad[start + 10] ^= 0xFF  # chunk 4 is corrupt
    reader = open_blob(bytes(bad))
    lo, hi = CHUNK_SIZE + 100, 3 * CHUNK_SIZE + 5  # chunks 1..3
    assert b"".join(reader.iter_range(lo, hi)) == PLAIN[lo:hi]
    with pytest.raises(IntegrityError):
        b"".join(reader.iter_range(4 * CHUNK_SIZE, 4 * CHUNK_SIZE + 1))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(PLAIN)), st.integers(0, len(PLAIN)))
def test_any_byte_range_returns_exactly_those_plaintext_bytes(a: int, b: int) -> None:
    lo, hi = min(a, b), max(a, b)
    reader = open_blob(_SEALED)
    assert b"".join(reader.iter_range(lo, hi)) == PLAIN[lo:hi]


_SEALED = seal(PLAIN)


def test_a_data_key_wrapped_for_one_recording_does_not_unwrap_for_another() -> None:
    kek = os.urandom(32)
    dek = os.urandom(32)
    wrapped = envelope.wrap_data_key(kek, dek, recording_id="r1", key_id="d1", kek_id="k1")
    assert envelope.unwrap_data_key(kek, wrapped, recording_id="r1", key_id="d1", kek_id="k1") == dek
    for kw in ({"recording_id": "r2", "key_id": "d1", "kek_id": "k1"},
               {"recording_id": "r1", "key_id": "d2", "kek_id": "k1"},
               {"recording_id": "r1", "key_id": "d1", "kek_id": "k2"}):
        with pytest.raises(IntegrityError):
            envelope.unwrap_data_key(kek, wrapped, **kw)
    with pytest.raises(IntegrityError):
        envelope.unwrap_data_key(os.urandom(32), wrapped, recording_id="r1", key_id="d1", kek_id="k1")


def test_the_writer_holds_at_most_one_batch_however_large_the_pieces_it_is_fed() -> None:
    class CountingSink:
        def __init__(self) -> None:
            self.n = 0

        def write(self, b: bytes) -> None:
            self.n += len(b)

    sink = CountingSink()
    w = EnvelopeWriter(sink, KEY, recording_id="r", key_id="k", batch_bytes=4 * CHUNK_SIZE)
    piece = os.urandom(3 * CHUNK_SIZE + 3)  # pieces bigger than a chunk, not aligned to one
    for i in range(1, 41):
        w.write(piece)
        assert w.buffered <= 4 * CHUNK_SIZE  # one batch held back, never more
        assert sink.n >= i * len(piece) - 4 * CHUNK_SIZE  # the rest is already sealed and gone
    assert w.finish().size == 40 * len(piece)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3 * 1024), max_size=40), st.sampled_from([1, 7, 1024, 4096]))
def test_any_split_of_the_input_into_pieces_seals_the_same_plaintext(sizes: list[int], chunk: int) -> None:
    plain = os.urandom(sum(sizes))
    out = io.BytesIO()
    w = EnvelopeWriter(out, KEY, recording_id="rec-0001", key_id="dk-1", chunk_size=chunk)
    pos = 0
    for n in sizes:
        w.write(plain[pos : pos + n])
        pos += n
    summary = w.finish()
    blob = out.getvalue()
    reader = open_blob(blob)
    assert reader.chunks == summary.chunks == max(1, -(-len(plain) // chunk))
    assert b"".join(reader.iter_all()) == plain
