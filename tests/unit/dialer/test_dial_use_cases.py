"""The dial use cases (`Gate.request_dial`, `check_dial`, `recheck_attempt`) against the
fake ledger: what they decide, what they write, and that they fail closed."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from dialer.errors import AmbiguousCase, NoSuchCase
from dialer.model import AttemptRecord, CaseRecord, ContactRecord, Principal
from dialer.usecases import CheckDial, Gate, RequestDial
from policy import load_policy
from tests.fakes import FakeClock, FakeDialLedger

SHANGHAI = ZoneInfo("Asia/Shanghai")
NUMBER = "+8613800000001"
COLLECTOR = Principal(user_id=1, name="col-1", role="collector", creditors=frozenset({"bank-a"}))
PBX = Principal(user_id=2, name="pbx", role="pbx", creditors=frozenset({"bank-a"}))


def a_case(pk: int = 1, case_id: str = "A-1", number: str = NUMBER, *, status: str = "active",
           flags: frozenset[str] = frozenset(), creditor: str = "bank-a", agent: str = "col-1") -> CaseRecord:
    return CaseRecord(
        pk=pk, creditor=creditor, case_id=case_id, debtor_name="张三", status=status,
        commission_start=date(2026, 11, 1), commission_end=date(2026, 12, 31), assigned_agent=agent,
        flags=flags, amount_due="1000.00", overdue_days=30, follow_up_status="waiting", next_action_date=None,
        event_seq=0, contacts=(ContactRecord(number=number, relation="self"),),
    )


def given(at: datetime) -> tuple[Gate, FakeDialLedger, FakeClock]:
    ledger = FakeDialLedger()
    clock = FakeClock(at)
    ledger.add_user(COLLECTOR)
    ledger.add_user(PBX)
    return Gate(store=ledger, clock=clock, policies=load_policy({})), ledger, clock  # type: ignore[arg-type]


def ten_am() -> datetime:
    return datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI)


def dial(case_id: str = "A-1", **kw: object) -> RequestDial:
    return RequestDial(actor=COLLECTOR, case_id=case_id, number="13800000001", agent_id="col-1", **kw)  # type: ignore[arg-type]


async def test_an_allowed_dial_reserves_one_attempt_chains_one_decision_and_writes_one_event_in_two_crossings() -> None:
    gate, ledger, _ = given(ten_am())
    ledger.add_case(a_case())
    result = await gate.request_dial(dial())
    assert result.allowed and result.attempt is not None
    assert [a.attempt_id for a in ledger.attempts] == [result.attempt.attempt_id]
    assert ledger.attempts[0].state == "authorised" and ledger.attempts[0].number == NUMBER
    assert [(d.decision_id, d.seq, d.kind, d.allowed) for d in ledger.decisions] == [(result.decision_id, 1, "dial", True)]
    assert [e["type"] for e in ledger.outbox] == ["dial.allowed"]
    assert ledger.units == 1 and ledger.lock_keys == [("~agent:col-1", "case:A-1", f"number:{NUMBER}")]


async def test_a_dial_after_nine_in_the_evening_is_blocked_by_the_window_and_reserves_nothing() -> None:
    gate, ledger, _ = given(datetime(2026, 11, 24, 21, 30, tzinfo=SHANGHAI))
    ledger.add_case(a_case())
    result = await gate.request_dial(dial())
    assert not result.allowed and result.decision.rule_id == "window.outside_hours"
    assert ledger.attempts == []
    assert [(d.allowed, d.rule_id) for d in ledger.decisions] == [(False, "window.outside_hours")]
    assert [e["type"] for e in ledger.outbox] == ["dial.blocked"]


async def test_a_third_dial_within_the_hour_is_blocked_by_the_hourly_cap() -> None:
    gate, ledger, clock = given(ten_am())
    ledger.add_case(a_case())
    answers = []
    for _ in range(3):
        answers.append((await gate.request_dial(dial())).decision.rule_id)
        clock.advance(minutes=5)
    assert answers[:2] == ["allow", "allow"] and answers[2].startswith("cap.")
    assert len(ledger.attempts) == 2 and [d.seq for d in ledger.decisions] == [1, 2, 3]


async def test_a_paused_case_is_a_hard_stop() -> None:
    gate, ledger, _ = given(ten_am())
    ledger.add_case(a_case(status="paused"))
    result = await gate.request_dial(dial())
    assert not result.allowed and result.decision.rule_id == "case.paused"
    assert result.decision.next_allowed_at is None and ledger.attempts == []


async def test_a_disputed_case_is_a_hard_stop() -> None:
    gate, ledger, _ = given(ten_am())
    ledger.add_case(a_case(flags=frozenset({"dispute"})))
    result = await gate.request_dial(dial())
    assert not result.allowed and result.decision.rule_id == "case.dispute" and ledger.attempts == []


async def test_the_sip_dial_of_a_clicked_number_consumes_its_authorisation_instead_of_counting_again() -> None:
    gate, ledger, clock = given(ten_am())
    ledger.add_case(a_case())
    clicked = await gate.request_dial(dial())
    assert clicked.attempt is not None
    clock.advance(seconds=20)
    invite = RequestDial(actor=PBX, case_id="", number="13800000001", agent_id="col-1", channel="sip",
                         match_pending=True, caller_line="line-1", lines_by_creditor={"bank-a": frozenset({"line-1"})})
    placed = await gate.request_dial(invite)
    assert placed.allowed and placed.reused
    assert placed.attempt is not None and placed.attempt.attempt_id == clicked.attempt.attempt_id
    assert placed.decision_id == clicked.decision_id
    assert [(a.attempt_id, a.state) for a in ledger.attempts] == [(clicked.attempt.attempt_id, "dialing")]
    assert len(ledger.decisions) == 1  # the authorising decision, not a second one
    assert [e["type"] for e in ledger.outbox] == ["dial.allowed", "attempt.state"]


async def test_an_expired_authorisation_is_not_consumed_and_the_sip_dial_is_decided_and_counted() -> None:
    gate, ledger, clock = given(ten_am())
    ledger.add_case(a_case())
    clicked = await gate.request_dial(dial())
    clock.advance(minutes=5)  # past the 120 s validity
    placed = await gate.request_dial(RequestDial(actor=PBX, case_id="", number="13800000001", agent_id="col-1",
                                                 channel="sip", match_pending=True, caller_line="line-1",
                                                 lines_by_creditor={"bank-a": frozenset({"line-1"})}))
    assert placed.allowed and not placed.reused
    assert placed.attempt is not None and placed.attempt.attempt_id != clicked.attempt.attempt_id  # type: ignore[union-attr]
    assert len(ledger.attempts) == 2 and len(ledger.decisions) == 2


async def test_a_store_that_is_down_fails_closed_with_a_block_and_nothing_reserved() -> None:
    gate, ledger, _ = given(ten_am())
    ledger.add_case(a_case())
    ledger.unavailable = True
    result = await gate.request_dial(dial())
    assert not result.allowed and result.decision.rule_id == "system.store_unavailable"
    assert result.attempt is None and ledger.attempts == [] and ledger.decisions == []


async def test_a_store_lost_before_the_commit_keeps_no_attempt_and_logs_the_block_once_it_answers() -> None:
    gate, ledger, _ = given(ten_am())
    ledger.add_case(a_case())
    ledger.fail_commit = True
    result = await gate.request_dial(dial())
    assert not result.allowed and result.decision.rule_id == "system.store_unavailable"
    assert ledger.attempts == [] and ledger.outbox == []
    assert [(d.decision_id, d.rule_id) for d in ledger.decisions] == [(result.decision_id, "system.store_unavailable")]


async def test_a_refusal_made_before_the_case_is_known_goes_to_a_named_creditor_only_within_the_callers_scope() -> None:
    # A bank-a user naming bank-b must not write into bank-b's log.
    gate, ledger, _ = given(ten_am())
    for creditor in ("bank-b", "bank-a"):
        await gate.record_refusal(dial(case_id="", creditor=creditor), "case.not_found", "no case", "无此案件")
    assert [d.creditor for d in ledger.decisions] == ["-", "bank-a"]


async def test_a_dial_naming_no_case_resolves_the_agents_one_active_case_holding_the_number() -> None:
    gate, ledger, _ = given(ten_am())
    ledger.add_case(a_case(pk=1, case_id="A-1", number="+8613800000009"))
    ledger.add_case(a_case(pk=2, case_id="A-2"))
    result = await gate.request_dial(dial(case_id=""))
    assert result.allowed and result.record.case_id == "A-2"


async def test_a_dial_naming_no_case_with_two_of_the_agents_cases_holding_the_number_is_ambiguous() -> None:
    gate, ledger, _ = given(ten_am())
    ledger.add_case(a_case(pk=1, case_id="A-1"))
    ledger.add_case(a_case(pk=2, case_id="A-2"))
    with pytest.raises(AmbiguousCase):
        await gate.request_dial(dial(case_id=""))
    assert ledger.attempts == [] and ledger.decisions == []


async def test_another_creditors_case_is_answered_as_missing() -> None:
    gate, ledger, _ = given(ten_am())
    ledger.add_case(a_case(creditor="bank-b"))
    with pytest.raises(NoSuchCase):
        await gate.request_dial(dial())
    assert ledger.decisions == []


async def test_a_check_decides_and_logs_without_reserving() -> None:
    gate, ledger, _ = given(ten_am())
    ledger.add_case(a_case())
    result = await gate.check_dial(CheckDial(actor=COLLECTOR, case_id="A-1", number="13800000001", agent_id="col-1"))
    assert result.allowed and result.attempt is None
    assert ledger.attempts == [] and [d.kind for d in ledger.decisions] == ["check"] and ledger.outbox == []


async def test_a_recheck_does_not_count_the_attempt_against_itself_but_sees_a_pause_that_arrived_since() -> None:
    gate, ledger, _ = given(ten_am())
    ledger.add_case(a_case())
    for i in range(1, 2):  # one earlier dial this hour: the clicked one is the second
        ledger.add_attempt(AttemptRecord(
            attempt_id=f"old-{i}", case_pk=1, creditor="bank-a", case_id="A-1", number=NUMBER, relation="self",
            agent_id="col-1", channel="api", state="completed", at=ten_am() - timedelta(minutes=30),
            valid_until=ten_am(), decision_id=f"d-old-{i}",
        ))
    clicked = await gate.request_dial(dial())
    assert clicked.allowed and clicked.attempt is not None
    again = await gate.recheck_attempt(clicked.attempt.attempt_id, PBX)
    assert again.allowed
    ledger.state.cases[0] = a_case(status="paused")
    stopped = await gate.recheck_attempt(clicked.attempt.attempt_id, PBX)
    assert not stopped.allowed and stopped.rule_id == "case.paused"
    assert [d.kind for d in ledger.decisions] == ["dial", "recheck", "recheck"]


def sip_leg(attempt_id: str | None = None) -> RequestDial:
    """The PBX's INVITE for a clicked number (the debtor leg), naming the attempt or not."""
    return RequestDial(actor=PBX, case_id="", number="13800000001", agent_id="col-1", channel="sip",
                       match_pending=True, attempt_id=attempt_id, caller_line="line-1",
                       lines_by_creditor={"bank-a": frozenset({"line-1"})})


