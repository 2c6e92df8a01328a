"""Dial commands and PBX events arriving through a real Mosquitto."""

from __future__ import annotations

import json
import uuid

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.mqtt.bus import MqttEventBus
from adapters.mqtt.config import load_mqtt_config
from tests.support.outbox import InMemoryOutboxSource
from tests.integration.mqtt.fakes import FakeAttempts, FakeDialService
from tests.integration.mqtt.helpers import Collector, publish_once

pytestmark = pytest.mark.mosquitto

DIAL = "dialgate/v1/commands/dial"
DEADLETTER = "dialgate/v1/deadletter"


def _config(broker, client_id, **extra):
    raw = {"url": broker.url, "client_id": client_id, "reconnect_min": 0.1, "reconnect_max": 1.0}
    raw.update(extra)
    return load_mqtt_config(raw)


def _dial_service() -> FakeDialService:
    return FakeDialService(
        tokens={"tok-alice": {"bank-a"}},
        cases={"C-100": "bank-a", "C-200": "bank-b"},
    )


def _attempts() -> FakeAttempts:
    return FakeAttempts(
        by_call_id={
            "call-1@pbx": {"creditor": "bank-a", "state": "ringing"},
            "call-2@pbx": {"creditor": "bank-a", "state": "ringing"},
        }
    )


async def test_a_v5_dial_command_is_answered_on_its_response_topic_with_its_correlation_data(
    broker, client_id
):
    service = _dial_service()
    reply_topic = f"dialgate/v1/replies/desk-{uuid.uuid4().hex[:8]}"
    async with MqttEventBus(_config(broker, client_id), InMemoryOutboxSource(), service) as bus:
        assert await bus.connection.wait_connected(15)
        async with Collector(broker.port, [reply_topic], client_id + "-desk") as desk:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = reply_topic
            props.CorrelationData = b"req-7f3a"
            body = {"token": "tok-alice", "case_id": "C-100", "number": "+8613800000001"}
            await publish_once(broker.port, DIAL, json.dumps(body).encode(), properties=props)
            await desk.wait_until(lambda ms: len(ms) >= 1, timeout=15)
    reply = desk.messages[0]
    assert reply.properties.CorrelationData == b"req-7f3a"
    assert reply.json() == {
        "status": 201,
        "body": {"allowed": True, "case_id": "C-100", "channel": "mqtt"},
    }
    assert service.dials[0].token == "tok-alice"
    assert service.dials[0].request == {"case_id": "C-100", "number": "+8613800000001"}


async def test_a_v311_dial_command_is_answered_on_its_reply_to_topic_with_its_correlation_id(
    broker, client_id
):
    service = _dial_service()
    reply_topic = f"desk/{uuid.uuid4().hex[:8]}/replies"
    async with MqttEventBus(_config(broker, client_id), InMemoryOutboxSource(), service) as bus:
        assert await bus.connection.wait_connected(15)
        async with Collector(broker.port, [reply_topic], client_id + "-desk") as desk:
            body = {
                "token": "tok-alice",
                "case_id": "C-100",
                "number": "+8613800000001",
                "reply_to": reply_topic,
                "correlation_id": "c-42",
            }
            await publish_once(
                broker.port,
                DIAL,
                json.dumps(body).encode(),
                protocol=aiomqtt.ProtocolVersion.V311,
            )
            await desk.wait_until(lambda ms: len(ms) >= 1, timeout=15)
    assert desk.messages[0].json() == {
        "status": 201,
        "body": {"allowed": True, "case_id": "C-100", "channel": "mqtt"},
        "correlation_id": "c-42",
    }


async def test_pbx_events_reach_their_attempt_in_order(broker, client_id):
    attempts = _attempts()
    async with MqttEventBus(
        _config(broker, client_id), InMemoryOutboxSource(), pbx_handler=attempts
    ) as bus:
        assert await bus.connection.wait_connected(15)
        async with Collector(broker.port, [DEADLETTER], client_id + "-dl") as dl:
            topic = "dialgate/v1/pbx/pbx-east/events"
            for doc in (
                {"event": "answered", "call_id": "call-1@pbx", "at": "2026-11-23T10:00:03+08:00"},
                {"event": "hangup", "call_id": "call-1@pbx", "cause": "normal_clearing",
                 "duration_s": 62.5},
                {"event": "recording_ready", "call_id": "call-1@pbx",
                 "recording_path": "/var/spool/rec/call-1.wav"},
                # The last one is unmatched: when it is dead-lettered all before it are done.
                {"event": "answered", "call_id": "nobody@pbx"},
            ):  # fmt: skip
                await publish_once(broker.port, topic, json.dumps(doc).encode())
            await dl.wait_until(lambda ms: len(ms) >= 1, timeout=15)
    assert [e.kind for e in attempts.seen] == ["answered", "hangup", "recording_ready"]
    assert {e.pbx_id for e in attempts.seen} == {"pbx-east"}
    assert attempts.by_call_id["call-1@pbx"] == {
        "creditor": "bank-a",
        "state": "ended",
        "cause": "normal_clearing",
        "duration_s": 62.5,
        "recording": "/var/spool/rec/call-1.wav",
    }
    assert dl.messages[0].json()["reason"] == "unmatched"


