"""The inbound consumer with in-memory handlers and a recording publisher (no broker)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from aiomqtt import Message
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.mqtt.consumer import InboundConsumer, parse_pbx_event
from adapters.mqtt.errors import BrokerUnavailable, MalformedMessage
from adapters.mqtt.ports import DialCommand, DialReply, PbxEvent

DIAL = "dialgate/v1/commands/dial"
PBX = "dialgate/v1/pbx/pbx-1/events"
NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


class RecordingPublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict, Properties | None]] = []
        self.down = False

    async def publish(self, topic, payload, *, qos=1, properties=None):
        if self.down:
            raise BrokerUnavailable("down")
        self.sent.append((topic, json.loads(payload), properties))

    def on(self, topic):
        return [doc for t, doc, _ in self.sent if t == topic]


class Dialer:
    def __init__(self, fail: Exception | None = None) -> None:
        self.commands: list[DialCommand] = []
        self.fail = fail

    async def handle_dial(self, command):
        if self.fail:
            raise self.fail
        self.commands.append(command)
        return DialReply(200, {"allowed": False, "rule_id": "window.night"})


class Pbx:
    def __init__(self) -> None:
        self.events: list[PbxEvent] = []

    async def handle_pbx_event(self, event):
        self.events.append(event)


def _msg(topic, payload, properties=None):
    if not isinstance(payload, bytes):
        payload = json.dumps(payload).encode()
    return Message(topic, payload, 1, False, 1, properties)


async def _consume(consumer, *messages):
    for m in messages:
        await consumer.handle(m)
    await consumer.drain()


async def test_a_dial_command_reaches_the_handler_without_its_control_fields():
    pub, dialer = RecordingPublisher(), Dialer()
    consumer = InboundConsumer(pub, dialer, None)
    await _consume(
        consumer,
        _msg(DIAL, {"token": "t-1", "case_id": "C-1", "number": "+8613800000001",
                    "reply_to": "desk/1", "correlation_id": 9}),
    )  # fmt: skip
    assert dialer.commands[0].request == {"case_id": "C-1", "number": "+8613800000001"}
    assert dialer.commands[0].token == "t-1"
    assert "t-1" not in repr(dialer.commands[0])
    assert pub.on("desk/1") == [
        {"status": 200, "body": {"allowed": False, "rule_id": "window.night"}, "correlation_id": 9}
    ]


async def test_a_v5_reply_carries_the_correlation_data_and_ignores_reply_to():
    pub = RecordingPublisher()
    consumer = InboundConsumer(pub, Dialer(), None)
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "dialgate/v1/replies/desk-9"
    props.CorrelationData = b"\x00\x01corr"
    await _consume(consumer, _msg(DIAL, {"token": "t", "reply_to": "elsewhere"}, props))
    topic, doc, reply_props = pub.sent[0]
    assert topic == "dialgate/v1/replies/desk-9"
    assert reply_props.CorrelationData == b"\x00\x01corr"
    assert "correlation_id" not in doc


async def test_a_dial_command_without_a_token_is_refused_and_dead_lettered():
    pub, dialer = RecordingPublisher(), Dialer()
    consumer = InboundConsumer(pub, dialer, None, now=lambda: NOW)
    await _consume(consumer, _msg(DIAL, {"case_id": "C-1", "reply_to": "desk/1"}))
    assert dialer.commands == []
    assert pub.on("desk/1")[0]["status"] == 403
    letter = pub.on("dialgate/v1/deadletter")[0]
    assert (letter["reason"], letter["topic"], letter["received_at"]) == (
        "unauthorised", DIAL, NOW.isoformat()
    )
    assert letter["message_zh"] == "拨号指令缺少用户令牌"


async def test_a_reply_topic_on_our_event_tree_is_refused():
    pub, dialer = RecordingPublisher(), Dialer()
    consumer = InboundConsumer(pub, dialer, None)
    await _consume(
        consumer, _msg(DIAL, {"token": "t", "reply_to": "dialgate/v1/bank-a/events/dial.allowed"})
    )
    assert dialer.commands == []
    assert [t for t, _, _ in pub.sent] == ["dialgate/v1/deadletter"]
    assert pub.sent[0][1]["reason"] == "bad-reply-topic"


async def test_a_handler_crash_is_answered_500_dead_lettered_and_not_fatal():
    pub = RecordingPublisher()
    consumer = InboundConsumer(pub, Dialer(fail=RuntimeError("db gone")), Pbx())
    await _consume(
        consumer,
        _msg(DIAL, {"token": "t", "reply_to": "desk/1"}),
        _msg(PBX, {"event": "answered", "attempt_id": "a-1"}),
    )
    assert pub.on("desk/1")[0]["status"] == 500
    assert pub.on("dialgate/v1/deadletter")[0]["reason"] == "handler-failed"
    assert consumer.handled == 1  # the PBX event after it was handled


async def test_dead_letters_never_echo_a_token_even_from_a_payload_cut_short():
    pub = RecordingPublisher()
    consumer = InboundConsumer(pub, Dialer(), None)
    raw = b'{"token": "sk-live-abcdef", "note": "' + b"x" * 9000 + b'"'  # not valid JSON
    await _consume(consumer, _msg(DIAL, raw))
    letter = pub.on("dialgate/v1/deadletter")[0]
    assert letter["reason"] == "malformed"
    assert "sk-live-abcdef" not in json.dumps(letter)
    assert len(letter["payload_excerpt"]) <= 1024


async def test_dead_letters_never_echo_a_token_nested_in_the_command():
    pub = RecordingPublisher()
    consumer = InboundConsumer(pub, Dialer(), None)
    await _consume(consumer, _msg(DIAL, {"dial": {"token": "sk-live-nested", "case_id": 7}}))
    letter = pub.on("dialgate/v1/deadletter")[0]
    assert "sk-live-nested" not in json.dumps(letter)


async def test_dead_letters_mask_phone_card_and_id_numbers():
    pub = RecordingPublisher()
    consumer = InboundConsumer(pub, Dialer(), None)
    await _consume(
        consumer, _msg(DIAL, {"number": "13800138000", "card": "6222021234567890128", "id": "11010519491231002X"})
    )
    excerpt = pub.on("dialgate/v1/deadletter")[0]["payload_excerpt"]
    assert "138****8000" in excerpt and "***************0128" in excerpt and "**************002X" in excerpt
    assert "13800138000" not in excerpt and "6222021234567890128" not in excerpt


async def test_losing_the_broker_while_dead_lettering_is_logged_not_raised():
    pub = RecordingPublisher()
    pub.down = True
    consumer = InboundConsumer(pub, Dialer(), Pbx())
    await _consume(consumer, _msg(PBX, b"garbage"))
    assert consumer.deadlettered == 1


async def test_pbx_events_keep_pbx_id_and_all_fields():
    pub, pbx = RecordingPublisher(), Pbx()
    consumer = InboundConsumer(pub, None, pbx)
    await _consume(
        consumer,
        _msg(PBX, {"event": "hangup", "call_id": "abc@10.0.0.1", "cause": 486,
                   "duration_s": 0, "at": "2026-11-23T10:00:00+08:00"}),
    )  # fmt: skip
    e = pbx.events[0]
    assert (e.pbx_id, e.kind, e.call_id, e.cause, e.duration_s) == (
        "pbx-1", "hangup", "abc@10.0.0.1", "486", 0.0
    )
    assert e.occurred_at == datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


async def test_a_message_on_a_topic_without_a_handler_is_dead_lettered():
    pub = RecordingPublisher()
    consumer = InboundConsumer(pub, None, Pbx())
    await _consume(consumer, _msg(DIAL, {"token": "t"}))
    assert pub.on("dialgate/v1/deadletter")[0]["reason"] == "unknown-topic"


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"event": "ringing", "call_id": "c"}, "event"),
        ({"event": "answered"}, "call_id"),
        ({"event": "answered", "call_id": ""}, "call_id"),
        ({"event": "answered", "call_id": "c", "at": "2026-11-23T10:00:00"}, "at"),
        ({"event": "answered", "call_id": "c", "at": "yesterday"}, "at"),
        ({"event": "hangup", "call_id": "c", "duration_s": 3}, "cause"),
        ({"event": "hangup", "call_id": "c", "cause": "busy"}, "duration_s"),
        ({"event": "hangup", "call_id": "c", "cause": "busy", "duration_s": -1}, "duration_s"),
        ({"event": "hangup", "call_id": "c", "cause": "busy", "duration_s": True}, "duration_s"),
        ({"event": "recording_ready", "call_id": "c"}, "recording_path"),
        ({"event": "recording_ready", "call_id": "c", "recording_path": "/a",
          "recording_url": "https://r/a"}, "recording_path"),
        ({"event": "recording_ready", "call_id": "c", "recording_path": "rel/a.wav"},
         "recording_path"),
        ({"event": "recording_ready", "call_id": "c", "recording_url": "ftp://r/a"},
         "recording_url"),
    ],
)  # fmt: skip
def test_a_bad_pbx_event_is_refused_naming_the_field(doc, field):
    with pytest.raises(MalformedMessage) as err:
        parse_pbx_event(json.dumps(doc).encode(), "pbx-1", "m-1", lambda: NOW)
    assert err.value.details["field"] == field
    assert err.value.message and err.value.message_zh


def test_a_pbx_event_without_a_time_takes_the_clock():
    e = parse_pbx_event(b'{"event":"answered","attempt_id":"a-1"}', "pbx-1", "m", lambda: NOW)
    assert (e.occurred_at, e.attempt_id, e.call_id) == (NOW, "a-1", None)


async def test_a_dial_command_queued_too_long_is_refused_as_stale():
    pub, dialer = RecordingPublisher(), Dialer()
    consumer = InboundConsumer(pub, dialer, None, dial_max_age_s=120, now=lambda: NOW)
    await _consume(
        consumer,
        _msg(DIAL, {"token": "t", "reply_to": "desk/1", "requested_at": "2026-11-23T01:57:59+00:00"}),
        _msg(DIAL, {"token": "t", "reply_to": "desk/2", "requested_at": "2026-11-23T09:58:30+08:00"}),
    )
    assert pub.on("desk/1")[0]["status"] == 408
    assert pub.on("dialgate/v1/deadletter")[0]["reason"] == "stale"
    assert pub.on("desk/2")[0]["status"] == 200  # 90 s old: still fresh
    assert len(dialer.commands) == 1 and "requested_at" not in dialer.commands[0].request


async def test_a_requested_at_without_a_utc_offset_is_malformed():
    pub, dialer = RecordingPublisher(), Dialer()
    consumer = InboundConsumer(pub, dialer, None, now=lambda: NOW)
    await _consume(consumer, _msg(DIAL, {"token": "t", "requested_at": "2026-11-23T10:00:00"}))
    letter = pub.on("dialgate/v1/deadletter")[0]
    assert (letter["reason"], letter["details"]) == ("malformed", {"field": "requested_at"})
    assert dialer.commands == []


async def test_closing_lets_a_dial_command_in_progress_finish_and_answer():
    import asyncio

    release = asyncio.Event()

    class SlowDialer(Dialer):
        async def handle_dial(self, command):
            await release.wait()
            return await super().handle_dial(command)

    pub = RecordingPublisher()
    consumer = InboundConsumer(pub, SlowDialer(), None)
    await consumer.handle(_msg(DIAL, {"token": "t", "reply_to": "desk/1"}))
    closing = asyncio.create_task(consumer.aclose(grace_s=30))
    await asyncio.sleep(0)
    assert not closing.done()
    release.set()
    await asyncio.wait_for(closing, 5)
    assert pub.on("desk/1")[0]["status"] == 200


@pytest.mark.parametrize("topic", [DIAL, PBX])
async def test_a_payload_nested_too_deep_is_malformed_and_dead_lettered(topic):
    # json.loads raises RecursionError, not ValueError, on a payload nested this deep.
    pub, dialer, pbx = RecordingPublisher(), Dialer(), Pbx()
    consumer = InboundConsumer(pub, dialer, pbx)
    deep = b'{"token": "t", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    await consumer.handle(_msg(topic, deep))
    await consumer.drain()
    letters = pub.on("dialgate/v1/deadletter")
    assert [(letter["reason"], letter["message"]) for letter in letters] == [
        ("malformed", "payload JSON is nested too deep")
    ]
    assert dialer.commands == [] and pbx.events == []


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]", b"[" * 5000])
async def test_a_v5_dial_command_that_is_not_a_json_object_is_answered_400_on_its_response_topic(payload):
    pub = RecordingPublisher()
    consumer = InboundConsumer(pub, Dialer(), None)
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "dialgate/v1/replies/desk-9"
    props.CorrelationData = b"c-1"
    await _consume(consumer, _msg(DIAL, payload, props))
    reply = pub.on("dialgate/v1/replies/desk-9")
    assert [r["status"] for r in reply] == [400]
    assert reply[0]["error"]["type"] == "malformed"
    assert [p.CorrelationData for t, _, p in pub.sent if t == "dialgate/v1/replies/desk-9"] == [b"c-1"]
