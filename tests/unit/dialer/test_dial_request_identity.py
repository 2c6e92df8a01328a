"""A dial with a request identity (an INVITE's transaction, an Idempotency-Key) is decided
and counted once: its retry, on this instance or another, gets the first answer."""

from __future__ import annotations

import pytest

from dialer.errors import RequestReused
from dialer.model import AttemptRecord
from dialer.usecases import RequestDial
from tests.unit.dialer.test_dial_use_cases import COLLECTOR, PBX, a_case, dial, given, ten_am


def invite(key: str = "call-1;tag-1;1;z9hG4bK-1") -> RequestDial:
    return RequestDial(actor=PBX, case_id="", number="13800000001", agent_id="col-1", channel="sip",
                       match_pending=True, request_key=key, caller_line="line-1",
                       lines_by_creditor={"bank-a": frozenset({"line-1"})})


async def test_a_dial_retried_with_its_key_gets_the_same_decision_and_attempt_and_counts_once() -> None:
    gate, ledger, clock = given(ten_am())
    ledger.add_case(a_case())
    first = await gate.request_dial(dial(request_key="k-1"))
    clock.advance(seconds=2)
    again = await gate.request_dial(dial(request_key="k-1"))
    assert first.allowed and again.allowed and again.replayed and not first.replayed
    assert again.decision_id == first.decision_id
    assert again.attempt is not None and first.attempt is not None
    assert again.attempt.attempt_id == first.attempt.attempt_id
    assert again.decision.to_dict() == first.decision.to_dict()
    assert len(ledger.attempts) == 1 and len(ledger.decisions) == 1 and len(ledger.outbox) == 1


async def test_a_blocked_dial_retried_with_its_key_is_the_same_block_logged_once() -> None:
    gate, ledger, _ = given(ten_am())
    ledger.add_case(a_case(status="paused"))
    first = await gate.request_dial(dial(request_key="k-2"))
    again = await gate.request_dial(dial(request_key="k-2"))
    assert not again.allowed and again.replayed and again.decision.rule_id == "case.paused"
    assert again.decision_id == first.decision_id and len(ledger.decisions) == 1 and ledger.attempts == []


async def test_an_invite_retried_after_it_consumed_a_click_gets_the_same_attempt_not_a_new_one() -> None:
    gate, ledger, clock = given(ten_am())
    ledger.add_case(a_case())
    clicked = await gate.request_dial(dial())
    clock.advance(seconds=20)
    placed = await gate.request_dial(invite())
    clock.advance(seconds=1)
    retried = await gate.request_dial(invite())
    assert placed.reused and retried.replayed and retried.allowed
    assert clicked.attempt is not None and retried.attempt is not None
    assert retried.attempt.attempt_id == clicked.attempt.attempt_id and retried.decision_id == clicked.decision_id
    assert [(a.attempt_id, a.state) for a in ledger.attempts] == [(clicked.attempt.attempt_id, "dialing")]
    assert len(ledger.decisions) == 1 and [e["type"] for e in ledger.outbox] == ["dial.allowed", "attempt.state"]


async def test_a_key_reused_for_another_number_is_refused_and_writes_nothing() -> None:
    gate, ledger, _ = given(ten_am())
    ledger.add_case(a_case())
    await gate.request_dial(dial(request_key="k-3"))
    with pytest.raises(RequestReused) as refused:
        await gate.request_dial(RequestDial(actor=COLLECTOR, case_id="A-1", number="13800000009", agent_id="col-1",
                                            request_key="k-3"))
    assert refused.value.status == 422 and refused.value.details["header"] == "Idempotency-Key"
    assert len(ledger.attempts) == 1 and len(ledger.decisions) == 1


async def test_the_same_key_from_another_user_is_its_own_request() -> None:
    gate, ledger, _ = given(ten_am())
    ledger.add_case(a_case())
    mine = await gate.request_dial(dial(request_key="k-4"))
    theirs = await gate.request_dial(RequestDial(actor=PBX, case_id="A-1", number="13800000001", agent_id="col-1",
                                                 request_key="k-4"))
    assert not theirs.replayed and theirs.decision_id != mine.decision_id and len(ledger.attempts) == 2


async def test_two_instances_racing_on_one_invite_end_with_one_decision_and_both_give_its_answer() -> None:
    gate, ledger, _ = given(ten_am())
    ledger.add_case(a_case())
    other: list[object] = []

    async def the_other_instance_decides_first() -> None:
        other.append(await gate.request_dial(invite("race")))

    ledger.after_gather = the_other_instance_decides_first
    loser = await gate.request_dial(invite("race"))
    (winner,) = other
    assert loser.replayed and loser.decision_id == winner.decision_id  # type: ignore[attr-defined]
    assert loser.attempt is not None and loser.attempt.attempt_id == winner.attempt.attempt_id  # type: ignore[attr-defined]
    assert len(ledger.attempts) == 1 and len(ledger.decisions) == 1


async def test_a_dial_failed_closed_stores_no_answer_so_its_retry_is_decided() -> None:
    gate, ledger, _ = given(ten_am())
    ledger.add_case(a_case())
    ledger.unavailable = True
    down = await gate.request_dial(dial(request_key="k-5"))
    ledger.unavailable = False
    back = await gate.request_dial(dial(request_key="k-5"))
    assert down.decision.rule_id == "system.store_unavailable" and back.allowed and not back.replayed
    assert len(ledger.attempts) == 1


