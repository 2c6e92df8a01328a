"""Follow-up status and next action date after an outcome (seed 000's table)."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from dialer.errors import UnprocessableEntity
from dialer.model import CaseRecord, Principal
from dialer.usecases import LogOutcome, PromiseInput, chosen_follow_up, follow_up

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


# -- a chosen next action (the 催记's date and status) within the rules' bounds ------------
CASE = CaseRecord(pk=1, creditor="bank-a", case_id="C-1", debtor_name="x", status="active",
                  commission_start=date(2026, 11, 1), commission_end=date(2027, 1, 31), assigned_agent="c",
                  flags=frozenset(), amount_due=None, overdue_days=None, follow_up_status="new",
                  next_action_date=None, event_seq=0)
TUE_10 = datetime(2026, 11, 24, 10, 0, tzinfo=SH)


@pytest.mark.parametrize(
    ("status", "day", "derived", "expected"),
    [
        (None, date(2026, 11, 25), ("waiting", date(2026, 11, 26)), ("waiting", date(2026, 11, 25))),
        (None, date(2026, 11, 26), ("waiting", date(2026, 11, 26)), ("waiting", date(2026, 11, 26))),
        ("urgent", None, ("reachable", date(2026, 11, 27)), ("urgent", date(2026, 11, 25))),
        ("urgent", date(2026, 11, 27), ("reachable", date(2026, 11, 27)), ("urgent", date(2026, 11, 27))),
        ("night", None, ("waiting", date(2026, 11, 26)), ("night", date(2026, 11, 24))),
        ("custom", date(2027, 1, 31), ("waiting", date(2026, 11, 26)), ("custom", date(2027, 1, 31))),
    ],
)
def test_a_chosen_next_action_within_its_bounds_is_taken(status, day, derived, expected) -> None:
    o = outcome(status=status, next_action_date=day)
    assert chosen_follow_up(o, derived[0], derived[1], TUE_10, CASE) == expected


@pytest.mark.parametrize(
    ("status", "day", "derived", "field"),
    [
        (None, date(2026, 11, 27), ("waiting", date(2026, 11, 26)), "next_action_date"),  # past the rule's date
        (None, date(2026, 11, 23), ("waiting", date(2026, 11, 26)), "next_action_date"),  # in the past
        ("urgent", date(2026, 11, 30), ("reachable", date(2026, 11, 27)), "next_action_date"),  # > 3 working days
        ("night", date(2026, 11, 25), ("waiting", date(2026, 11, 26)), "next_action_date"),  # not this evening
        ("custom", None, ("waiting", date(2026, 11, 26)), "next_action_date"),  # custom needs a date
        ("custom", date(2027, 2, 1), ("waiting", date(2026, 11, 26)), "next_action_date"),  # past the commission
        ("sleepy", None, ("waiting", date(2026, 11, 26)), "status"),
        ("urgent", None, ("dispute", date(2026, 11, 24)), "status"),  # a stop keeps its own status
        (None, date(2026, 11, 24), ("paused", None), "next_action_date"),  # a paused case has no follow-up
    ],
)
def test_a_chosen_next_action_outside_its_bounds_is_refused_naming_the_field(status, day, derived, field) -> None:
    with pytest.raises(UnprocessableEntity) as err:
        chosen_follow_up(outcome(status=status, next_action_date=day), derived[0], derived[1], TUE_10, CASE)
    (e,) = err.value.details["errors"]
    assert e["field"] == field and e["error"] and e["error_zh"]


def test_night_collection_is_refused_from_half_past_eight() -> None:
    late = datetime(2026, 11, 24, 20, 30, tzinfo=SH)
    with pytest.raises(UnprocessableEntity):
        chosen_follow_up(outcome(status="night"), "waiting", date(2026, 11, 26), late, CASE)


def test_only_the_holder_or_an_authorised_agent_makes_a_promise() -> None:
    promise = PromiseInput("100", date(2026, 12, 1))
    relative = outcome("connected_third_party", "promise_to_pay", promise=promise)
    agent = outcome("connected_third_party", "promise_to_pay", promise=promise, authorised_agent=True)
    assert follow_up(relative, True, TUE, SH, True)[0] == "reachable"
    assert follow_up(agent, True, TUE, SH, True) == ("promise", date(2026, 11, 30))
