"""Waking the primary worker's outbox relay from the other workers of a pool.

`dialgate serve --workers N` (dialer/workers.py) runs the MQTT bus in the primary only.
Its relay is woken after every commit of its own process; a secondary's commits would
wait for the slow poll. So:

    primary:    async with RelayWakeListener(path, bus.notify): ...
                # a UNIX datagram socket (0600) in the pool's private run directory;
                # every datagram received → one notify() (notify only sets an event)
    secondary:  waker = RelayWaker(path); waker.wake_soon()   # after each committed write
                # one datagram per turn of the event loop, however many writes it committed

`wake()` never blocks and never raises: with no primary listening (socket missing,
ECONNREFUSED) or its buffer full (EAGAIN) the datagram is dropped, and the relay's poll
still publishes the events. The payload means nothing.

Contract between the two sides: the socket is `relay-wake.sock` next to the pool's lock
file (`wake_socket_path`). Paths longer than a UNIX socket address allows (108 bytes)
are reached through the directory's `/proc/self/fd/<fd>/` alias.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

import structlog

log = structlog.get_logger("dialgate.mqtt.waker")

SOCKET_NAME = "relay-wake.sock"
_MAX_ADDRESS = 107  # sun_path is 108 bytes, NUL included
_DRAIN = 256  # datagrams read per readiness callback before yielding to the loop
# A secondary warns (once) when no primary has been listening this long: the relay then
# runs on its slow poll only, or not at all.
MISSING_WARN_AFTER_S = 60.0


def wake_socket_path(lock_path: str | os.PathLike[str]) -> Path:
    """The wake socket of the pool whose primary lock file is `lock_path`."""
    return Path(lock_path).with_name(SOCKET_NAME)


class _Address:
    """`path` as a bindable/connectable address, short enough for sun_path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._dir_fd: int | None = None
        self.address = str(path)
        if len(os.fsencode(path)) > _MAX_ADDRESS:
            try:
                self._dir_fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                return  # no such directory: binding or sending then fails as any OSError
            self.address = f"/proc/self/fd/{self._dir_fd}/{path.name}"

    def close(self) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None


class RelayWakeListener:
    """The primary's side: `notify()` once per datagram received on `path`.

    Read by the event loop's own reader callback (no thread). A socket file left by a
    crashed primary is replaced; the socket is removed on exit.
    """

    def __init__(self, path: Path, notify: Callable[[], None]) -> None:
        self.path = path
        self.notify = notify
        self.received = 0
        self._sock: socket.socket | None = None
        self._address: _Address | None = None
        self._inode: int | None = None

    async def __aenter__(self) -> Self:
        address = _Address(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            with contextlib.suppress(FileNotFoundError):
                # Only the primary (the pool lock's holder) binds here: whatever is at
                # the path was left by a primary that died.
                os.unlink(address.address)
            sock.bind(address.address)
            # The run directory is already private (0700); the socket is too.
            os.chmod(address.address, 0o600)
            self._inode = os.stat(address.address).st_ino
            asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
        except BaseException:
            sock.close()
            address.close()
            raise
        self._sock, self._address = sock, address
        log.debug("mqtt.wake_listener_started", socket=str(self.path))
        return self

    def _readable(self) -> None:
        assert self._sock is not None
        for _ in range(_DRAIN):
            try:
                self._sock.recv(1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # pragma: no cover - a datagram socket has no peer errors
                log.warning("mqtt.wake_listener_error", error=str(exc))
                return
            self.received += 1
            self.notify()

    async def __aexit__(self, *exc: object) -> None:
        sock, address = self._sock, self._address
        self._sock = self._address = None
        if sock is None or address is None:
            return
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()
        try:
            # Remove it only if it is still ours.
            if os.stat(address.address).st_ino == self._inode:
                os.unlink(address.address)
        except FileNotFoundError:
            pass
        finally:
            address.close()


class RelayWaker:
    """A secondary's side: `wake()` sends one datagram, or drops it, never waiting."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.sent = 0
        self.dropped = 0
        self._clock = clock
        self._address = _Address(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._missing_since: float | None = None
        self._warned = False
        self._soon = False

    def wake_soon(self) -> None:
        """`wake()` at the end of this turn of the event loop, once however often it is
        asked for meanwhile: a SQLite group commit settles its members in one turn, and
        the relay needs one wake-up for all of them (each datagram costs the primary a
        loop wake-up of its own)."""
        if not self._soon:
            self._soon = True
            asyncio.get_running_loop().call_soon(self._wake_now)

    def _wake_now(self) -> None:
        self._soon = False
        self.wake()

    def wake(self) -> None:
        try:
            self._sock.sendto(b"!", self._address.address)
        except OSError as exc:
            self.dropped += 1
            # ENOENT / ECONNREFUSED: no primary listening (starting, restarting, gone);
            # EAGAIN: its buffer is full, i.e. it has plenty of wake-ups pending.
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
                self._note_missing()
            return
        self.sent += 1
        self._missing_since = None

    def _note_missing(self) -> None:
        now = self._clock()
        if self._missing_since is None:
            self._missing_since = now
        elif not self._warned and now - self._missing_since >= MISSING_WARN_AFTER_S:
            self._warned = True  # once per process: never a line per dial
            log.warning("mqtt.wake_socket_missing", socket=str(self.path),
                        missing_for_s=round(now - self._missing_since),
                        detail="no primary worker listens: events of this worker reach MQTT "
                               "at the relay's next poll only")

    def close(self) -> None:
        self._sock.close()
        self._address.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["MISSING_WARN_AFTER_S", "RelayWakeListener", "RelayWaker", "wake_socket_path"]
