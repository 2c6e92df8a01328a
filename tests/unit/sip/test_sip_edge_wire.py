"""The edge <-> service wire: what goes over it comes back equal; a malformed line is a
BadLine that names what is wrong (and, when readable, its request id, so that one call
fails closed while the link stays up)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from adapters.sip.edge import MAX_LINE, BadLine, decode_answer, decode_input, encode_answer, encode_input
from adapters.sip.gate import MAX_CALL_ID, MAX_CALLER_FIELD, MAX_DIALED, SipDialAnswer, SipDialInput

INPUT = SipDialInput(
    number="+8613800000001", dialed="+8613800000001", caller_line="+862161234567", extension="1001",
    agent_id="a1", case_id=None, attempt_id="att-1", call_id="c1@pbx", request_key="f" * 64,
)
ANSWER = SipDialAnswer(
    allowed=False, rule_id="cap.number_hourly", reason="Number called 2 times", reason_zh="该号码一小时内已呼叫2次",
    attempt_id=None, retry_after=1800, decision_id="dec-1",
)


def test_a_question_and_an_answer_cross_the_wire_unchanged():
    assert decode_input(json.loads(encode_input(7, INPUT))) == (7, INPUT)
    assert decode_answer(json.loads(encode_answer(7, ANSWER))) == (7, ANSWER)
    allowed = dataclasses.replace(ANSWER, allowed=True, rule_id="allow", number="+8613800000001")
    assert decode_answer(json.loads(encode_answer(8, allowed))) == (8, allowed)
    assert "该号码" in encode_answer(7, ANSWER).decode("utf-8")  # UTF-8, not \\u escapes
    assert b"\n" not in encode_input(7, INPUT)  # one line each: JSON escapes newlines


def test_the_dialed_number_crosses_the_wire_once():
    line = encode_input(7, dataclasses.replace(INPUT, dialed="013800000001"))
    assert line.count(b"13800000001") == 1


def test_the_largest_question_the_listener_lets_through_stays_far_below_the_line_limit():
    # every field at its bound, in the characters JSON escapes longest (\u00xx: 6 bytes)
    worst = SipDialInput(
        number="(" * MAX_DIALED, dialed="(" * MAX_DIALED, caller_line="\u00a0" * MAX_CALLER_FIELD,
        extension="\u00a0" * MAX_CALLER_FIELD, agent_id='"' * 128, case_id='"' * 128, attempt_id='"' * 128,
        call_id="\\" * MAX_CALL_ID, request_key="f" * 64,
    )
    assert len(encode_input(1, worst)) < MAX_LINE // 16


def test_a_question_over_the_line_limit_is_refused_before_it_is_sent():
    with pytest.raises(BadLine, match="exceeds") as info:
        encode_input(3, dataclasses.replace(INPUT, call_id="\x01" * 12_000))
    assert info.value.req_id == 3


@pytest.mark.parametrize(
    "msg, named, req_id",
    [
        ({"id": 1}, "[id, 8 fields]", None),
        (["1", *["x"] * 8], "[id, 8 fields]", None),
        ([4, "+86", None, None, None, None, None, "c", None, "extra"], "[id, 8 fields]", 4),
        ([1, None, None, None, None, None, None, "c", None], "number", 1),
        ([1, "+86", None, None, None, None, None, 5, None], "call_id", 1),
        ([1, "+86", None, None, ["a1"], None, None, "c", None], "agent_id", 1),
        ([1, "+86", None, None, None, None, None, "c", 7], "request_key", 1),
    ],
)
def test_a_malformed_question_is_refused_naming_the_field_and_its_request(msg, named, req_id):
    with pytest.raises(BadLine, match=named.replace("[", r"\[").replace("]", r"\]")) as info:
        decode_input(msg)
    assert info.value.req_id == req_id


@pytest.mark.parametrize(
    "msg, named",
    [
        ([1, True, "allow"], "[id, 8 fields]"),
        ([1, "yes", "allow", "r", "r", None, None, None, None], "allowed"),
        ([1, False, "cap", "r", "r", None, "60", None, None], "retry_after"),
        ([1, True, "allow", "r", "r", 5, None, None, None], "attempt_id"),
        ([1, True, "allow", "r", "r", None, None, None, 8613800000001], "number"),
    ],
)
def test_a_malformed_answer_is_refused_naming_the_field(msg, named):
    with pytest.raises(BadLine, match=named.replace("[", r"\[").replace("]", r"\]")):
        decode_answer(msg)
