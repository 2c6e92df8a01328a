"""CoalescingTransport (dialer/http/server.py): the writes of one loop turn reach the
socket as one write, with the same bytes in the same order."""

from __future__ import annotations

import asyncio
from typing import Any

from dialer.http.server import FLUSH_AT, CoalescingTransport


class SocketSide(asyncio.Transport):
    """What the wrapped transport hands to the socket: each write as the kernel gets it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.reading = True

    def write(self, data: Any) -> None:
        if self.closed:
            raise RuntimeError("write after close")
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5555)}.get(name, default)


async def next_turn() -> None:
    await asyncio.sleep(0)


async def test_a_status_line_and_a_body_written_in_one_turn_reach_the_socket_as_one_write() -> None:
    sock = SocketSide()
    t = CoalescingTransport(sock, asyncio.get_running_loop())
    t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    t.write(b"ok")
    assert sock.writes == []  # nothing yet: the loop turn is not over
    await next_turn()
    assert sock.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]


async def test_writes_of_later_turns_are_separate_writes_in_order() -> None:
    sock = SocketSide()
    t = CoalescingTransport(sock, asyncio.get_running_loop())
    t.write(b"first")
    await next_turn()
    t.write(b"second")
    t.write(b"+more")
    await next_turn()
    assert sock.writes == [b"first", b"second+more"]


async def test_close_sends_what_is_pending_before_closing() -> None:
    sock = SocketSide()
    t = CoalescingTransport(sock, asyncio.get_running_loop())
    t.write(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n")
    t.write(b"bad")
    t.close()
    assert sock.writes == [b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\nbad"]
    assert sock.closed
    await next_turn()  # the scheduled flush finds nothing left and writes nothing more
    assert len(sock.writes) == 1


async def test_abort_drops_what_is_pending_as_an_abort_drops_the_socket_buffer() -> None:
    sock = SocketSide()
    t = CoalescingTransport(sock, asyncio.get_running_loop())
    t.write(b"half an answer")
    t.abort()
    await next_turn()
    assert sock.aborted and sock.writes == []


async def test_bytes_pending_when_the_connection_is_lost_are_dropped_without_an_error() -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        sock = SocketSide()
        t = CoalescingTransport(sock, loop)
        t.write(b"answer to a client that left")
        sock.close()  # the peer went away before the end of the turn
        await next_turn()
    finally:
        loop.set_exception_handler(None)
    assert sock.writes == []
    assert errors == []  # a write to a closed socket would raise in the loop's callback


async def test_a_large_body_is_handed_to_the_socket_at_once_so_flow_control_still_applies() -> None:
    sock = SocketSide()
    t = CoalescingTransport(sock, asyncio.get_running_loop())
    t.write(b"HTTP/1.1 200 OK\r\n\r\n")
    t.write(b"x" * FLUSH_AT)
    assert sock.writes == [b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * FLUSH_AT]
    assert t.get_write_buffer_size() == 0


async def test_a_bytearray_changed_after_the_write_is_sent_as_it_was_when_written() -> None:
    sock = SocketSide()
    t = CoalescingTransport(sock, asyncio.get_running_loop())
    buf = bytearray(b"chunk-1")
    t.write(buf)
    t.write(memoryview(b"|view"))
    buf[:] = b"CHANGED"
    await next_turn()
    assert sock.writes == [b"chunk-1|view"]


async def test_pending_bytes_count_in_the_write_buffer_size_and_empty_writes_are_ignored() -> None:
    sock = SocketSide()
    t = CoalescingTransport(sock, asyncio.get_running_loop())
    t.write(b"")
    t.writelines([b"ab", b"cde"])
    assert t.get_write_buffer_size() == 5
    await next_turn()
    assert sock.writes == [b"abcde"] and t.get_write_buffer_size() == 0


async def test_reading_and_connection_details_are_the_sockets_own() -> None:
    sock = SocketSide()
    t = CoalescingTransport(sock, asyncio.get_running_loop())
    t.pause_reading()
    assert sock.reading is False and t.is_reading() is False  # is_reading: delegated as is
    t.resume_reading()
    assert sock.reading is True and t.is_reading() is True
    assert t.get_extra_info("peername") == ("127.0.0.1", 5555)
    assert t.is_closing() is False
