"""The edge <-> service wire: what goes over it comes back equal; anything else is a
LinkError that names what is wrong (the link is then closed, never half-read)."""

from __future__ import annotations

import json

import pytest

from adapters.sip.edge import LinkError, decode_answer, decode_input, encode_answer, encode_input
from adapters.sip.gate import SipDialAnswer, SipDialInput

INPUT = SipDialInput(
    number="+8613800000001", dialed="13800000001", caller_line="+862161234567", extension="1001",
    agent_id="a1", case_id=None, attempt_id="att-1", call_id="c1@pbx",
)
ANSWER = SipDialAnswer(
    allowed=False, rule_id="cap.number_hourly", reason="Number called 2 times", reason_zh="该号码一小时内已呼叫2次",
    attempt_id=None, retry_after=1800, decision_id="dec-1",
)


def test_a_question_and_an_answer_cross_the_wire_unchanged():
    assert decode_input(json.loads(encode_input(7, INPUT))) == (7, INPUT)
    assert decode_answer(json.loads(encode_answer(7, ANSWER))) == (7, ANSWER)
    assert "该号码" in encode_answer(7, ANSWER).decode("utf-8")  # UTF-8, not \\u escapes
    assert b"\n" not in encode_input(7, INPUT)  # one line each: JSON escapes newlines


@pytest.mark.parametrize(
    "msg, named",
    [
        ({"id": 1}, "[id, 8 fields]"),
        (["1", *["x"] * 8], "[id, 8 fields]"),
        ([1, None, "13800000001", None, None, None, None, None, "c"], "number"),
        ([1, "+86", "1", None, None, None, None, None, 5], "call_id"),
        ([1, "+86", "1", None, None, ["a1"], None, None, "c"], "agent_id"),
    ],
)
def test_a_malformed_question_is_refused_naming_the_field(msg, named):
    with pytest.raises(LinkError, match=named.replace("[", r"\[").replace("]", r"\]")):
        decode_input(msg)


@pytest.mark.parametrize(
    "msg, named",
    [
        ([1, True, "allow"], "[id, 7 fields]"),
        ([1, "yes", "allow", "r", "r", None, None, None], "allowed"),
        ([1, False, "cap", "r", "r", None, "60", None], "retry_after"),
        ([1, True, "allow", "r", "r", 5, None, None], "attempt_id"),
    ],
)
def test_a_malformed_answer_is_refused_naming_the_field(msg, named):
    with pytest.raises(LinkError, match=named.replace("[", r"\[").replace("]", r"\]")):
        decode_answer(msg)
