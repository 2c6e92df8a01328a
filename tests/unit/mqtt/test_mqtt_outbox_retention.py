"""Retention of published outbox rows: the `[mqtt] published_retention_days` key, and
when and how the relay prunes (an in-memory outbox that can prune, a fake monotonic
clock; the real deletes on SQLite and PostgreSQL are in
tests/integration/mqtt/test_outbox_retention.py)."""

from __future__ import annotations

import asyncio
import random

import pytest

import adapters.mqtt.relay as relay_module
from adapters.mqtt.backoff import Backoff
from adapters.mqtt.config import load_mqtt_config
from adapters.mqtt.errors import MqttConfigError
from tests.support.outbox import InMemoryOutboxSource
from adapters.mqtt.relay import OutboxRelay
from dialer.errors import StoreUnavailable
from tests.conftest import captured_logs
from tests.unit.mqtt.test_mqtt_relay import ScriptedBroker

URL = "mqtt://127.0.0.1:1883"
KEY = "mqtt.published_retention_days"


# -- the config key ----------------------------------------------------------------


def test_published_rows_are_kept_seven_days_unless_configured():
    assert load_mqtt_config({"url": URL}).published_retention_days == 7
    assert load_mqtt_config({"url": URL, "published_retention_days": 30}).published_retention_days == 30
    assert load_mqtt_config({"url": URL, "published_retention_days": 1}).published_retention_days == 1


@pytest.mark.parametrize(
    "value, words",
    [
        (0, "between 1 and 3650"),
        (-7, "between 1 and 3650"),
        (3651, "between 1 and 3650"),
        ("7", "must be an integer"),
        (7.5, "must be an integer"),
        (True, "must be an integer"),
        ([7], "must be an integer"),
    ],
)
def test_a_bad_retention_is_refused_naming_the_key(value, words):
    with pytest.raises(MqttConfigError, match=words) as err:
        load_mqtt_config({"url": URL, "published_retention_days": value})
    assert err.value.path == KEY
    assert KEY in str(err.value)


def test_a_bad_retention_is_refused_even_while_mqtt_is_off():
    with pytest.raises(MqttConfigError) as err:
        load_mqtt_config({"published_retention_days": 0})
    assert err.value.path == KEY


def test_the_retention_can_come_from_the_environment_and_a_bad_one_names_the_key():
    env = {"DIALGATE_MQTT_PUBLISHED_RETENTION_DAYS": "14"}
    assert load_mqtt_config({"url": URL}, environ=env).published_retention_days == 14
    with pytest.raises(MqttConfigError) as err:
        load_mqtt_config({"url": URL}, environ={"DIALGATE_MQTT_PUBLISHED_RETENTION_DAYS": "a week"})
    assert err.value.path == KEY and "DIALGATE_MQTT_PUBLISHED_RETENTION_DAYS" in str(err.value)


# -- the relay's schedule --------------------------------------------------------


class PrunableOutbox(InMemoryOutboxSource):
    """The in-memory outbox plus `expired` published rows that `prune_published` deletes
    (as many as asked, at most); it can be told to fail."""

    def __init__(self, expired: int = 0) -> None:
        super().__init__()
        self.expired = expired
        self.deletes: list[int] = []  # rows removed, per call (= per transaction)
        self.fail_next = 0

    async def prune_published(self, limit: int) -> int:
        if self.fail_next:
            self.fail_next -= 1
            raise StoreUnavailable("store error: OperationalError: database is locked")
        removed = min(limit, self.expired)
        self.expired -= removed
        self.deletes.append(removed)
        return removed


class FakeMonotonic:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _relay(outbox, broker, clock, **kw) -> OutboxRelay:
    kw.setdefault("backoff", Backoff(base=0.01, cap=0.02, floor=0.001, rng=random.Random(0)))
    kw.setdefault("poll_interval_s", 0.01)
    kw.setdefault("prune_first_after_s", 30)
    kw.setdefault("prune_every_s", 300)
    return OutboxRelay(outbox, broker, monotonic=clock, **kw)


async def _publish_one(outbox: InMemoryOutboxSource, relay: OutboxRelay) -> None:
    """One more event through the running relay: proves its loop turned meanwhile."""
    outbox.append("case.updated", "bank-a", "C-1")
    relay.notify()
    async with asyncio.timeout(5):
        await relay.wait_published(len(outbox.events))


