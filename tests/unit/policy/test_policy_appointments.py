"""Appointments (与客户约定): exempt from the window and the caps, never from hard stops."""

from __future__ import annotations

from datetime import timedelta

from policy_factories import (
    DEBTOR,
    FAMILY,
    appointment,
    attempts_at,
    check,
    decide,
    make_case,
    make_request,
    policy_from,
    sh,
)


def test_an_agreed_callback_at_2130_makes_a_call_outside_hours_lawful() -> None:
    request = make_request(appointments=(appointment(sh(2026, 11, 24, 21, 30)),))
    decision = decide(request, now=sh(2026, 11, 24, 21, 35))
    assert decision.allowed
    assert decision.rule_id == "appointment.exception"
    hours = check(decision, "window.outside_hours")
    assert not hours.passed and hours.exempted
    assert decision.inputs_used["appointment"]["used"] is True
    assert "约定" in decision.reason_zh


def test_the_tolerance_is_inclusive_on_both_sides_and_not_a_second_more() -> None:
    request = make_request(appointments=(appointment(sh(2026, 11, 24, 22, 0)),))
    assert decide(request, now=sh(2026, 11, 24, 21, 45)).rule_id == "appointment.exception"
    assert decide(request, now=sh(2026, 11, 24, 22, 15)).rule_id == "appointment.exception"
    assert decide(request, now=sh(2026, 11, 24, 21, 44, 59)).rule_id == "window.outside_hours"
    assert decide(request, now=sh(2026, 11, 24, 22, 15, 1)).rule_id == "window.outside_hours"


def test_the_tolerance_is_configurable() -> None:
    pol = policy_from({"appointment": {"tolerance": "5m"}})
    request = make_request(appointments=(appointment(sh(2026, 11, 24, 22, 0)),))
    assert decide(request, policy=pol, now=sh(2026, 11, 24, 22, 5)).allowed
    assert not decide(request, policy=pol, now=sh(2026, 11, 24, 22, 6)).allowed


def test_an_appointment_exempts_the_caps_too() -> None:
    history = attempts_at(sh(2026, 11, 24, 15, 5), sh(2026, 11, 24, 15, 20))
    request = make_request(appointments=(appointment(sh(2026, 11, 24, 15, 30)),))
    decision = decide(request, history=history, now=sh(2026, 11, 24, 15, 30))
    assert decision.rule_id == "appointment.exception"
    assert check(decision, "cap.number_hourly").exempted


def test_an_appointment_never_lifts_the_per_case_daily_cap_against_harassment() -> None:
    # The rules excuse the per-number limits "without an agreement"; ten calls of a case's
    # numbers in a day stay the most, however many callbacks were agreed.
    pol = policy_from({})
    other = "+8613900000002"
    history = [*attempts_at(*(sh(2026, 11, 24, 9, 0) + timedelta(minutes=20 * i) for i in range(10)), number=other)]
    request = make_request(appointments=(appointment(sh(2026, 11, 24, 15, 30)),))
    decision = decide(request, history=history, policy=pol, now=sh(2026, 11, 24, 15, 30))
    assert not decision.allowed and decision.rule_id == "cap.case_daily"
    assert not check(decision, "cap.case_daily").exempted
    assert decision.next_allowed_at is not None and decision.next_allowed_at.date() > sh(2026, 11, 24, 0, 0).date()


def test_a_cap_may_say_an_appointment_waives_it() -> None:
    pol = policy_from({"caps": [{"id": "cap.case_daily", "appointment_waives": True}]})
    other = "+8613900000002"
    history = attempts_at(*(sh(2026, 11, 24, 9, 0) + timedelta(minutes=20 * i) for i in range(10)), number=other)
    request = make_request(appointments=(appointment(sh(2026, 11, 24, 15, 30)),))
    assert decide(request, history=history, policy=pol, now=sh(2026, 11, 24, 15, 30)).rule_id == "appointment.exception"


def test_at_most_max_attempts_are_exempted_in_one_slot() -> None:
    request = make_request(appointments=(appointment(sh(2026, 11, 24, 21, 30)),))
    history = attempts_at(sh(2026, 11, 24, 21, 20), sh(2026, 11, 24, 21, 25))
    decision = decide(request, history=history, now=sh(2026, 11, 24, 21, 31))
    assert decision.rule_id == "window.outside_hours"
    assert decision.inputs_used["appointment"]["slot_attempts"] == 2
    assert decision.inputs_used["appointment"]["exempts"] is False
    one_more = make_request(appointments=request.appointments)
    pol = policy_from({"appointment": {"max_attempts": 3}})
    assert decide(one_more, history=history, policy=pol, now=sh(2026, 11, 24, 21, 31)).allowed


def test_an_appointment_never_exempts_a_hard_stop() -> None:
    case = make_case("C-dispute", flags=frozenset({"dispute"}))
    request = make_request(case=case, appointments=(appointment(sh(2026, 11, 24, 21, 30)),))
    decision = decide(request, now=sh(2026, 11, 24, 21, 30))
    assert decision.rule_id == "case.dispute"
    assert decision.next_allowed_at is None


def test_an_appointment_does_not_exempt_a_blackout_date() -> None:
    pol = policy_from({"blackout_dates": ["2026-11-24"]})
    request = make_request(appointments=(appointment(sh(2026, 11, 24, 10, 0)),))
    assert decide(request, policy=pol, now=sh(2026, 11, 24, 10, 0)).rule_id == "window.blackout_date"


def test_an_appointment_for_another_contact_exempts_nothing() -> None:
    request = make_request(number=DEBTOR, appointments=(appointment(sh(2026, 11, 24, 21, 30), number=FAMILY),))
    assert decide(request, now=sh(2026, 11, 24, 21, 30)).rule_id == "window.outside_hours"


def test_inside_the_window_an_appointment_is_recorded_but_the_rule_is_allow() -> None:
    request = make_request(appointments=(appointment(sh(2026, 11, 24, 10, 0)),))
    decision = decide(request, now=sh(2026, 11, 24, 10, 0))
    assert decision.rule_id == "allow"
    assert decision.inputs_used["appointment"]["exempts"] is True
    assert decision.inputs_used["appointment"]["used"] is False


def test_next_allowed_at_is_the_opening_of_an_upcoming_appointment_slot() -> None:
    request = make_request(appointments=(appointment(sh(2026, 11, 24, 22, 30)),))
    decision = decide(request, now=sh(2026, 11, 24, 21, 5))
    assert decision.rule_id == "window.outside_hours"
    assert decision.next_allowed_at == sh(2026, 11, 24, 22, 15)
    assert decide(request, now=decision.next_allowed_at).allowed
    assert not decide(request, now=decision.next_allowed_at - timedelta(seconds=1)).allowed