@pytest.mark.parametrize(("stopped", "rule_id"), [
    (a_case(status="paused"), "case.paused"),
    (a_case(status="settled"), "case.closed"),
    (a_case(flags=frozenset({"complaint_risk"})), "case.complaint_risk"),
    (replace(a_case(), contacts=(ContactRecord(number=NUMBER, relation="self", do_not_call=True),)),
     "contact.do_not_call"),
])
@pytest.mark.parametrize("named", [True, False], ids=["attempt named", "attempt found by number"])
async def test_a_stop_that_arrives_between_the_click_and_the_pbxs_invite_blocks_the_debtor_leg(
        stopped: CaseRecord, rule_id: str, named: bool) -> None:
    gate, ledger, clock = given(ten_am())
    ledger.add_case(a_case())
    clicked = await gate.request_dial(dial())
    assert clicked.allowed and clicked.attempt is not None
    clock.advance(seconds=30)
    ledger.state.cases[0] = stopped
    placed = await gate.request_dial(sip_leg(clicked.attempt.attempt_id if named else None))
    assert not placed.allowed and placed.decision.rule_id == rule_id and placed.attempt is None
    assert [(d.kind, d.channel, d.allowed) for d in ledger.decisions] == [("dial", "api", True), ("dial", "sip", False)]
    assert [a.state for a in ledger.attempts] == ["authorised"]  # never dialled: it expires, nothing placed