async def _running(relay: OutboxRelay) -> asyncio.Task[None]:
    return asyncio.create_task(relay.run())


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_first_prune_runs_shortly_after_start_then_at_most_every_interval():
    outbox, clock = PrunableOutbox(expired=10), FakeMonotonic()
    relay = _relay(outbox, ScriptedBroker(), clock)
    task = await _running(relay)
    try:
        await _publish_one(outbox, relay)
        assert outbox.deletes == [] and outbox.expired == 10  # not yet: 0 s of 30

        clock.t += 30
        async with asyncio.timeout(5):
            await relay.wait_prune_passes(1)
        assert outbox.expired == 0 and relay.pruned == 10

        outbox.expired = 5  # more rows expire meanwhile
        clock.t += 299
        await _publish_one(outbox, relay)
        await _publish_one(outbox, relay)
        assert relay.prune_passes == 1 and outbox.expired == 5  # 299 s of 300

        clock.t += 1
        async with asyncio.timeout(5):
            await relay.wait_prune_passes(2)
        assert outbox.expired == 0 and relay.pruned == 15
    finally:
        await _stop(task)


async def test_a_backlog_larger_than_a_batch_goes_one_bounded_transaction_at_a_time_between_publishes():
    outbox, clock = PrunableOutbox(expired=2_500), FakeMonotonic()
    relay = _relay(outbox, ScriptedBroker(), clock, prune_batch=1_000, prune_first_after_s=0)
    for i in range(5):
        outbox.append("case.updated", "bank-a", f"C-{i}")
    with captured_logs(relay_module) as logs:
        task = await _running(relay)
        try:
            async with asyncio.timeout(5):
                await relay.wait_prune_passes(1)
                await relay.wait_published(5)
        finally:
            await _stop(task)
    assert outbox.deletes == [1_000, 1_000, 500]
    assert outbox.expired == 0
    pruned = [e for e in logs if e["event"] == "mqtt.relay.pruned"]
    assert len(pruned) == 1  # one line per pass, with what it removed
    assert pruned[0]["log_level"] == "info"
    assert (pruned[0]["removed"], pruned[0]["transactions"]) == (2_500, 3)


async def test_a_pass_with_nothing_to_delete_logs_nothing():
    outbox, clock = PrunableOutbox(expired=0), FakeMonotonic()
    relay = _relay(outbox, ScriptedBroker(), clock, prune_first_after_s=0)
    with captured_logs(relay_module) as logs:
        task = await _running(relay)
        try:
            async with asyncio.timeout(5):
                await relay.wait_prune_passes(1)
        finally:
            await _stop(task)
    assert outbox.deletes == [0]
    assert not [e for e in logs if e["event"].startswith("mqtt.relay.prune")]


async def test_a_failing_prune_is_logged_and_retried_at_the_next_pass_while_the_relay_keeps_publishing():
    outbox, clock = PrunableOutbox(expired=3), FakeMonotonic()
    outbox.fail_next = 1
    relay = _relay(outbox, ScriptedBroker(), clock, prune_first_after_s=0)
    with captured_logs(relay_module) as logs:
        task = await _running(relay)
        try:
            async with asyncio.timeout(5):
                await relay.wait_prune_passes(1)
            await _publish_one(outbox, relay)  # the relay lives on
            assert outbox.expired == 3 and relay.prune_failures == 1

            clock.t += 300
            async with asyncio.timeout(5):
                await relay.wait_prune_passes(2)
        finally:
            await _stop(task)
    assert outbox.expired == 0
    failed = [e for e in logs if e["event"] == "mqtt.relay.prune_failed"]
    assert len(failed) == 1 and failed[0]["log_level"] == "warning"
    assert "database is locked" in failed[0]["error"] and failed[0]["retry_in_s"] == 300


async def test_old_rows_are_pruned_while_the_broker_is_away():
    outbox, clock = PrunableOutbox(expired=4), FakeMonotonic()

    class AwayBroker(ScriptedBroker):
        connected = False

        async def wait_connected(self, timeout: float) -> bool:
            await asyncio.sleep(0)
            return False

    outbox.append("case.updated", "bank-a", "C-1")
    relay = _relay(outbox, AwayBroker(), clock, prune_first_after_s=0)
    task = await _running(relay)
    try:
        async with asyncio.timeout(5):
            await relay.wait_prune_passes(1)
    finally:
        await _stop(task)
    assert outbox.expired == 0 and outbox.unsent_count == 1


async def test_an_outbox_that_cannot_prune_is_relayed_as_before():
    outbox, clock = InMemoryOutboxSource(), FakeMonotonic()
    relay = _relay(outbox, ScriptedBroker(), clock, prune_first_after_s=0)
    task = await _running(relay)
    try:
        clock.t += 10_000
        await _publish_one(outbox, relay)
    finally:
        await _stop(task)
    assert relay.prune_passes == 0


def test_a_prune_batch_below_one_is_refused():
    with pytest.raises(ValueError, match="prune_batch"):
        OutboxRelay(InMemoryOutboxSource(), ScriptedBroker(), prune_batch=0)
