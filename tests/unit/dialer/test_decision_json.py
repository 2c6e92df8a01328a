"""A dial's answer carries its decision as `Decision.to_dict` gives it with the policy's
own `jsonable`, whichever way the application converts the decision's inputs."""

from __future__ import annotations

import enum
from datetime import date, datetime, timezone
from typing import Any

import orjson
import pytest

from dialer.usecases.presenters import plain_json
from policy.model import jsonable
from tests.unit.dialer.test_dial_use_cases import a_case, dial, given, ten_am


class Colour(enum.Enum):
    RED = "red"


class Text(str):
    pass


@pytest.mark.parametrize("inputs", [
    {"zone": "Asia/Shanghai", "counters": {"cap": {"applies": True, "count": 1, "limit": 2, "window": "1h"}}},
    {},
    {"seen": ("a", 1, 2.5, None, True), "nested": [{"x": []}]},
    {"at": datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc), "day": date(2026, 11, 24)},
    {7: "an int key", True: "a bool key", "ok": True},
    {"kinds": frozenset({"attempt"})},
    {"colour": Colour.RED, "text": Text("x")},
    {"zone_note": "contact zone 'Mars/Base' is not an IANA zone; ignored", "中文": "被叫当地时间"},
])
def test_the_inputs_are_converted_as_the_policy_converts_them(inputs: Any) -> None:
    got, want = plain_json(inputs), jsonable(inputs)
    # as the answer is written (orjson, string keys only after conversion)
    assert orjson.dumps(got) == orjson.dumps(want)
    assert [type(k) for k in got] == [str] * len(want)


def test_inputs_orjson_cannot_write_are_converted_by_the_policy() -> None:
    assert plain_json({"big": 2**70, "at": date(2026, 11, 24)}) == {"big": 2**70, "at": "2026-11-24"}


async def test_every_answer_of_a_real_dial_is_the_decision_as_to_dict_gives_it() -> None:
    gate, ledger, _ = given(ten_am())
    ledger.add_case(a_case())
    answers = []
    for _ in range(3):
        result = await gate.request_dial(dial())
        want = result.decision.to_dict()
        want["decision_id"] = result.decision_id
        assert result.decision_json() == want
        answers.append(result.allowed)
    assert answers == [True, True, False]  # the third is blocked by the hourly cap, with a next lawful time
