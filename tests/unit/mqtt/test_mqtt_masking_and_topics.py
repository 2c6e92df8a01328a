from __future__ import annotations

import pytest

from dialer.masking import mask_bytes as mask_phones_in_bytes, mask_text
from adapters.mqtt.topics import event_topic, pbx_id_of, reply_topic_problem


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        (b'"13800138000"', b'"138****8000"'),
        (b'"+8613912345678"', b'"139****5678"'),
        (b'"008615012345678"', b'"150****5678"'),
        (b'"call 18612345678 now"', b'"call 186****5678 now"'),
        (b'"new number 138-0013-8000"', b'"new number 138****8000"'),  # as people write it
        (b'"+86 138 0013 8000"', b'"138****8000"'),
    ],
)
def test_mobile_numbers_in_event_payloads_are_masked(raw, masked):
    assert mask_phones_in_bytes(raw) == (masked, 1)


@pytest.mark.parametrize(
    "raw",
    [
        b'"C13800138000"',  # a case id
        b'"13800138000-2"',  # part of a longer id
        b'"7d1b2c4e-1380-4138-9138-138001380001"',  # a UUID
        b'"138****8000"',  # already masked
        b'"12800138000"',  # not a mobile prefix
        b'"2026-11-23T10:00:00+08:00"',
        b'"138-0013-80001"',  # a dashed id, not a number
    ],
)
def test_ids_and_masked_numbers_are_left_alone(raw):
    assert mask_phones_in_bytes(raw) == (raw, 0)


def test_log_masking_hides_landlines_and_leaves_only_the_last_four_of_an_id_number():
    assert mask_text("tel 02161234567 id 11010519491231002X") == "tel 021****4567 id **************002X"


def test_event_topics_refuse_levels_that_would_break_the_topic_tree():
    assert event_topic("bank-a", "dial.allowed") == "dialgate/v1/bank-a/events/dial.allowed"
    for bad in ("", "a/b", "a+", "#"):
        with pytest.raises(ValueError):
            event_topic(bad, "dial.allowed")


def test_the_pbx_id_is_read_from_the_topic():
    assert pbx_id_of("dialgate/v1/pbx/east-1/events") == "east-1"
    assert pbx_id_of("dialgate/v1/pbx/east-1/other") is None
    assert pbx_id_of("dialgate/v1/pbx//events") is None


def test_replies_may_go_to_private_or_reply_topics_only():
    assert reply_topic_problem("desk/42/replies") is None
    assert reply_topic_problem("dialgate/v1/replies/desk-42") is None
    assert reply_topic_problem("dialgate/v1/deadletter") is not None
    assert reply_topic_problem("desk/+/replies") is not None
    assert reply_topic_problem("") is not None


def test_card_and_id_numbers_in_event_payloads_keep_only_their_last_four() -> None:
    raw = '{"note":"卡号4111111111111111，身份证11010519491231002X","seq":12345678}'.encode()
    masked, n = mask_phones_in_bytes(raw)
    assert n == 2
    assert masked.decode() == '{"note":"卡号************1111，身份证**************002X","seq":12345678}'
