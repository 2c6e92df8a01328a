"""Every rule id: when it fails, that it decides in precedence order, and how it explains."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest
from policy_factories import (
    DEBTOR,
    FAMILY,
    collector,
    decide,
    make_case,
    make_request,
    sh,
)

from policy import CASE_FLAGS, AgentSnapshot, ContactSnapshot

RULE_ORDER = [
    "system.store_unavailable",
    "system.recording_unavailable",
    "agent.not_assigned",
    "case.closed",
    "case.commission_not_started",
    "case.commission_expired",
    "case.paused",
    *(f"case.{f}" for f in CASE_FLAGS),
    "contact.not_authorized",
    "contact.invalid_number",
    "contact.do_not_call",
    "line.not_registered",
    "window.blackout_date",
    "window.outside_hours",
    "cap.number_hourly",
    "cap.number_daily",
    "cap.third_party_hourly",
    "cap.third_party_daily",
    "cap.case_daily",
]

NON_TEMPORAL_FAILURES = [
    ("system.store_unavailable", lambda: make_request(faults=frozenset({"store_unavailable"}))),
    ("system.recording_unavailable", lambda: make_request(faults=frozenset({"recording_unavailable"}))),
    ("agent.not_assigned", lambda: make_request(agent=collector("someone-else"))),
    ("case.closed", lambda: make_request(case=make_case(status="settled"))),
    ("case.closed", lambda: make_request(case=make_case(status="withdrawn"))),
    ("case.closed", lambda: make_request(case=make_case(status="returned"))),
    ("case.closed", lambda: make_request(case=make_case(status="archived-by-mistake"))),
    ("case.commission_not_started", lambda: make_request(case=make_case(commission_start=date(2026, 11, 25)))),
    ("case.commission_expired", lambda: make_request(case=make_case(commission_end=date(2026, 11, 23)))),
    ("case.paused", lambda: make_request(case=make_case(status="paused"))),
    *[
        (f"case.{flag}", (lambda flag=flag: make_request(case=make_case(flags=frozenset({flag})))))
        for flag in CASE_FLAGS
    ],
    ("contact.not_authorized", lambda: make_request(number="+8613811112222")),
    (
        "contact.invalid_number",
        lambda: make_request(case=make_case(contacts=(ContactSnapshot(DEBTOR, "self", status="invalid"),))),
    ),
    (
        "contact.invalid_number",
        lambda: make_request(number="+8612345", case=make_case(contacts=(ContactSnapshot("+8612345", "self"),))),
    ),
    (
        "contact.do_not_call",
        lambda: make_request(number=FAMILY, case=make_case(contacts=(ContactSnapshot(FAMILY, "family", do_not_call=True),))),
    ),
    (
        "line.not_registered",
        lambda: make_request(caller_line="+862100000000", registered_lines=frozenset({"+862161234567", "1001"})),
    ),
    ("line.not_registered", lambda: make_request(caller_line=None, registered_lines=frozenset({"1001"}))),
]


@pytest.mark.parametrize(("rule_id", "build"), NON_TEMPORAL_FAILURES, ids=[r for r, _ in NON_TEMPORAL_FAILURES])
def test_each_hard_stop_blocks_with_its_rule_id_and_no_next_allowed_time(rule_id, build) -> None:
    decision = decide(build(), now=sh(2026, 11, 24, 10, 0))
    assert not decision.allowed
    assert decision.rule_id == rule_id
    assert decision.next_allowed_at is None
    failing = [c for c in decision.checks if not c.passed]
    assert [c.rule_id for c in failing] == [rule_id]
    assert decision.reason.startswith(rule_id) and decision.reason_zh == failing[0].detail_zh


def test_every_rule_is_listed_once_in_precedence_order_even_when_allowed() -> None:
    decision = decide(now=sh(2026, 11, 24, 10, 0))
    assert decision.allowed and decision.rule_id == "allow"
    assert [c.rule_id for c in decision.checks] == RULE_ORDER


def test_every_check_explains_itself_in_english_and_chinese() -> None:
    for _, build in NON_TEMPORAL_FAILURES:
        for c in decide(build()).checks:
            assert c.detail and c.detail_zh, c.rule_id


def test_the_first_failing_rule_decides_while_later_failures_are_still_listed() -> None:
    request = make_request(
        case=make_case(status="paused", flags=frozenset({"dispute", "litigation"})),
        faults=frozenset({"recording_unavailable"}),
    )
    decision = decide(request, now=sh(2026, 11, 24, 23, 0))
    assert decision.rule_id == "system.recording_unavailable"
    failing = [c.rule_id for c in decision.checks if not c.passed]
    assert failing == [
        "system.recording_unavailable",
        "case.paused",
        "case.litigation",
        "case.dispute",
        "window.outside_hours",
    ]
    assert decision.next_allowed_at is None  # a non-temporal rule failed


def test_a_closed_case_outranks_a_paused_flag_and_the_contact_rules() -> None:
    request = make_request(number="+8613811113333", case=make_case("C-closed", status="settled"))
    assert decide(request).rule_id == "case.closed"


def test_a_supervisor_scoped_to_the_creditor_may_dial_a_case_assigned_to_someone_else() -> None:
    sup = AgentSnapshot("sup-1", "supervisor", frozenset({"bank-a"}))
    assert decide(make_request(agent=sup, case=make_case(assigned_agent="a7"))).allowed


def test_a_supervisor_of_another_creditor_may_not_dial() -> None:
    sup = AgentSnapshot("sup-2", "supervisor", frozenset({"bank-b"}))
    decision = decide(make_request(agent=sup))
    assert decision.rule_id == "agent.not_assigned"
    assert "bank-a" in decision.reason


@pytest.mark.parametrize("role", ["qa", "compliance", "data", "pbx", "admin"])
def test_roles_other_than_collector_and_supervisor_may_not_dial(role: str) -> None:
    agent = AgentSnapshot("a1", role, frozenset({"bank-a"}))
    assert decide(make_request(agent=agent)).rule_id == "agent.not_assigned"


def test_an_assigned_collector_not_cleared_for_the_creditor_may_not_dial() -> None:
    decision = decide(make_request(agent=collector("a1", frozenset({"bank-z"}))))
    assert decision.rule_id == "agent.not_assigned"


def test_commission_dates_are_whole_days_in_the_policy_zone_end_date_inclusive() -> None:
    case = make_case("C-comm", commission_start=date(2026, 11, 24), commission_end=date(2026, 11, 24))
    request = make_request(case=case, number=DEBTOR)
    # 23:59 on the end date in Shanghai is still inside; 00:00 the next day is not.
    last_minute = decide(request, now=sh(2026, 11, 24, 8, 0))
    assert last_minute.allowed
    assert decide(request, now=sh(2026, 11, 25, 0, 0)).rule_id == "case.commission_expired"
    # 2026-11-23T17:00Z is already 01:00 on the 24th in Shanghai: started (then blocked by the window).
    from datetime import datetime, timezone

    early = decide(request, now=datetime(2026, 11, 23, 17, 0, tzinfo=timezone.utc))
    assert early.rule_id == "window.outside_hours"
    assert decide(request, now=sh(2026, 11, 23, 23, 59)).rule_id == "case.commission_not_started"


def test_a_number_written_nationally_matches_the_e164_contact() -> None:
    decision = decide(make_request(number="138 0000 0001"))
    assert decision.allowed
    assert decision.inputs_used["relation"] == "self"


def test_registered_lines_accept_e164_equivalents_and_raw_pbx_line_ids() -> None:
    lines = frozenset({"+862161234567", "1001"})
    assert decide(make_request(caller_line="021-61234567", registered_lines=lines)).allowed
    assert decide(make_request(caller_line="1001", registered_lines=lines)).allowed
    assert decide(make_request(caller_line="1002", registered_lines=lines)).rule_id == "line.not_registered"


def test_click_to_dial_through_the_services_own_pbx_account_counts_as_a_registered_line() -> None:
    from policy_factories import check

    line = check(decide(make_request(caller_line="9999")), "line.not_registered")
    assert line.passed and "service's own PBX account" in line.detail


def test_a_sip_dial_of_a_creditor_without_registered_lines_fails_closed() -> None:
    from dataclasses import replace

    request = replace(make_request(caller_line="9999"), channel="sip")
    decision = decide(request)
    assert decision.rule_id == "line.not_registered" and decision.next_allowed_at is None
    assert "no registered-line list" in decision.reason and "未配置报备外呼线路" in decision.reason_zh


def test_allow_unregistered_lines_lets_a_creditors_sip_dials_through_and_says_so() -> None:
    from dataclasses import replace

    from policy_factories import check, policy_from

    pol = policy_from({"creditors": {"bank-a": {"allow_unregistered_lines": True}}})
    decision = decide(replace(make_request(caller_line="9999"), channel="sip"), policy=pol)
    assert decision.allowed and "allow_unregistered_lines" in check(decision, "line.not_registered").detail
    # A registered-line list, when there is one, still decides.
    listed = replace(make_request(caller_line="9999", registered_lines=frozenset({"1001"})), channel="sip")
    assert decide(listed, policy=pol).rule_id == "line.not_registered"


def test_details_mask_phone_numbers() -> None:
    decision = decide(make_request(number="+8613811112222"))
    assert "13811112222" not in decision.to_json()
    assert "138****2222" in decision.reason


def test_the_decision_serialises_to_json_with_its_policy_version_and_inputs() -> None:
    import json

    decision = decide(make_request(case=replace(make_case("C-json"), status="paused")))
    data = json.loads(decision.to_json())
    assert data["rule_id"] == "case.paused" and data["allowed"] is False
    assert data["next_allowed_at"] is None
    assert len(data["policy_version"]) == 64
    assert data["inputs_used"]["zone"] == "Asia/Shanghai"
    assert data["evaluated_at"] == "2026-11-24T10:00:00+08:00"


def test_an_agent_scope_given_as_a_plain_set_is_judged_the_same() -> None:
    sup = AgentSnapshot("sup-3", "supervisor", {"bank-a"})  # type: ignore[arg-type]
    assert decide(make_request(agent=sup, case=make_case("C-set", assigned_agent="a9"))).allowed