async def test_a_window_that_closes_between_the_click_and_the_invite_blocks_the_debtor_leg() -> None:
    gate, ledger, clock = given(datetime(2026, 11, 24, 20, 59, 30, tzinfo=SHANGHAI))
    ledger.add_case(a_case())
    clicked = await gate.request_dial(dial())
    assert clicked.allowed and clicked.attempt is not None
    clock.advance(seconds=45)
    placed = await gate.request_dial(sip_leg(clicked.attempt.attempt_id))
    assert not placed.allowed and placed.decision.rule_id == "window.outside_hours"


async def test_the_invite_of_a_click_at_the_hourly_cap_is_not_counted_against_itself() -> None:
    gate, ledger, clock = given(ten_am())
    ledger.add_case(a_case())
    ledger.add_attempt(AttemptRecord(
        attempt_id="old-1", case_pk=1, creditor="bank-a", case_id="A-1", number=NUMBER, relation="self",
        agent_id="col-1", channel="api", state="completed", at=ten_am() - timedelta(minutes=30),
        valid_until=ten_am(), decision_id="d-old-1",
    ))
    clicked = await gate.request_dial(dial())  # the second of two this hour
    assert clicked.allowed and clicked.attempt is not None
    clock.advance(seconds=30)
    placed = await gate.request_dial(sip_leg(clicked.attempt.attempt_id))
    assert placed.allowed and placed.reused and placed.decision_id == clicked.decision_id
    assert [(a.attempt_id, a.state) for a in ledger.attempts][-1] == (clicked.attempt.attempt_id, "dialing")
    assert len(ledger.decisions) == 1


