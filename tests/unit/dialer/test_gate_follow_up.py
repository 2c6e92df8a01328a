"""Follow-up status and next action date after an outcome (seed 000's table)."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from dialer.model import Principal
from dialer.usecases import LogOutcome, PromiseInput, follow_up

SH = ZoneInfo("Asia/Shanghai")
ME = Principal(1, "c", "collector", frozenset({"bank-a"}))
TUE = date(2026, 11, 24)


def outcome(disposition: str = "connected_self", result: str = "none", **kw: object) -> LogOutcome:
    return LogOutcome(actor=ME, attempt_id="a", disposition=disposition, result=result, note="n", **kw)  # type: ignore[arg-type]


def test_a_promise_to_pay_is_followed_up_the_day_before_the_promised_date() -> None:
    o = outcome(result="promise_to_pay", promise=PromiseInput("100", date(2026, 12, 1)))
    assert follow_up(o, True, TUE, SH, True) == ("promise", date(2026, 11, 30))


def test_an_instalment_plan_is_followed_up_the_day_before_the_instalment() -> None:
    o = outcome(result="instalment", promise=PromiseInput("100", date(2026, 12, 10)))
    assert follow_up(o, True, TUE, SH, True) == ("instalment", date(2026, 12, 9))


def test_a_callback_is_followed_up_on_the_agreed_day_in_the_policy_zone() -> None:
    o = outcome(result="callback", callback_at=datetime(2026, 11, 25, 17, 0, tzinfo=ZoneInfo("UTC")))
    assert follow_up(o, True, TUE, SH, True) == ("callback", date(2026, 11, 26))


def test_no_answer_is_followed_up_in_two_days() -> None:
    assert follow_up(outcome("no_answer"), False, TUE, SH, True) == ("waiting", date(2026, 11, 26))


def test_a_reachable_debtor_is_followed_up_in_three_working_days() -> None:
    # Tue 24 Nov 2026 + 3 working days = Fri 27 Nov.
    assert follow_up(outcome(), True, TUE, SH, True) == ("reachable", date(2026, 11, 27))


def test_a_case_with_no_dialable_number_left_is_lost_contact() -> None:
    status, when = follow_up(outcome("invalid_number"), False, TUE, SH, False)
    assert status == "lost_contact" and when == date(2026, 12, 2)


def test_dispute_and_complaint_risk_go_to_the_supervisor_today() -> None:
    assert follow_up(outcome(result="dispute"), True, TUE, SH, True) == ("dispute", TUE)
    assert follow_up(outcome(result="complaint_risk"), True, TUE, SH, True) == ("complaint_risk", TUE)