async def test_garbage_and_wrong_creditor_messages_are_dead_lettered_and_the_consumer_keeps_running(
    broker, client_id
):
    service, attempts = _dial_service(), _attempts()
    reply_topic = f"dialgate/v1/replies/desk-{uuid.uuid4().hex[:8]}"
    async with MqttEventBus(
        _config(broker, client_id), InMemoryOutboxSource(), service, attempts
    ) as bus:
        assert await bus.connection.wait_connected(15)
        async with Collector(
            broker.port, [DEADLETTER, reply_topic], client_id + "-watch"
        ) as watch:
            pbx = "dialgate/v1/pbx/pbx-east/events"
            await publish_once(broker.port, DIAL, b"\xff\xfe not json at all")
            await publish_once(broker.port, pbx, b"[1, 2, 3]")
            await publish_once(
                broker.port,
                DIAL,
                json.dumps(
                    {"token": "tok-alice", "case_id": "C-200", "number": "+8613912345678",
                     "reply_to": reply_topic}
                ).encode(),
            )  # fmt: skip
            await publish_once(
                broker.port,
                pbx,
                json.dumps({"event": "answered", "call_id": "call-2@pbx", "creditor": "bank-z"}).encode(),
            )
            await publish_once(
                broker.port,
                DIAL,
                json.dumps({"token": "forged", "case_id": "C-100", "reply_to": reply_topic}).encode(),
            )
            await watch.wait_until(lambda ms: len([m for m in ms if m.topic == DEADLETTER]) >= 5, 15)
            # Still alive: a good command afterwards is answered.
            await publish_once(
                broker.port,
                DIAL,
                json.dumps({"token": "tok-alice", "case_id": "C-100", "reply_to": reply_topic,
                            "correlation_id": "after"}).encode(),
            )  # fmt: skip
            await watch.wait_until(
                lambda ms: any(
                    m.topic == reply_topic and m.json().get("correlation_id") == "after" for m in ms
                ),
                15,
            )
        assert bus.connected

    letters = [m.json() for m in watch.on(DEADLETTER)]
    # Dial commands run concurrently, so dead letters may come in any order.
    assert sorted((d["topic"], d["reason"]) for d in letters) == sorted([
        (DIAL, "malformed"),
        (pbx, "malformed"),
        (DIAL, "wrong-creditor"),
        (pbx, "wrong-creditor"),
        (DIAL, "unauthorised"),
    ])
    assert all(d["message"] and d["message_zh"] for d in letters)
    raw = b"".join(m.payload for m in watch.on(DEADLETTER))
    assert b"tok-alice" not in raw and b"forged" not in raw  # tokens never echoed
    assert b"13912345678" not in raw and b"139****5678" in raw
    refusals = [m.json() for m in watch.on(reply_topic)][:2]
    assert [r["status"] for r in refusals] == [403, 403]
    assert attempts.by_call_id["call-2@pbx"]["state"] == "ringing"  # not applied
    assert [c.request["case_id"] for c in service.dials] == ["C-100"]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_commands_sent_while_the_service_is_down_are_received_when_it_returns(
    broker, client_id, protocol
):
    attempts = _attempts()
    config = _config(broker, client_id, protocol=protocol)
    async with MqttEventBus(config, InMemoryOutboxSource(), pbx_handler=attempts) as bus:
        assert await bus.connection.wait_connected(15)  # session and subscription exist now
    # The service is down; the PBX bridge goes on publishing.
    doc = {"event": "answered", "call_id": "call-1@pbx"}
    await publish_once(broker.port, "dialgate/v1/pbx/pbx-east/events", json.dumps(doc).encode())

    async with Collector(broker.port, [DEADLETTER], client_id + "-dl") as dl:
        async with MqttEventBus(config, InMemoryOutboxSource(), pbx_handler=attempts) as bus:
            assert await bus.connection.wait_connected(15)
            # A marker sent now is handled after the queued event (one session, in order).
            await publish_once(
                broker.port,
                "dialgate/v1/pbx/pbx-east/events",
                json.dumps({"event": "answered", "call_id": "marker@pbx"}).encode(),
            )
            await dl.wait_until(lambda ms: len(ms) >= 1, timeout=15)
    assert [e.call_id for e in attempts.seen] == ["call-1@pbx"]
    assert attempts.by_call_id["call-1@pbx"]["state"] == "connected"


async def test_subscriptions_are_renewed_after_a_broker_restart_that_forgot_the_session(
    broker, client_id
):
    service = _dial_service()
    reply_topic = f"dialgate/v1/replies/desk-{uuid.uuid4().hex[:8]}"
    async with MqttEventBus(_config(broker, client_id), InMemoryOutboxSource(), service) as bus:
        assert await bus.connection.wait_connected(15)
        broker.stop()
        broker.forget_sessions()
        broker.start()
        assert await bus.connection.wait_for_connects(2, timeout=15)
        async with Collector(broker.port, [reply_topic], client_id + "-desk") as desk:
            body = {"token": "tok-alice", "case_id": "C-100", "reply_to": reply_topic}
            await publish_once(broker.port, DIAL, json.dumps(body).encode())
            await desk.wait_until(lambda ms: len(ms) >= 1, timeout=15)
    assert desk.messages[0].json()["status"] == 201