async def test_a_race_lost_while_the_store_goes_away_fails_closed_with_nothing_counted_twice() -> None:
    gate, ledger, _ = given(ten_am())
    ledger.add_case(a_case())

    async def the_other_instance_decides_and_the_store_goes() -> None:
        await gate.request_dial(invite("race-down"))
        ledger.unavailable = True

    ledger.after_gather = the_other_instance_decides_and_the_store_goes
    loser = await gate.request_dial(invite("race-down"))
    assert not loser.allowed and loser.decision.rule_id == "system.store_unavailable" and loser.attempt is None
    assert len(ledger.attempts) == 1 and len(ledger.decisions) == 1


class CountingPbx:
    """A PBX that places a call per `originate` and counts them."""

    def __init__(self) -> None:
        self.placed: list[str] = []

    def admit(self) -> None:
        return None

    async def originate(self, attempt: AttemptRecord) -> None:
        self.placed.append(attempt.attempt_id)


async def test_a_click_to_dial_retried_with_its_key_places_the_call_once() -> None:
    gate, ledger, clock = given(ten_am())
    ledger.add_case(a_case())
    pbx = CountingPbx()
    gate.pbx = pbx
    first = await gate.request_dial(dial(request_key="k-6"))
    await gate.drain()
    clock.advance(seconds=2)
    again = await gate.request_dial(dial(request_key="k-6"))
    await gate.drain()
    assert first.allowed and again.allowed and again.replayed and first.attempt is not None
    assert pbx.placed == [first.attempt.attempt_id]
    assert len(ledger.attempts) == 1


async def test_an_allowed_invite_arriving_again_after_its_transaction_lifetime_is_refused_and_logged() -> None:
    # No PBX retries an INVITE after 64*T1: given its 302 again, it would place a second call.
    gate, ledger, clock = given(ten_am())
    ledger.add_case(a_case())
    placed = await gate.request_dial(invite())
    clock.advance(seconds=33)
    again = await gate.request_dial(invite())
    assert placed.allowed and not again.allowed and not again.replayed
    assert again.decision.rule_id == "sip.invite_replayed" and "不再重复放行" in again.decision.reason_zh
    assert placed.attempt is not None and again.record.attempt_id == placed.attempt.attempt_id
    assert [d.allowed for d in ledger.decisions] == [True, False] and len(ledger.attempts) == 1


async def test_an_invite_retried_within_its_lifetime_after_consuming_an_old_click_gets_the_same_302() -> None:
    # The lifetime runs from the INVITE's arrival, not from the click's older decision.
    gate, ledger, clock = given(ten_am())
    ledger.add_case(a_case())
    clicked = await gate.request_dial(dial())
    clock.advance(seconds=100)
    placed = await gate.request_dial(invite())
    clock.advance(seconds=5)
    retried = await gate.request_dial(invite())
    assert placed.reused and retried.allowed and retried.replayed
    assert clicked.attempt is not None and retried.attempt is not None
    assert retried.attempt.attempt_id == clicked.attempt.attempt_id and len(ledger.decisions) == 1


async def test_a_click_to_dial_retried_with_its_key_an_hour_later_gets_the_same_answer() -> None:
    # An Idempotency-Key replay returns the attempt; it places nothing by itself.
    gate, ledger, clock = given(ten_am())
    ledger.add_case(a_case())
    first = await gate.request_dial(dial(request_key="k-late"))
    clock.advance(seconds=3600)
    again = await gate.request_dial(dial(request_key="k-late"))
    assert again.allowed and again.replayed and again.decision_id == first.decision_id
    assert len(ledger.decisions) == 1 and len(ledger.attempts) == 1


async def test_an_allowed_invite_arriving_again_after_the_clock_stepped_back_is_refused() -> None:
    # NTP stepped the clock back an hour: "now - allowed at" is negative, which no
    # elapsed time can be, so how long ago the 302 was given is unknown: no second one.
    gate, ledger, clock = given(ten_am())
    ledger.add_case(a_case())
    placed = await gate.request_dial(invite())
    clock.advance(seconds=-3600)
    again = await gate.request_dial(invite())
    assert placed.allowed and not again.allowed and not again.replayed
    assert again.decision.rule_id == "sip.invite_replayed"
    assert "clock" in again.decision.reason and "时钟" in again.decision.reason_zh


async def test_an_invite_from_an_unregistered_line_cannot_place_a_clicked_call() -> None:
    # The click was decided for the service's own line; the INVITE that would place it
    # comes from a line no creditor registered (not recorded): it must not go out.
    gate, ledger, clock = given(ten_am())
    ledger.add_case(a_case())
    clicked = await gate.request_dial(dial())
    clock.advance(seconds=5)
    placed = await gate.request_dial(RequestDial(
        actor=PBX, case_id="", number="13800000001", agent_id="col-1", channel="sip", match_pending=True,
        request_key="call-9;tag-9;1;z9hG4bK-9", caller_line="line-9", lines_by_creditor={"bank-a": frozenset({"line-1"})},
    ))
    assert clicked.allowed
    assert not placed.allowed and placed.decision.rule_id == "line.not_registered"
