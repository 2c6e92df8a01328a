"""Masking numbers in logs, events and answers to roles that must not see them."""

from __future__ import annotations

import io
import json

import structlog

from dialer.logs import configure_logging
from dialer.masking import mask_deep, mask_number, mask_text


def test_a_chinese_mobile_is_masked_to_its_first_three_and_last_four_digits() -> None:
    assert mask_number("+8613800000001") == "138****0001"
    assert mask_number("13800000001") == "138****0001"


def test_a_foreign_number_keeps_its_plus() -> None:
    assert mask_number("+12125550123") == "+121****0123"


def test_numbers_inside_text_are_masked_but_dates_and_ids_are_not() -> None:
    text = "dial +8613800000001 at 2026-11-24T08:00:00 decision 550e8400-1234567-x card 6222021234567890123"
    assert mask_text(text) == "dial 138****0001 at 2026-11-24T08:00:00 decision 550e8400-1234567-x card 622****0123"


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
