"""The masking processor every log line goes through."""

from __future__ import annotations

from dialer.logs import mask_numbers


def test_numbers_in_strings_lists_and_dicts_are_masked_and_ids_are_not() -> None:
    event = {
        "event": "dial.decided", "number": "+8613800000001", "note": "回拨 13900000002",
        "numbers": ["13700000003", ("13600000004",)], "inputs": {"to": "13500000005"},
        "case_id": "13800000001", "request_id": "13800000001",
    }
    assert mask_numbers(None, "info", event) == {
        "event": "dial.decided", "number": "138****0001", "note": "回拨 139****0002",
        "numbers": ["137****0003", ["136****0004"]], "inputs": {"to": "135****0005"},
        "case_id": "13800000001", "request_id": "13800000001",
    }


def test_short_strings_numbers_booleans_and_none_pass_unchanged() -> None:
    event = {"a": "123456", "b": 13800000001, "c": True, "d": None, "e": 1.5, "f": "1234567"}
    assert mask_numbers(None, "info", dict(event)) == {**event, "f": "1****67"}


def test_a_str_subclass_is_masked_like_a_str() -> None:
    class Tag(str):
        pass

    assert mask_numbers(None, "info", {"x": Tag("call 13800000001")}) == {"x": "call 138****0001"}
