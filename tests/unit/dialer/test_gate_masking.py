"""Masking numbers in logs, events and answers to roles that must not see them."""

from __future__ import annotations

import io
import json

import pytest

import structlog

from dialer.logs import configure_logging
from dialer.masking import mask_deep, mask_number, mask_text


def test_a_chinese_mobile_is_masked_to_its_first_three_and_last_four_digits() -> None:
    assert mask_number("+8613800000001") == "138****0001"
    assert mask_number("13800000001") == "138****0001"


def test_a_foreign_number_keeps_its_plus() -> None:
    assert mask_number("+12125550123") == "+121****0123"


def test_numbers_inside_text_are_masked_but_dates_and_ids_are_not() -> None:
    text = "dial +8613800000001 at 2026-11-24T08:00:00 decision 550e8400-1234567-x card 6222021234567890128"
    assert mask_text(text) == "dial 138****0001 at 2026-11-24T08:00:00 decision 550e8400-1234567-x card ***************0128"


def test_masking_reaches_nested_structures() -> None:
    assert mask_deep({"a": ["13800000001", {"b": "call 13900000002"}], "n": 5}) == {
        "a": ["138****0001", {"b": "call 139****0002"}], "n": 5}


def test_log_events_are_json_with_numbers_masked_and_context_bound(capsys) -> None:  # type: ignore[no-untyped-def]
    configure_logging("info", json=True)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id="r-1", decision_id="d-1")
    structlog.get_logger("t").info("dial.decided", number="+8613800000001", note="客户 13900000002 说")
    structlog.contextvars.clear_contextvars()
    line = capsys.readouterr().err.strip().splitlines()[-1]
    event = json.loads(line)
    assert event["number"] == "138****0001"
    assert event["note"] == "客户 139****0002 说"
    assert (event["request_id"], event["decision_id"]) == ("r-1", "d-1")
    assert "13800000001" not in line


def test_a_text_masked_once_without_a_number_is_answered_the_same_again_and_numbers_are_still_masked() -> None:
    from dialer import masking

    for _ in range(2):
        assert mask_text("calendar_day") == "calendar_day"
        assert mask_text("call 13800000001") == "call 138****0001"
    assert not any(masking._NUMBER_RE.search(t) for t in masking._CLEAN)  # no number is kept


def test_the_set_of_clean_texts_stays_bounded() -> None:
    from dialer import masking

    for i in range(masking._CLEAN_MAX + 10):
        assert mask_text(f"zone-{i}") == f"zone-{i}"
    assert len(masking._CLEAN) <= masking._CLEAN_MAX
    assert mask_text("a" * (masking._CLEAN_LEN + 1)) == "a" * (masking._CLEAN_LEN + 1)
    assert "a" * (masking._CLEAN_LEN + 1) not in masking._CLEAN


def test_decision_inputs_are_stored_as_json_values_with_every_number_masked() -> None:
    from datetime import datetime, timezone

    from dialer.usecases import _masked_inputs

    at = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)
    inputs = {"number": "+8613800000001", "n": 3, "ok": True, "none": None, 7: "x",
              "counters": {"cap": {"count": 1, "note": "call 13900000002"}}, "seen": ("13800000003", at)}
    assert _masked_inputs(inputs) == {
        "number": "138****0001", "n": 3, "ok": True, "none": None, "7": "x",
        "counters": {"cap": {"count": 1, "note": "call 139****0002"}},
        "seen": ["138****0003", "2026-11-24T02:00:00+00:00"],
    }
    assert _masked_inputs(None) == {}


def test_a_log_line_is_exactly_what_json_dumps_writes_one_line_each(capsys) -> None:  # type: ignore[no-untyped-def]
    from datetime import datetime, timezone

    configure_logging("info", json=True)
    structlog.contextvars.clear_contextvars()
    log = structlog.get_logger("t")
    log.info("dial.decided", note="客户说 ok", n=3, ok=None, nested={"a": [1, "x"]},
             at=datetime(2026, 11, 24, tzinfo=timezone.utc))
    log.warning("second")
    lines = capsys.readouterr().err.split("\n")
    assert len(lines) == 3 and lines[2] == ""  # two lines, each ended by one newline
    first = json.loads(lines[0])
    # Same separators, non-ASCII as is, keys in the order structlog built them.
    assert lines[0] == json.dumps(first, ensure_ascii=False)
    assert first["note"] == "客户说 ok" and first["nested"] == {"a": [1, "x"]} and first["level"] == "info"
    assert first["at"] == repr(datetime(2026, 11, 24, tzinfo=timezone.utc))  # structlog's fallback
    assert json.loads(lines[1])["event"] == "second"


