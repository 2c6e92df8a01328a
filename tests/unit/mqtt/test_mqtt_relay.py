"""The outbox relay with an in-memory outbox and a scripted publisher (no broker)."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from adapters.mqtt.backoff import Backoff
from adapters.mqtt.errors import BrokerUnavailable
from tests.support.outbox import InMemoryOutboxSource
from adapters.mqtt.relay import OutboxRelay
from tests.unit.mqtt.event_schemas import errors


class ScriptedBroker:
    """Publisher whose PUBACKs the test releases; can be 'down'."""

    def __init__(self, *, auto_ack: bool = True) -> None:
        self.auto_ack = auto_ack
        self.down = False
        self.fail_next: set[str] = set()  # event ids whose next publish fails
        self.started: list[str] = []  # event ids, in the order publishes began
        self.acked: list[tuple[str, bytes]] = []  # (topic, payload) in PUBACK order
        self.pending: dict[str, asyncio.Future[None]] = {}
        self.changed = asyncio.Event()

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, properties=None) -> None:
        assert qos == 1
        event_id = json.loads(payload).get("event_id", "")
        self.started.append(event_id)
        self.changed.set()
        if self.down or event_id in self.fail_next:
            self.fail_next.discard(event_id)
            raise BrokerUnavailable("down")
        if not self.auto_ack:
            fut = asyncio.get_running_loop().create_future()
            self.pending[event_id] = fut
            await fut
        self.acked.append((topic, payload))
        self.changed.set()

    def ack(self, event_id: str) -> None:
        self.pending.pop(event_id).set_result(None)

    async def until(self, predicate, timeout: float = 5.0) -> None:
        async def loop():
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout)


def _relay(outbox, broker, **kw):
    kw.setdefault("backoff", Backoff(base=0.01, cap=0.02, floor=0.001, rng=random.Random(0)))
    return OutboxRelay(outbox, broker, **kw)


async def test_an_event_is_marked_sent_only_once_the_broker_acknowledged_it():
    outbox, broker = InMemoryOutboxSource(), ScriptedBroker(auto_ack=False)
    event = outbox.append("dial.allowed", "bank-a", "C-1")
    batch = asyncio.create_task(_relay(outbox, broker).relay_batch())
    await broker.until(lambda: event.event_id in broker.pending)
    assert outbox.unsent_count == 1
    broker.ack(event.event_id)
    assert await batch == (1, True)
    assert outbox.unsent_count == 0


async def test_the_next_event_of_a_case_waits_for_the_previous_ones_puback_while_other_cases_go_ahead():
    outbox, broker = InMemoryOutboxSource(), ScriptedBroker(auto_ack=False)
    a1 = outbox.append("attempt.state", "bank-a", "C-A")
    a2 = outbox.append("attempt.state", "bank-a", "C-A")
    b1 = outbox.append("attempt.state", "bank-a", "C-B")
    batch = asyncio.create_task(_relay(outbox, broker).relay_batch())
    await broker.until(lambda: {a1.event_id, b1.event_id} <= set(broker.pending))
    broker.ack(b1.event_id)
    await broker.until(lambda: len(broker.acked) == 1)
    assert a2.event_id not in broker.started  # A1 not yet acknowledged
    broker.ack(a1.event_id)
    await broker.until(lambda: a2.event_id in broker.pending)
    broker.ack(a2.event_id)
    assert await batch == (3, True)
    assert broker.started.index(a2.event_id) > broker.started.index(a1.event_id)


async def test_a_failed_publish_stops_its_case_and_the_next_batch_resumes_from_it():
    outbox, broker = InMemoryOutboxSource(), ScriptedBroker()
    e1, e2, e3 = (outbox.append("attempt.state", "bank-a", "C-1", {"n": n}) for n in range(3))
    broker.fail_next.add(e2.event_id)
    relay = _relay(outbox, broker)
    assert await relay.relay_batch() == (1, False)
    assert e3.event_id not in broker.started
    assert [e.event_id for e in await outbox.fetch_unsent(10)] == [e2.event_id, e3.event_id]
    assert await relay.relay_batch() == (2, True)
    acked_ids = [json.loads(p)["event_id"] for _, p in broker.acked]
    assert acked_ids == [e1.event_id, e2.event_id, e3.event_id]


async def test_topics_are_per_creditor_and_event_type():
    outbox, broker = InMemoryOutboxSource(), ScriptedBroker()
    outbox.append("alert.complaint_risk", "bank-7", "C-1")
    await _relay(outbox, broker).relay_batch()
    assert broker.acked[0][0] == "dialgate/v1/bank-7/events/alert.complaint_risk"


async def test_the_relay_retries_until_the_broker_is_back_and_loses_nothing():
    outbox, broker = InMemoryOutboxSource(), ScriptedBroker()
    broker.down = True
    relay = _relay(outbox, broker, poll_interval_s=3600)
    task = asyncio.create_task(relay.run())
    events = [outbox.append("case.updated", "bank-a", f"C-{i % 3}") for i in range(9)]
    await broker.until(lambda: len(broker.started) >= 3)  # it keeps trying
    broker.down = False
    await asyncio.wait_for(outbox.wait_all_sent(), 5)
    task.cancel()
    assert relay.failures >= 1
    assert {json.loads(p)["event_id"] for _, p in broker.acked} == {e.event_id for e in events}


async def test_notify_wakes_the_relay_long_before_the_slow_poll():
    class WatchedStore(InMemoryOutboxSource):
        def __init__(self):
            super().__init__()
            self.found_nothing = asyncio.Event()

        async def fetch_unsent(self, limit):
            found = await super().fetch_unsent(limit)
            if not found:
                self.found_nothing.set()
            return found

    outbox, broker = WatchedStore(), ScriptedBroker()
    relay = _relay(outbox, broker, poll_interval_s=3600)
    outbox.on_commit(relay.notify)
    task = asyncio.create_task(relay.run())
    await asyncio.wait_for(outbox.found_nothing.wait(), 5)  # now idle until woken
    event = outbox.append("outcome.logged", "bank-a", "C-1")
    await broker.until(lambda: len(broker.acked) == 1, timeout=5)
    task.cancel()
    assert json.loads(broker.acked[0][1])["event_id"] == event.event_id


async def test_a_failing_store_does_not_stop_the_relay():
    class FlakyStore(InMemoryOutboxSource):
        fails = 2

        async def fetch_unsent(self, limit):
            if self.fails:
                self.fails -= 1
                raise OSError("database is locked")
            return await super().fetch_unsent(limit)

    outbox, broker = FlakyStore(), ScriptedBroker()
    event = outbox.append("dial.blocked", "bank-a", "C-1")
    relay = _relay(outbox, broker, poll_interval_s=3600)
    task = asyncio.create_task(relay.run())
    await asyncio.wait_for(outbox.wait_all_sent(), 5)
    task.cancel()
    assert relay.failures == 2
    assert json.loads(broker.acked[0][1])["event_id"] == event.event_id


async def test_an_unmasked_mobile_number_never_leaves_in_clear():
    outbox, broker = InMemoryOutboxSource(), ScriptedBroker()
    outbox.append("dial.blocked", "bank-a", "C-1", {"number": "+8613800138000", "ref": "C13800138000"})
    await _relay(outbox, broker).relay_batch()
    doc = json.loads(broker.acked[0][1])
    assert (doc["number"], doc["ref"]) == ("138****8000", "C13800138000")


async def test_an_event_whose_creditor_cannot_be_a_topic_goes_to_the_dead_letter_topic():
    outbox, broker = InMemoryOutboxSource(), ScriptedBroker()
    event = outbox.append("dial.allowed", "bank/a#", "C-1")
    assert await _relay(outbox, broker).relay_batch() == (1, True)
    topic, payload = broker.acked[0]
    assert topic == "dialgate/v1/deadletter"
    doc = json.loads(payload)
    assert (doc["reason"], doc["event"]["event_id"]) == ("unpublishable-event", event.event_id)
    assert errors("deadletter.schema.json", doc) == []


async def test_stopping_mid_batch_still_marks_what_the_broker_acknowledged():
    outbox, broker = InMemoryOutboxSource(), ScriptedBroker(auto_ack=False)
    a = outbox.append("attempt.state", "bank-a", "C-A")
    b = outbox.append("attempt.state", "bank-a", "C-B")
    batch = asyncio.create_task(_relay(outbox, broker).relay_batch())
    await broker.until(lambda: {a.event_id, b.event_id} <= set(broker.pending))
    broker.ack(a.event_id)
    await broker.until(lambda: len(broker.acked) == 1)
    batch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await batch
    assert [e.event_id for e in await outbox.fetch_unsent(10)] == [b.event_id]


async def test_an_event_the_client_refuses_outright_is_dead_lettered_not_retried_forever():
    class RefusesBig(ScriptedBroker):
        async def publish(self, topic, payload, *, qos=1, properties=None):
            if len(payload) > 2000 and topic != "dialgate/v1/deadletter":
                raise ValueError("Payload too large.")
            await super().publish(topic, payload, qos=qos, properties=properties)

    outbox, broker = InMemoryOutboxSource(), RefusesBig()
    big = outbox.append("case.updated", "bank-a", "C-1", {"note": "x" * 3000})
    after = outbox.append("case.updated", "bank-a", "C-1", {"note": "small"})
    assert await _relay(outbox, broker).relay_batch() == (2, True)
    topics = [t for t, _ in broker.acked]
    assert topics == ["dialgate/v1/deadletter", "dialgate/v1/bank-a/events/case.updated"]
    letter = json.loads(broker.acked[0][1])
    assert (letter["event"]["event_id"], letter["reason"]) == (big.event_id, "unpublishable-event")
    assert json.loads(broker.acked[1][1])["event_id"] == after.event_id


async def test_an_unexpected_publisher_error_stops_the_batch_without_losing_the_event():
    class Buggy(ScriptedBroker):
        async def publish(self, topic, payload, *, qos=1, properties=None):
            raise RuntimeError("library bug")

    outbox, broker = InMemoryOutboxSource(), Buggy()
    outbox.append("case.updated", "bank-a", "C-1")
    assert await _relay(outbox, broker).relay_batch() == (0, False)
    assert outbox.unsent_count == 1
