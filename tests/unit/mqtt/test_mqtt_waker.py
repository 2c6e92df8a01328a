"""The relay wake socket of a worker pool (adapters/mqtt/waker.py): a secondary's commits
wake the primary's relay; without a primary the datagrams are dropped, never raised."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from adapters.mqtt import waker as waker_module
from adapters.mqtt.bridge import open_mqtt_waker
from tests.support.outbox import InMemoryOutboxSource
from adapters.mqtt.ports import OutboxEvent
from adapters.mqtt.relay import OutboxRelay
from adapters.mqtt.waker import MISSING_WARN_AFTER_S, RelayWaker, RelayWakeListener, wake_socket_path
from dialer.config import build_config
from tests.conftest import captured_logs


class Counted:
    """A notify target that lets the test wait for the n-th call."""

    def __init__(self) -> None:
        self.calls = 0
        self._changed = asyncio.Event()

    def __call__(self) -> None:
        self.calls += 1
        self._changed.set()

    async def until(self, n: int, timeout: float = 5.0) -> None:
        async def loop() -> None:
            while self.calls < n:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)


def _pool_dir(tmp_path: Path) -> Path:
    run = tmp_path / ".serve-pool-x"
    run.mkdir(mode=0o700)
    return run


async def test_each_datagram_from_a_secondary_is_one_notify_of_the_primary(tmp_path: Path) -> None:
    path = wake_socket_path(_pool_dir(tmp_path) / "primary.lock")
    notify = Counted()
    async with RelayWakeListener(path, notify) as listener:
        with RelayWaker(path) as waker:
            for _ in range(7):
                waker.wake()
            await notify.until(7)
            assert (waker.sent, waker.dropped) == (7, 0)
        assert listener.received == notify.calls == 7


async def test_wakes_asked_for_in_one_turn_of_the_event_loop_send_one_datagram(tmp_path: Path) -> None:
    path = wake_socket_path(_pool_dir(tmp_path) / "primary.lock")
    notify = Counted()
    async with RelayWakeListener(path, notify) as listener:
        with RelayWaker(path) as waker:
            for _ in range(20):  # say, the twenty members of one group commit
                waker.wake_soon()
            assert waker.sent == 0  # not yet: at the end of this turn
            await notify.until(1)
            for _ in range(3):  # a later turn: another one
                waker.wake_soon()
            await notify.until(2)
            assert (waker.sent, waker.dropped) == (2, 0)
        assert listener.received == notify.calls == 2


class _Publisher:
    def __init__(self) -> None:
        self.published: list[bytes] = []
        self.changed = asyncio.Event()

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, properties: Any = None) -> None:
        self.published.append(payload)
        self.changed.set()


class _WatchedSource(InMemoryOutboxSource):
    def __init__(self) -> None:
        super().__init__()
        self.fetched = asyncio.Event()

    async def fetch_unsent(self, limit: int) -> Sequence[OutboxEvent]:
        out = await super().fetch_unsent(limit)
        self.fetched.set()
        return out


async def test_a_datagram_makes_an_idle_relay_publish_what_another_process_committed(tmp_path: Path) -> None:
    path = wake_socket_path(_pool_dir(tmp_path) / "primary.lock")
    source, broker = _WatchedSource(), _Publisher()
    relay = OutboxRelay(source, broker, poll_interval_s=3600)  # the poll never comes in this test
    task = asyncio.create_task(relay.run())
    try:
        async with RelayWakeListener(path, relay.notify):
            await asyncio.wait_for(source.fetched.wait(), 5)  # first look done: now idle
            event = source.append("dial.allowed", "bank-a", "C-9")  # nobody tells the relay
            with RelayWaker(path) as waker:
                waker.wake()
            await asyncio.wait_for(broker.changed.wait(), 5)
            assert broker.published == [event.payload]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_the_socket_is_private_to_its_owner_and_removed_at_shutdown(tmp_path: Path) -> None:
    run = _pool_dir(tmp_path)
    path = wake_socket_path(run / "primary.lock")
    assert path.parent == run
    async with RelayWakeListener(path, Counted()):
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert not path.exists()


async def test_a_socket_left_by_a_crashed_primary_is_replaced(tmp_path: Path) -> None:
    path = wake_socket_path(_pool_dir(tmp_path) / "primary.lock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody reads it: what SIGKILL leaves behind
    notify = Counted()
    async with RelayWakeListener(path, notify):
        with RelayWaker(path) as waker:
            waker.wake()
        await notify.until(1)
    assert not path.exists()


def test_wakes_are_dropped_silently_when_no_primary_listens(tmp_path: Path) -> None:
    path = wake_socket_path(_pool_dir(tmp_path) / "primary.lock")
    with captured_logs(waker_module) as logs, RelayWaker(path) as waker:
        waker.wake()  # no socket file (ENOENT)
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        dead.bind(str(path))
        dead.close()
        waker.wake()  # a file nobody reads (ECONNREFUSED)
        assert (waker.sent, waker.dropped) == (0, 2)
    assert logs == []


def test_a_full_primary_buffer_drops_the_wake_instead_of_blocking(tmp_path: Path) -> None:
    path = wake_socket_path(_pool_dir(tmp_path) / "primary.lock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as stuck, RelayWaker(path) as waker:
        stuck.bind(str(path))  # a primary that does not read
        for _ in range(100_000):
            waker.wake()
            if waker.dropped:
                break
        assert waker.dropped == 1 and waker.sent > 0
        stuck.setblocking(False)
        queued = 0
        while True:
            try:
                stuck.recv(16)
            except BlockingIOError:
                break
            queued += 1
        assert queued == waker.sent


def test_a_long_missing_primary_is_warned_about_once_per_process(tmp_path: Path) -> None:
    path = wake_socket_path(_pool_dir(tmp_path) / "primary.lock")
    now = [1000.0]
    with captured_logs(waker_module) as logs, RelayWaker(path, clock=lambda: now[0]) as waker:
        for _ in range(50):
            waker.wake()
            now[0] += MISSING_WARN_AFTER_S / 10
    assert [e["event"] for e in logs] == ["mqtt.wake_socket_missing"]
    assert logs[0]["log_level"] == "warning"


async def test_a_run_directory_path_too_long_for_a_socket_address_still_works(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = wake_socket_path(_pool_dir(deep) / "primary.lock")
    assert len(os.fsencode(path)) > 108
    notify = Counted()
    async with RelayWakeListener(path, notify):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with RelayWaker(path) as waker:
            waker.wake()
        await notify.until(1)
    assert not path.exists()


class _Store:
    """Just the `write()` unit of work and the `on_commit` listeners the waker uses."""

    is_postgres = False

    def __init__(self) -> None:
        self.committed = 0
        self.listeners: list[Any] = []

    @asynccontextmanager
    async def write(self) -> AsyncIterator[None]:
        yield None
        self.committed += 1
        for listener in self.listeners:
            listener()

    def on_commit(self, listener: Any) -> Any:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)


def _services(role: str, mqtt: dict[str, Any] | None) -> SimpleNamespace:
    return SimpleNamespace(role=role, store=_Store(),
                           config=build_config({"mqtt": mqtt} if mqtt is not None else {}))


async def test_a_secondary_wakes_the_primary_after_each_commit_and_not_after_a_rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = _pool_dir(tmp_path) / "primary.lock"
    monkeypatch.setenv("DIALGATE_POOL_LOCK", str(lock))
    services = _services("secondary", {"url": "mqtt://127.0.0.1:1"})
    notify = Counted()
    async with RelayWakeListener(wake_socket_path(lock), notify) as listener:
        async with open_mqtt_waker(services) as waker:
            assert waker is not None
            with pytest.raises(RuntimeError):
                async with services.store.write():
                    raise RuntimeError("rolled back")
            async with services.store.write():
                pass
            await notify.until(1)
            assert listener.received == 1  # the rolled-back write sent nothing before it
        async with services.store.write():  # after shutdown nothing listens to the store
            pass
    assert services.store.committed == 2 and listener.received == 1 and services.store.listeners == []


@pytest.mark.parametrize(("role", "pool", "mqtt"), [
    ("primary", True, {"url": "mqtt://127.0.0.1:1"}),  # the primary wakes its relay itself
    ("secondary", False, {"url": "mqtt://127.0.0.1:1"}),  # not a pool
    ("secondary", True, None),  # no MQTT
])
async def test_the_waker_does_nothing_outside_a_secondary_of_a_pool_with_mqtt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, role: str, pool: bool, mqtt: dict[str, Any] | None
) -> None:
    if pool:
        monkeypatch.setenv("DIALGATE_POOL_LOCK", str(_pool_dir(tmp_path) / "primary.lock"))
    else:
        monkeypatch.delenv("DIALGATE_POOL_LOCK", raising=False)
    services = _services(role, mqtt)
    async with open_mqtt_waker(services) as waker:
        assert waker is None
        assert services.store.listeners == []


def test_a_secondary_whose_long_run_directory_is_gone_drops_its_wakes(tmp_path: Path) -> None:
    path = wake_socket_path(tmp_path / ("g" * 120) / "primary.lock")  # never created
    with RelayWaker(path) as waker:
        waker.wake()
        assert (waker.sent, waker.dropped) == (0, 1)
