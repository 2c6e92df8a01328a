"""schemas/events/v1 describe what the gate writes to its outbox and what it accepts."""

from __future__ import annotations

import json
import uuid

import pytest
from jsonschema import Draft202012Validator

from tests.unit.mqtt.event_schemas import ROOT, errors, event_errors


def _env(type_: str, **fields):
    return {
        "event_id": str(uuid.uuid4()),
        "type": type_,
        "occurred_at": "2026-11-24T02:00:00+00:00",
        "creditor": "bank-a",
        "case_id": "C-1",
        "case_seq": 3,
        **fields,
    }


DECISION = {
    "decision_id": "d-1",
    "agent_id": "col-a",
    "channel": "mqtt",
    "number": "138****0001",
    "next_allowed_at": None,
    "policy_version": "2026.11-1",
}

GOOD = [
    _env("dial.allowed", attempt_id="a-1", state="authorised",
         valid_until="2026-11-24T02:02:00+00:00", rule_id="allow", **DECISION),
    _env("dial.blocked", attempt_id=None, state=None, valid_until=None,
         rule_id="window.night", **DECISION),
    _env("attempt.state", attempt_id="a-1", state="dialing", connected=True, channel="api",
         agent_id="col-a", decision_id="d-1", pbx_event="hangup", pbx_id="east",
         pbx_at="2026-11-24T02:01:00+00:00", cause="normal_clearing", duration_s=61.5),
    _env("attempt.state", attempt_id="a-1", state="expired", decision_id="d-1", agent_id="col-a"),
    _env("outcome.logged", attempt_id="a-1", disposition="connected_self", result="promise_to_pay",
         agent_id="col-a", logged_by="col-a", number="138****0001"),
    _env("case.updated", follow_up_status="promise", next_action_date="2026-11-30",
         flags=[], status="active"),
    _env("case.updated", contact_added="139****0002", relation="family", source=None),
    _env("alert.complaint_risk", attempt_id="a-1", agent_id="col-a", number="138****0001",
         message="complaint risk", message_zh="投诉倾向"),
    _env("alert.dispute", attempt_id="a-1", agent_id="col-a", number="138****0001",
         message="dispute", message_zh="争议"),
    _env("case.first_call_overdue", assigned_agent="col-a", deadline="2026-11-26", days_overdue=1,
         message="first call not made", message_zh="未首催"),
    _env("recording.stored", recording_id="r-1", attempt_id="a-1"),
    _env("recording.purged", recording_id="r-1", purge_id="p-1"),
    _env("alert.recording_missing", attempt_id="a-1", agent_id="col-a", number="138****0001",
         dialed_at="2026-11-24T02:00:00+00:00", ended_seen_at="2026-11-24T02:05:00+00:00",
         message="no recording", message_zh="没有录音"),
]  # fmt: skip


def test_every_schema_file_is_a_valid_2020_12_schema_with_its_own_id():
    files = sorted(ROOT.rglob("*.schema.json"))
    assert len(files) == 16
    for path in files:
        doc = json.loads(path.read_text())
        Draft202012Validator.check_schema(doc)
        assert doc["$id"].endswith("/v1/" + str(path.relative_to(ROOT)))


@pytest.mark.parametrize("doc", GOOD, ids=lambda d: d["type"])
def test_the_events_the_gate_writes_match_their_schema(doc):
    assert event_errors(doc) == []


def test_an_unmasked_number_is_not_a_valid_event():
    doc = dict(GOOD[0], number="+8613800000001")
    assert event_errors(doc)


def test_an_event_without_its_case_sequence_is_not_valid():
    doc = dict(GOOD[0])
    del doc["case_seq"]
    assert event_errors(doc)


def test_an_event_on_the_wrong_type_schema_is_not_valid():
    assert errors("dial.allowed.schema.json", dict(GOOD[1]))


def test_inbound_documents_match_their_schemas():
    assert errors("inbound/dial-command.schema.json", {
        "token": "dg_x", "case_id": "C-1", "number": "13800000001", "agent_id": "col-a",
        "reply_to": "desk/1/replies", "correlation_id": 7}) == []  # fmt: skip
    assert errors("inbound/pbx-event.schema.json", {
        "event": "hangup", "call_id": "c@pbx", "cause": 486, "duration_s": 0}) == []  # fmt: skip
    assert errors("inbound/dial-reply.schema.json", {"status": 201, "body": {}}) == []


@pytest.mark.parametrize(
    "doc",
    [
        {"event": "ringing", "call_id": "c"},
        {"event": "answered"},
        {"event": "hangup", "call_id": "c", "duration_s": 3},
        {"event": "hangup", "call_id": "c", "cause": "busy", "duration_s": -1},
        {"event": "recording_ready", "call_id": "c"},
        {"event": "recording_ready", "call_id": "c", "recording_path": "/a", "recording_url": "https://r/a"},
        {"event": "recording_ready", "call_id": "c", "recording_path": "rel/a.wav"},
    ],
)
def test_the_pbx_event_schema_refuses_what_the_consumer_refuses(doc):
    from adapters.mqtt.consumer import parse_pbx_event
    from adapters.mqtt.errors import MalformedMessage

    assert errors("inbound/pbx-event.schema.json", doc)
    with pytest.raises(MalformedMessage):
        parse_pbx_event(json.dumps(doc).encode(), "pbx-1", "m", lambda: None)


def test_the_in_memory_outbox_writes_events_of_the_same_shape():
    from tests.support.outbox import InMemoryOutboxSource

    outbox = InMemoryOutboxSource()
    outbox.append("case.updated", "bank-a", "C-1", {"status": "paused"})
    event = outbox.append("case.updated", "bank-a", "C-1", {"status": "active"})
    doc = json.loads(event.payload)
    assert event_errors(doc) == []
    assert (doc["case_seq"], event.ordering_key) == (2, "bank-a/C-1")
