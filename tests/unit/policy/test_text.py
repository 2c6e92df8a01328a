"""User-facing text travels as one value and leaves as the `<name>` / `<name>_zh` pair."""

from __future__ import annotations

import json

import pytest

from policy import Text


@pytest.mark.parametrize(
    ("name", "text", "fields"),
    [
        ("message", Text("dispute: calls stopped", "争议：已停止拨打"),
         {"message": "dispute: calls stopped", "message_zh": "争议：已停止拨打"}),
        ("reason", Text("outside calling hours", "不在可拨打时段"),
         {"reason": "outside calling hours", "reason_zh": "不在可拨打时段"}),
        ("detail", Text("", ""), {"detail": "", "detail_zh": ""}),
    ],
)
def test_a_text_leaves_as_the_plain_field_in_english_and_its_zh_companion_in_chinese(
    name: str, text: Text, fields: dict[str, str]
) -> None:
    assert text.fields(name) == fields


def test_spreading_a_text_into_a_payload_writes_the_same_bytes_as_the_two_fields_written_by_hand() -> None:
    text = Text("first call not made within 2 days of assignment", "新案未在分案后2天内首催")
    by_hand = {"deadline": "2026-11-24", "message": text.en, "message_zh": text.zh, "days_overdue": 1}
    spread = {"deadline": "2026-11-24", **text.fields("message"), "days_overdue": 1}
    assert json.dumps(spread, ensure_ascii=False) == json.dumps(by_hand, ensure_ascii=False)


def test_a_text_unpacks_as_the_english_and_chinese_pair() -> None:
    en, zh = Text("complaint risk", "投诉倾向")
    assert (en, zh) == ("complaint risk", "投诉倾向")


def test_one_string_carrying_both_languages_puts_chinese_first() -> None:
    assert Text("case is paused", "案件已暂停").line() == "案件已暂停 / case is paused"
