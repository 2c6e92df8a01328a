"""The outbox relay against a real Mosquitto, including a 10 s broker outage."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

import pytest

from adapters.mqtt.bus import MqttEventBus
from adapters.mqtt.config import load_mqtt_config
from tests.support.outbox import InMemoryOutboxSource
from tests.integration.mqtt.helpers import Collector

pytestmark = pytest.mark.mosquitto

EVENTS = "dialgate/v1/+/events/#"


def _config(broker, client_id, **extra):
    raw = {"url": broker.url, "client_id": client_id, "reconnect_min": 0.1, "reconnect_max": 1.0}
    raw.update(extra)
    return load_mqtt_config(raw)


def _first_seen_order(messages) -> dict[str, list[int]]:
    """Per case, the sequence numbers in the order each was FIRST received."""
    seen: set[str] = set()
    order: dict[str, list[int]] = defaultdict(list)
    for m in messages:
        doc = m.json()
        if doc["event_id"] in seen:
            continue
        seen.add(doc["event_id"])
        order[doc["case_id"]].append(doc["case_seq"])
    return order


async def test_each_committed_event_is_published_on_its_creditor_and_type_topic(broker, client_id):
    outbox = InMemoryOutboxSource()
    async with Collector(broker.port, [EVENTS], client_id + "-sub") as sub:
        async with MqttEventBus(_config(broker, client_id), outbox) as bus:
            outbox.on_commit(bus.notify)
            allowed = outbox.append("dial.allowed", "bank-a", "C-1", {"decision_id": "d1"})
            blocked = outbox.append("dial.blocked", "bank-b", "C-2", {"rule_id": "window.night"})
            await sub.wait_until(lambda ms: len(ms) >= 2, timeout=15)
            await asyncio.wait_for(outbox.wait_all_sent(), 15)
    by_topic = {m.topic: m.json() for m in sub.messages}
    assert by_topic["dialgate/v1/bank-a/events/dial.allowed"]["event_id"] == allowed.event_id
    assert by_topic["dialgate/v1/bank-b/events/dial.blocked"]["event_id"] == blocked.event_id
    assert by_topic["dialgate/v1/bank-b/events/dial.blocked"]["rule_id"] == "window.night"
    assert outbox.unsent_count == 0


async def test_events_committed_while_the_broker_is_down_are_delivered_after_it_returns(
    broker, client_id
):
    outbox = InMemoryOutboxSource()
    async with Collector(broker.port, [EVENTS], client_id + "-sub") as sub:
        async with MqttEventBus(_config(broker, client_id), outbox) as bus:
            outbox.on_commit(bus.notify)
            assert await bus.connection.wait_connected(15)
            broker.stop()
            event = outbox.append("case.updated", "bank-a", "C-9", {"status": "paused"})
            assert outbox.unsent_count == 1  # nothing marked sent without a PUBACK
            broker.start()
            await sub.wait_until(lambda ms: len(ms) >= 1, timeout=30)
            await asyncio.wait_for(outbox.wait_all_sent(), 15)
    assert sub.messages[0].json()["event_id"] == event.event_id
    assert bus.connection.connects >= 2


@pytest.mark.slow
async def test_a_ten_second_broker_outage_amid_1000_events_loses_none_and_keeps_case_order(
    broker, client_id
):
    outbox = InMemoryOutboxSource()
    cases = [f"C-{i:03d}" for i in range(40)]
    total = 1000
    async with Collector(broker.port, [EVENTS], client_id + "-sub") as sub:
        async with MqttEventBus(_config(broker, client_id), outbox) as bus:
            outbox.on_commit(bus.notify)
            assert await bus.connection.wait_connected(15)

            async def produce() -> None:
                # A steady stream of commits (load, not synchronisation): ~500 events/s.
                for i in range(total):
                    outbox.append("attempt.state", "bank-a", cases[i % len(cases)], {"n": i})
                    if i % 10 == 9:
                        await asyncio.sleep(0.02)

            producer = asyncio.create_task(produce())
            await sub.wait_until(lambda ms: len(ms) >= 300, timeout=30)
            broker.stop()
            published_before = bus.relay.published
            await asyncio.sleep(10)  # the outage the issue asks for
            assert not bus.connected
            broker.start()
            await producer
            ids = {e.event_id for e in outbox.events}
            await sub.wait_until(
                lambda ms: ids <= {json.loads(m.payload)["event_id"] for m in ms}, timeout=60
            )
            await asyncio.wait_for(outbox.wait_all_sent(), 15)

    assert published_before < total, "the outage must hit in the middle of the stream"
    assert bus.connection.connects >= 2
    received = {m.json()["event_id"] for m in sub.messages}
    assert received == ids and len(ids) == total
    for case, sequences in _first_seen_order(sub.messages).items():
        assert sequences == sorted(sequences), f"case {case} out of order"
        assert sequences == list(range(1, len(sequences) + 1))
    assert sub.connects >= 2  # the subscriber rode through the restart too
