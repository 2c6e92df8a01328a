"""The decision log's link step and the SQLite writer's time text, as written on every
decision: the same bytes as the general functions they shortcut."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from adapters.db import ledger_sqlite as hot
from dialer.chain import GENESIS_HASH, canonical_json, chain_hash, link_decision
from dialer.evidence import EvidenceKey
from dialer.model import DecisionRecord

KEY = EvidenceKey(b"k" * 32, "test")

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _record() -> DecisionRecord:
    """Every field set, none to its default (a field `link_decision` forgot would differ)."""
    at = datetime(2026, 11, 24, 2, 0, 0, 123456, tzinfo=timezone.utc)
    return DecisionRecord(
        decision_id="d-1", kind="dial", at=at, evaluated_at=at + timedelta(seconds=1), user="pbx", agent_id="a1",
        channel="sip", creditor="bank-a", case_id="C-1", number_masked="138****0001", attempt_id="at-1",
        allowed=False, rule_id="cap.number_hourly", reason="cap.number_hourly: 2 of 2", reason_zh="已达上限 “2”",
        next_allowed_at=at + timedelta(hours=1), policy_version="v7",
        checks=({"rule_id": "cap.number_hourly", "passed": False, "detail": "2 of 2", "detail_zh": "两次"},),
        inputs_used={"zone": "Asia/Shanghai", "counters": {"cap.number_hourly": {"count": 2, "limit": 2}}},
        chain="old", seq=99, prev_hash="old-prev", hash="old-hash",
    )


def test_every_field_of_the_decision_record_is_one_the_link_step_knows() -> None:
    # A new field must be copied in `link_decision` too; this list changes with it.
    assert [f.name for f in fields(DecisionRecord)] == [
        "decision_id", "kind", "at", "evaluated_at", "user", "agent_id", "channel", "creditor", "case_id",
        "number_masked", "attempt_id", "allowed", "rule_id", "reason", "reason_zh", "next_allowed_at",
        "policy_version", "checks", "inputs_used", "chain", "seq", "prev_hash", "hash",
    ]


def test_a_linked_record_is_the_record_with_its_chain_fields_and_the_mac_of_its_canonical_text() -> None:
    record = _record()
    linked, text = link_decision(record, "bank-a", (41, "ab" * 32, 1), KEY)
    body = record.body()
    body["chain"], body["seq"], body["prev_hash"] = "bank-a", 42, "ab" * 32
    assert text == canonical_json(body)
    assert linked == replace(record, chain="bank-a", seq=42, prev_hash="ab" * 32,
                             hash=KEY.link("ab" * 32, text.encode()))


def test_the_first_link_of_a_chain_follows_the_genesis_hash() -> None:
    linked, text = link_decision(_record(), "bank-a", None, KEY)
    assert (linked.seq, linked.prev_hash) == (1, GENESIS_HASH)
    assert linked.hash == KEY.link(GENESIS_HASH, text.encode())


def test_the_link_is_keyed_so_a_plain_sha256_or_another_key_gives_another_hash() -> None:
    linked, text = link_decision(_record(), "bank-a", None, KEY)
    assert linked.hash != chain_hash(GENESIS_HASH, text)
    assert linked.hash != link_decision(_record(), "bank-a", None, EvidenceKey(b"x" * 32))[0].hash


def test_store_time_text_is_naive_utc_with_six_fractional_digits_whatever_the_zone() -> None:
    utc = datetime(2026, 11, 24, 2, 0, 5, tzinfo=timezone.utc)
    assert hot.db_time(utc) == "2026-11-24 02:00:05.000000"
    assert hot.db_time(utc.astimezone(SHANGHAI)) == "2026-11-24 02:00:05.000000"
    assert hot.db_time(utc.astimezone(timezone(timedelta(hours=-5))) + timedelta(microseconds=7)) == (
        "2026-11-24 02:00:05.000007")
    assert hot.db_time(utc.astimezone(ZoneInfo("UTC"))) == "2026-11-24 02:00:05.000000"


def test_the_same_time_twice_gives_the_same_text_and_the_next_time_its_own() -> None:
    now = datetime(2026, 11, 24, 2, 0, 5, 1, tzinfo=timezone.utc)
    assert hot.db_time(now) == hot.db_time(now) == "2026-11-24 02:00:05.000001"
    assert hot.db_time(now + timedelta(microseconds=1)) == "2026-11-24 02:00:05.000002"
    assert hot.db_time(now) == "2026-11-24 02:00:05.000001"


def test_a_naive_time_is_refused_by_the_store() -> None:
    try:
        hot.db_time(datetime(2026, 11, 24, 2, 0))
    except ValueError as exc:
        assert "naive" in str(exc)
    else:
        raise AssertionError("a naive datetime was accepted")


def test_interleaved_times_each_get_their_own_text() -> None:
    base = datetime(2026, 11, 24, 2, 0, 5, tzinfo=timezone.utc)
    times = [base + timedelta(microseconds=i) for i in range(4)]
    for i in (0, 1, 0, 2, 1, 3, 0, 0, 2, 3, 1):
        assert hot.db_time(times[i]) == f"2026-11-24 02:00:05.00000{i}"
