"""Replay of logged dials under another policy (dialer/replay.py), on plain data."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from dialer.masking import mask_number
from dialer.replay import LoggedDial, ReplayData, StoredCase, StoredContact, replay, summarise
from policy import load_policy

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 24, 9, 0, tzinfo=SH)
DEBTOR, RELATIVE, LATE = "+8613800000001", "+8613900000002", "+8613600000003"
CASE = StoredCase("bank-a", "C-1", "active", date(2026, 11, 1), date(2026, 12, 31), "a1", (
    StoredContact(DEBTOR, "self", None, T0 - timedelta(days=30)),
    StoredContact(RELATIVE, "family", None, T0 - timedelta(days=30)),
    StoredContact(LATE, "family", None, T0 + timedelta(hours=5)),  # added by info repair that afternoon
))


def dial(n: int, minutes: int, number: str | None = DEBTOR, *, allowed: bool = True, rule: str = "allow",
         failed: frozenset[str] = frozenset(), attempt: str | None = "same", masked: str | None = None,
         connected: bool = False) -> LoggedDial:
    went_out = allowed and number is not None
    return LoggedDial(
        decision_id=f"d{n}", at=T0 + timedelta(minutes=minutes), creditor="bank-a", case_id="C-1", agent_id="a1",
        number_masked=masked or mask_number(number or DEBTOR), allowed=allowed, rule_id=rule, failed=failed,
        attempt_id=(f"a{n}" if attempt == "same" else attempt) if went_out or attempt not in ("same", None) else None,
        number=number if went_out else None, relation="self" if went_out else None, connected=connected,
    )


def run(*dials: LoggedDial, policy: dict | None = None) -> list:  # noqa: ANN001
    return replay(ReplayData(list(dials), {("bank-a", "C-1"): CASE}), load_policy(policy or {}))


def test_a_blocked_dial_is_matched_to_its_contact_by_the_masked_number_and_decided_again() -> None:
    blocked = dial(1, 0, None, allowed=False, rule="window.outside_hours", masked=mask_number(RELATIVE), attempt=None)
    [result] = run(blocked)
    assert (result.allowed, result.rule_id, result.changed) == (True, "allow", True)


def test_an_unknown_number_cannot_be_rebuilt_and_keeps_its_logged_answer() -> None:
    unknown = dial(1, 0, None, allowed=False, rule="contact.not_authorized", masked="137****9999", attempt=None)
    [result] = run(unknown)
    assert (result.allowed, result.rule_id, result.changed) == (False, "contact.not_authorized", False)
    assert "masked" in result.note


@pytest.mark.parametrize("rule", ["case.not_found", "agent.unknown", "request.forbidden"])
def test_a_refusal_made_before_the_policy_is_kept_as_logged(rule) -> None:
    [result] = run(dial(1, 0, None, allowed=False, rule=rule, attempt=None))
    assert result.rule_id == rule and not result.changed and "before the policy" in result.note


@pytest.mark.parametrize("fact", ["case.paused", "case.dispute", "agent.not_assigned", "contact.do_not_call",
                                  "line.not_registered", "system.recording_unavailable"])
def test_a_hard_fact_of_the_logged_moment_is_replayed_as_it_was(fact) -> None:
    [result] = run(dial(1, 0, None, allowed=False, rule=fact, failed=frozenset({fact}), attempt=None),
                   policy={"window": {"start": "00:00", "end": "24:00"}})
    assert (result.allowed, result.rule_id) == (False, fact)


def test_a_contact_added_after_the_dial_is_not_a_contact_at_the_time() -> None:
    early = dial(1, 0, None, allowed=False, rule="contact.not_authorized", masked=mask_number(LATE), attempt=None,
                 failed=frozenset({"contact.not_authorized"}))
    [result] = run(early)
    assert result.rule_id == "contact.not_authorized"


def test_only_the_dials_the_tried_policy_allows_count_towards_its_caps() -> None:
    logged = [dial(1, 0), dial(2, 10), dial(3, 20), dial(4, 30, allowed=False, rule="cap.number_hourly",
                                                     attempt=None, failed=frozenset({"cap.number_hourly"}))]
    results = run(*logged)  # the default hourly cap is 2
    assert [(r.allowed, r.rule_id) for r in results] == [
        (True, "allow"), (True, "allow"), (False, "cap.number_hourly"), (False, "cap.number_hourly"),
    ]
    summary = summarise(results)
    assert (summary.changed, summary.allowed_to_blocked) == (1, 1)
    assert summary.by_rule == {("allow", "cap.number_hourly"): 1}


def test_a_sip_dial_that_consumed_an_authorisation_repeats_its_answer_and_adds_no_attempt() -> None:
    first, consumed = dial(1, 0, attempt="a1"), dial(2, 1, attempt="a1")
    third = dial(3, 2, attempt="a3")
    results = run(first, consumed, third, policy={"caps": [{"id": "cap.number_hourly", "limit": 2}]})
    assert [r.allowed for r in results] == [True, True, True]
    assert "earlier dial" in results[1].note


def test_a_connected_call_counts_as_connected_for_a_quiet_period() -> None:
    talked = dial(1, 0, connected=True)
    later = dial(2, 24 * 60, allowed=True)
    results = run(talked, later, policy={"preset": "us-reg-f"})
    assert results[1].rule_id == "cap.regf_quiet_after_conversation" and results[1].changed
