"""dialer/attempt_state.py, the one writer of attempt state and `attempt.state` events,
against an in-memory unit of work: which state each move writes, which event fields it
publishes, and that a refused PBX event writes nothing."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from dialer import attempt_state
from dialer.attempt_state import AttemptStates, CallEvent
from dialer.errors import Conflict, Forbidden, NoSuchAttempt
from dialer.model import AttemptRecord, CallProgress

T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


def _attempt(attempt_id: str = "att-1", **changes: Any) -> AttemptRecord:
    base = AttemptRecord(
        attempt_id=attempt_id, case_pk=7, creditor="bank-a", case_id="C-1", number="13800000001",
        relation="self", agent_id="col-a", channel="api", state="authorised", at=T0,
        valid_until=T0 + timedelta(minutes=2), decision_id=f"dec-{attempt_id}",
    )
    return replace(base, **changes)


class _Attempts:
    def __init__(self) -> None:
        self.rows: dict[str, AttemptRecord] = {}
        self.progress_rows: list[tuple[CallProgress, str | None]] = []
        self.calls: dict[str, str] = {}

    async def get(self, attempt_id: str) -> AttemptRecord | None:
        return self.rows.get(attempt_id)

    async def set_state(
        self, attempt_id: str, state: str, *, connected: bool | None = None, at: datetime | None = None,
        only_from: frozenset[str] | None = None,
    ) -> bool:
        row = self.rows[attempt_id]
        if only_from is not None and row.state not in only_from:
            return False
        self.rows[attempt_id] = replace(row, state=state, connected=row.connected if connected is None else connected,
                                        at=row.at if at is None else at)
        return True

    async def add_progress(self, progress: CallProgress, case_flags: str | None) -> None:
        self.progress_rows.append((progress, case_flags))

    async def attempt_for_call(self, call_id: str) -> str | None:
        return self.calls.get(call_id)

    async def add_call(self, call_id: str, attempt_id: str, pbx_id: str, first_seen: datetime) -> None:
        self.calls[call_id] = attempt_id


class _Outbox:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def add(self, type: str, **envelope: Any) -> str:
        self.events.append({"type": type, **envelope})
        return f"ev-{len(self.events)}"


class _Cases:
    def __init__(self) -> None:
        self.flags: dict[tuple[str, str], frozenset[str]] = {}

    async def get(self, creditor: str, case_id: str) -> Any:
        flags = self.flags.get((creditor, case_id))
        return None if flags is None else SimpleNamespace(flags=flags)


@dataclass
class _Uow:
    attempts: _Attempts
    outbox: _Outbox
    cases: _Cases


class _Store:
    """One unit of work whose writes are undone when the block raises, as a store's are."""

    def __init__(self) -> None:
        self.uow = _Uow(_Attempts(), _Outbox(), _Cases())
        self.writes = 0

    @asynccontextmanager
    async def read(self) -> AsyncIterator[_Uow]:
        yield self.uow

    @asynccontextmanager
    async def write(self, lock_keys: Sequence[str] = ()) -> AsyncIterator[_Uow]:
        before = copy.deepcopy(self.uow)
        try:
            yield self.uow
        except BaseException:
            self.uow = before
            raise
        self.writes += 1


class _Clock:
    def now(self) -> datetime:
        return T0 + timedelta(seconds=30)


def _states(*attempts: AttemptRecord) -> tuple[AttemptStates, _Store]:
    store = _Store()
    for a in attempts:
        store.uow.attempts.rows[a.attempt_id] = a
    return AttemptStates(store, _Clock()), store  # type: ignore[arg-type]


def _payload(event: dict[str, Any]) -> dict[str, Any]:
    return event["payload"]


async def test_a_used_reservation_becomes_dialing_and_the_event_names_the_channel_that_used_it() -> None:
    _, store = _states(_attempt())
    uow = store.uow
    moved = await attempt_state.mark_dialing(uow, _attempt(), channel="sip", at=T0)  # type: ignore[arg-type]
    assert moved.state == "dialing" and uow.attempts.rows["att-1"].state == "dialing"
    (event,) = uow.outbox.events
    assert (event["type"], event["creditor"], event["case_pk"], event["case_id"], event["occurred_at"]) == (
        "attempt.state", "bank-a", 7, "C-1", T0,
    )
    assert _payload(event) == {"attempt_id": "att-1", "state": "dialing", "channel": "sip",
                               "decision_id": "dec-att-1", "agent_id": "col-a"}


async def test_a_logged_outcome_completes_the_attempt_with_its_connected_flag() -> None:
    _, store = _states(_attempt(state="dialing"))
    await attempt_state.mark_completed(store.uow, _attempt(state="dialing"), connected=True, at=T0)  # type: ignore[arg-type]
    row = store.uow.attempts.rows["att-1"]
    assert (row.state, row.connected) == ("completed", True)
    assert _payload(store.uow.outbox.events[0]) == {"attempt_id": "att-1", "state": "completed", "connected": True,
                                                    "decision_id": "dec-att-1", "agent_id": "col-a"}