async def test_a_recheck_for_a_collector_disabled_since_the_click_refuses_the_debtor_leg() -> None:
    gate, ledger, _ = given(ten_am())
    ledger.add_case(a_case())
    clicked = await gate.request_dial(dial())
    assert clicked.allowed and clicked.attempt is not None
    del ledger.state.users["col-1"]  # disabled: the store reads no enabled user by that name
    stopped = await gate.recheck_attempt(clicked.attempt.attempt_id, PBX)
    assert not stopped.allowed and stopped.rule_id == "agent.not_assigned"
    assert "disabled" in stopped.reason and "已停用" in stopped.reason_zh


async def test_a_dial_that_waited_for_the_store_past_the_windows_end_is_decided_at_the_time_it_got_it() -> None:
    # Clicked at 20:59:58; another decision held the case's lock for 5 s. The answer is
    # given, and the call placed, after 21:00: it must be decided as of then.
    gate, ledger, clock = given(datetime(2026, 11, 24, 20, 59, 58, tzinfo=SHANGHAI))
    ledger.add_case(a_case())

    async def the_lock_is_held_five_seconds() -> None:
        clock.advance(seconds=5)

    ledger.after_gather = the_lock_is_held_five_seconds
    result = await gate.request_dial(dial())
    assert not result.allowed and result.decision.rule_id == "window.outside_hours"
    assert result.record.at == datetime(2026, 11, 24, 21, 0, 3, tzinfo=SHANGHAI)
    assert ledger.attempts == []


async def test_a_recheck_that_waited_for_the_store_past_the_windows_end_is_decided_at_the_time_it_got_it() -> None:
    # The agent answered at 20:59:58; the store was busy for 5 s: the debtor leg would be
    # dialled after 21:00, so the recheck must say no.
    gate, ledger, clock = given(datetime(2026, 11, 24, 20, 59, 50, tzinfo=SHANGHAI))
    ledger.add_case(a_case())
    clicked = await gate.request_dial(dial())
    assert clicked.allowed and clicked.attempt is not None
    clock.advance(seconds=8)

    async def the_store_is_busy_five_seconds() -> None:
        clock.advance(seconds=5)

    ledger.after_gather = the_store_is_busy_five_seconds
    again = await gate.recheck_attempt(clicked.attempt.attempt_id, PBX)
    assert not again.allowed and again.rule_id == "window.outside_hours"