def test_a_card_number_in_free_text_keeps_only_its_last_four_digits_whether_grouped_or_not() -> None:
    assert mask_text("卡号6222021234567890128已挂失") == "卡号***************0128已挂失"  # Chinese runs words on
    assert mask_text("case C6222021234567890128") == "case C6222021234567890128"  # an id, not a number
    assert mask_text("卡号 6222021234567890128 已挂失") == "卡号 ***************0128 已挂失"
    assert mask_text("card 4111 1111 1111 1111 lost") == "card ************1111 lost"
    assert mask_text("card 4111-1111-1111-1111.") == "card ************1111."


def test_a_prc_id_number_keeps_only_its_last_four_characters() -> None:
    assert mask_text("身份证 11010519491231002X 核实") == "身份证 **************002X 核实"
    assert mask_text("old id 110105491231002 ok") == "old id ***********1002 ok"


def test_numbers_that_are_neither_card_nor_id_are_masked_as_phone_numbers() -> None:
    assert mask_text("tel 02161234567, new 13912345678") == "tel 021****4567, new 139****5678"
    assert mask_text("客户电话13912345678，身份证11010519491231002X。") == "客户电话139****5678，身份证**************002X。"
    assert mask_text("amount 1234567.50 on 2026-11-24 10:00") == "amount 1234567.50 on 2026-11-24 10:00"


def test_on_input_card_and_id_numbers_are_masked_and_phone_numbers_kept() -> None:
    from dialer.masking import redact_on_input

    note = "客户新号码 13912345678，报卡号 4111 1111 1111 1111 和身份证 11010519491231002X"
    assert redact_on_input(note) == "客户新号码 13912345678，报卡号 ************1111 和身份证 **************002X"
    assert redact_on_input("4111111111111112 fails Luhn") == "4111111111111112 fails Luhn"
    assert redact_on_input(None) is None and redact_on_input("") == ""


def test_luhn_and_the_id_check_character_decide_what_is_a_card_or_an_id() -> None:
    from dialer.masking import is_card_number, is_prc_id

    assert is_card_number("4111111111111111") and not is_card_number("4111111111111112")
    assert not is_card_number("411111111111")  # 12 digits: too short
    assert is_prc_id("11010519491231002X") and is_prc_id("11010519491231002x")
    assert not is_prc_id("110105194912310021") and not is_prc_id("110105491331002")


def test_numbers_in_sip_uris_are_masked_for_the_logs() -> None:
    from dialer.masking import mask_sip_text

    assert mask_sip_text("INVITE sip:13800000001@pbx SIP/2.0") == "INVITE sip:138****0001@pbx SIP/2.0"
    assert mask_sip_text("<sip:+8613912345678@x>;tag=1 tel:02161234567") == "<sip:139****5678@x>;tag=1 tel:021****4567"


def test_a_recording_path_has_every_long_digit_run_masked() -> None:
    from dialer.masking import mask_path

    assert mask_path("/var/spool/monitor/13800000001-a84b.wav") == "/var/spool/monitor/138****0001-a84b.wav"


@pytest.mark.parametrize("inputs", [
    {"zone": "Asia/Shanghai", "counters": {"cap.day": {"applies": True, "count": 2, "limit": 4, "window": "1d"}},
     "callee_local_time": "2026-11-24T10:13:22.123456+08:00", "policy_date": "2026-11-24", "appointment": None},
    {"note": "call 13900000002"},
    {"note": "card 6222 0212 3456 7890"},
    {"note": "card 6222-0212-3456-7890"},
    {"note": "\n13800000001"},  # JSON escapes the newline as "\n": the walk masks it
    {"note": "\t13800000001 \u0001 13900000002"},
    {"note": "１３８０００００００１"},  # fullwidth digits are digits to the mask
    {"note": "电话13800000001"},
    {"note": "+12125550123", "x": [1, 2.5, "13800000001"]},
    {"note": "1234567", "nested": [{"a": ("13800000001",)}]},
    {"only": "a 123456 b 1234 5678"},
    {"quote": 'say "13800000001"', "back": "c:\\13800000001"},
    {"big": 2**70, "n": -1},
])
def test_decision_inputs_are_masked_the_same_whether_or_not_they_hold_a_number(inputs: dict) -> None:  # type: ignore[type-arg]
    from dialer.usecases.presenters import _masked_inputs, _masked_json

    assert _masked_inputs(inputs) == _masked_json(inputs)
    assert json.dumps(_masked_inputs(inputs), sort_keys=True) == json.dumps(_masked_json(inputs), sort_keys=True)


def test_decision_inputs_without_a_number_come_back_as_new_json_values() -> None:
    from dialer.usecases.presenters import _masked_inputs

    inputs = {"counters": {"cap": {"count": 1}}, "seen": ("a", "b")}
    out = _masked_inputs(inputs)
    assert out == {"counters": {"cap": {"count": 1}}, "seen": ["a", "b"]}
    out["counters"]["cap"]["count"] = 2  # the record's copy: the decision's own stays
    assert inputs["counters"]["cap"]["count"] == 1