async def test_an_expired_authorisation_still_names_its_decision_and_agent() -> None:
    _, store = _states(_attempt())
    await attempt_state.mark_expired(store.uow, _attempt(), at=T0)  # type: ignore[arg-type]
    assert store.uow.attempts.rows["att-1"].state == "expired"
    assert _payload(store.uow.outbox.events[0]) == {"attempt_id": "att-1", "state": "expired",
                                                    "decision_id": "dec-att-1", "agent_id": "col-a"}


async def test_an_answered_call_marks_an_authorised_attempt_dialing_and_connected_and_teaches_its_call_id() -> None:
    states, store = _states(_attempt())
    await states.apply_call_event(CallEvent(pbx_id="pbx-east", kind="answered", occurred_at=T0, call_id="c-1@pbx",
                                            attempt_id="att-1", creditor="bank-a"))
    row = store.uow.attempts.rows["att-1"]
    assert (row.state, row.connected) == ("dialing", True)
    assert store.uow.attempts.calls == {"c-1@pbx": "att-1"}
    assert _payload(store.uow.outbox.events[0]) == {
        "attempt_id": "att-1", "state": "dialing", "connected": True, "channel": "api", "agent_id": "col-a",
        "decision_id": "dec-att-1", "pbx_event": "answered", "pbx_id": "pbx-east", "pbx_at": T0.isoformat(),
    }


async def test_later_events_naming_only_the_call_id_reach_the_attempt_with_their_own_details() -> None:
    states, store = _states(_attempt())
    await states.apply_call_event(CallEvent("pbx-east", "answered", T0, call_id="c-1@pbx", attempt_id="att-1"))
    await states.apply_call_event(CallEvent("pbx-east", "hangup", T0, call_id="c-1@pbx", cause="normal_clearing",
                                            duration_s=75.0))
    await states.apply_call_event(CallEvent("pbx-east", "recording_ready", T0, call_id="c-1@pbx",
                                            recording="/spool/13800000001-a84b.wav"))
    hangup, recording = (_payload(e) for e in store.uow.outbox.events[1:])
    assert (hangup["pbx_event"], hangup["cause"], hangup["duration_s"], hangup["connected"]) == (
        "hangup", "normal_clearing", 75.0, True)
    assert "13800000001" not in recording["recording"] and recording["recording"].endswith("0001-a84b.wav")
    assert "cause" not in recording and "recording" not in hangup


async def test_a_hangup_without_talk_time_leaves_an_unanswered_attempt_not_connected() -> None:
    states, store = _states(_attempt())
    await states.apply_call_event(CallEvent("pbx-east", "hangup", T0, attempt_id="att-1", cause="no_answer",
                                            duration_s=0))
    assert store.uow.attempts.rows["att-1"].connected is False
    assert _payload(store.uow.outbox.events[0])["connected"] is False


@pytest.mark.parametrize(("event", "error", "detail"), [
    (CallEvent("pbx-east", "answered", T0, call_id="never-seen@pbx"), NoSuchAttempt, {"call_id": "never-seen@pbx"}),
    (CallEvent("pbx-east", "answered", T0, attempt_id="att-9"), NoSuchAttempt, {"attempt_id": "att-9"}),
    (CallEvent("pbx-east", "answered", T0, attempt_id="att-1", creditor="bank-b"), Forbidden,
     {"attempt_id": "att-1", "creditor": "bank-b"}),
    (CallEvent("pbx-east", "answered", T0, attempt_id="att-1", call_id="taken@pbx"), Conflict,
     {"call_id": "taken@pbx"}),
])
async def test_a_pbx_event_that_matches_no_attempt_of_its_creditor_is_refused_and_writes_nothing(
    event: CallEvent, error: type[Exception], detail: dict[str, Any]
) -> None:
    states, store = _states(_attempt(), _attempt("att-2"))
    store.uow.attempts.calls["taken@pbx"] = "att-2"
    with pytest.raises(error) as err:
        await states.apply_call_event(event)
    assert err.value.details == detail  # type: ignore[attr-defined]
    assert store.uow.outbox.events == [] and store.uow.attempts.rows["att-1"] == _attempt()
    assert store.uow.attempts.calls == {"taken@pbx": "att-2"}


