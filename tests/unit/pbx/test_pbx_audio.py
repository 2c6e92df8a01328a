"""Sample formats, the streaming/sealed WAV header, and the bounded RTP buffers."""

from __future__ import annotations

import io
import struct
import wave

import pytest

from adapters.pbx.audio import RxBuffer, TxBuffer, stereo_s16, u8_to_s16, wav_header


def test_unsigned_8_bit_samples_become_signed_16_bit_with_silence_at_zero() -> None:
    assert struct.unpack("<3h", u8_to_s16(bytes([0x80, 0x00, 0xFF]))) == (0, -32768, 32512)


def test_stereo_interleaves_agent_left_and_debtor_right() -> None:
    out = struct.unpack("<4h", stereo_s16(bytes([0x90, 0x91]), bytes([0x70, 0x71])))
    assert out == (0x10 << 8, -(0x10 << 8), 0x11 << 8, -(0x0F << 8))


def test_channels_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="lengths differ"):
        stereo_s16(b"\x80" * 160, b"\x80" * 159)


def test_a_sealed_header_makes_a_standard_wav_that_python_reads_back_exactly() -> None:
    pcm = stereo_s16(bytes(range(256)) * 2, bytes(reversed(range(256))) * 2)
    data = wav_header(len(pcm)) + pcm
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (2, 2, 8000, 512)
        assert w.readframes(512) == pcm


def test_the_streaming_header_carries_placeholder_sizes_and_still_reads_to_the_end() -> None:
    header = wav_header(None)
    assert len(header) == 44 and header[4:8] == b"\xff\xff\xff\xff" and header[40:44] == b"\xff\xff\xff\xff"
    pcm = stereo_s16(b"\x90" * 160, b"\x70" * 160)
    with wave.open(io.BytesIO(header + pcm)) as w:
        assert w.readframes(10_000) == pcm


def test_a_header_for_a_size_that_is_not_whole_stereo_frames_is_refused() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        wav_header(6)


def test_the_receive_buffer_keeps_the_newest_frames_and_counts_what_it_dropped() -> None:
    rx = RxBuffer(max_frames=3)
    for i in range(5):
        rx.write(i * 160, bytes([i]) * 160)
    assert [rx.read(160)[0] for _ in range(3)] == [2, 3, 4]
    assert rx.dropped == 2 and rx.read(160) == b"\x80" * 160


def test_a_tapped_receive_buffer_hands_frames_on_and_keeps_none() -> None:
    rx, seen = RxBuffer(), []
    rx.set_tap(lambda frame, _t: seen.append(frame))
    rx.write(0, b"\x91" * 160)
    assert seen == [b"\x91" * 160] and rx.pop() is None


def test_the_send_buffer_is_capped_so_delay_cannot_build_up_and_sends_silence_when_empty() -> None:
    tx = TxBuffer(max_bytes=320)
    tx.write(0, b"\x01" * 160 + b"\x02" * 160 + b"\x03" * 160)
    assert tx.dropped_bytes == 160
    assert tx.read(160) == b"\x02" * 160 and tx.read(160) == b"\x03" * 160
    assert tx.read(160) == b"\x80" * 160 and tx.silent_frames == 1


def test_a_following_send_buffer_hands_a_frame_to_the_transmitter_as_soon_as_it_is_written() -> None:
    import threading

    tx = TxBuffer()
    tx.set_follow(2.0)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(tx.read(160)))
    reader.start()  # pyVoIP's transmitter, waiting for the relayed frame
    tx.write(0, b"\x33" * 160)
    reader.join(1.0)
    assert got == [b"\x33" * 160] and tx.silent_frames == 0


def test_a_following_send_buffer_keeps_at_most_two_frames_of_backlog() -> None:
    tx = TxBuffer()
    tx.set_follow(0.01)
    for value in (1, 2, 3, 4):
        tx.write(0, bytes([value]) * 160)
    assert [tx.read(160)[0] for _ in range(2)] == [3, 4]
    assert tx.dropped_bytes == 320
    assert tx.read(160) == b"\x80" * 160  # nothing came within the wait: silence