async def test_a_call_ended_before_the_debtor_was_dialled_releases_the_attempt_with_its_ended_state() -> None:
    states, store = _states(_attempt())
    ended = CallProgress("att-1", "ended", T0, cause="agent_no_answer", detail="x" * 600)
    await states.record_progress(_attempt(), ended, release=True)
    assert store.writes == 1  # one transaction: whoever sees the end sees it not counting
    assert store.uow.attempts.rows["att-1"].state == "released"
    assert _payload(store.uow.outbox.events[0]) == {"attempt_id": "att-1", "state": "released", "channel": "api",
                                                    "connected": None, "agent_id": "col-a",
                                                    "decision_id": "dec-att-1"}
    (progress, flags), = store.uow.attempts.progress_rows
    assert (progress.state, progress.cause, len(progress.detail or ""), flags) == ("ended", "agent_no_answer", 500, None)


async def test_the_debtor_answering_marks_the_attempt_connected_and_keeps_the_case_flags_on_its_progress() -> None:
    states, store = _states(_attempt(state="dialing"))
    store.uow.cases.flags[("bank-a", "C-1")] = frozenset({"complaint_risk", "dispute"})
    await states.mark_connected(_attempt(state="dialing"))
    await states.record_progress(_attempt(), CallProgress("att-1", "connected", T0, detail=""), case_flags=True)
    row = store.uow.attempts.rows["att-1"]
    assert (row.state, row.connected) == ("dialing", True)
    assert _payload(store.uow.outbox.events[0])["state"] == "dialing"
    assert _payload(store.uow.outbox.events[0])["connected"] is True
    (progress, flags), = store.uow.attempts.progress_rows
    assert (progress.detail, flags) == (None, "complaint_risk,dispute")


@pytest.mark.parametrize("state", ["dialing", "completed"])
async def test_a_reservation_the_sip_gate_already_used_is_not_released_when_the_user_agents_call_ends(
        state: str) -> None:
    # The agent's desk phone dialled the clicked number itself: the SIP gate consumed the
    # reservation ("dialing") and the PBX was sent to the debtor, while the user agent's
    # ring of the agent went unanswered (the debtor leg never left the user agent).
    states, store = _states(_attempt(state=state))
    ended = CallProgress("att-1", "ended", T0, cause="agent_no_answer")
    await states.record_progress(_attempt(), ended, release=True)
    assert store.uow.attempts.rows["att-1"].state == state  # still counts: the debtor's phone was dialled
    assert store.uow.outbox.events == []
    (progress, _), = store.uow.attempts.progress_rows
    assert (progress.state, progress.cause) == ("ended", "agent_no_answer")


async def test_an_authorisation_that_expired_while_the_agent_rang_is_still_released() -> None:
    states, store = _states(_attempt(state="expired"))
    await states.record_progress(_attempt(), CallProgress("att-1", "ended", T0, cause="agent_no_answer"), release=True)
    assert store.uow.attempts.rows["att-1"].state == "released"


@pytest.mark.parametrize("kind", ["answered", "hangup", "recording_ready"])
async def test_a_pbx_event_arriving_after_the_user_agent_released_the_attempt_makes_it_count_again(kind: str) -> None:
    # The same two reports in the other order leave the attempt counting (the event makes
    # it "dialing", the release is then refused): the order they arrive in must not decide
    # whether a call the PBX reports counts against the caps.
    states, store = _states(_attempt())
    await states.record_progress(_attempt(), CallProgress("att-1", "ended", T0, cause="failed"), release=True)
    await states.apply_call_event(CallEvent("pbx-east", kind, T0, attempt_id="att-1", cause="normal_clearing",
                                            duration_s=40.0, recording="/spool/a.wav"))
    assert store.uow.attempts.rows["att-1"].state == "dialing"
    assert _payload(store.uow.outbox.events[-1])["state"] == "dialing"


async def test_a_pbx_event_for_an_expired_authorisation_keeps_the_user_agent_from_releasing_it() -> None:
    # Had the event come before the sweep, the attempt would be dialing and beyond release.
    states, store = _states(_attempt(state="expired"))
    await states.apply_call_event(CallEvent("pbx-east", "answered", T0, attempt_id="att-1"))
    await states.record_progress(_attempt(), CallProgress("att-1", "ended", T0, cause="failed"), release=True)
    row = store.uow.attempts.rows["att-1"]
    assert (row.state, row.connected) == ("dialing", True)


async def test_an_outcome_logged_as_unanswered_does_not_unmark_a_call_the_pbx_reported_answered() -> None:
    # The PBX said the debtor answered; the collector's outcome "no answer" must not take
    # the call out of the "connected calls" caps.
    answered = _attempt(state="dialing", connected=True)
    _, store = _states(answered)
    await attempt_state.mark_completed(store.uow, answered, connected=False, at=T0)  # type: ignore[arg-type]
    row = store.uow.attempts.rows["att-1"]
    assert (row.state, row.connected) == ("completed", True)
    assert _payload(store.uow.outbox.events[0])["connected"] is True
