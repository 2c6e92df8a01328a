"""Hypothesis properties: caps are never exceeded, the window never breached, and
`next_allowed_at` is exactly the earliest lawful instant.

The cap arithmetic is checked against a deliberately naive reference written here
(a linear scan with zone conversions per event), not against the engine's own code.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from policy_factories import (
    DEBTOR,
    FAMILY,
    FRIEND,
    GUARANTOR,
    NY,
    SH,
    US_RELATIVE,
    WORK,
    event,
    make_request,
)

from policy import Appointment, Cap, HistoryEvent, Policy, evaluate, load_policy, number_zone

# POLICY_PROPERTY_SCALE=40 runs forty times the examples (a deep run before a release).
SCALE = max(1, int(os.environ.get("POLICY_PROPERTY_SCALE", "1")))

NUMBERS = [DEBTOR, GUARANTOR, FAMILY, WORK, FRIEND, US_RELATIVE]
RELATION = {DEBTOR: "self", GUARANTOR: "guarantor", FAMILY: "family", WORK: "work", FRIEND: "third_party", US_RELATIVE: "family"}

POLICIES = {
    "default": load_policy({}).default,
    "us-reg-f": load_policy({"preset": "us-reg-f"}).default,
    "cn-cba-2026": load_policy({"preset": "cn-cba-2026"}).default,
    "tight": load_policy(
        {
            "window": {"start": "09:30", "end": "18:15"},
            "blackout_dates": ["2026-11-25", "2026-11-28"],
            "blackout_periods": [
                {"start": "12:00", "end": "13:30"},
                {"start": "2026-10-20T17:00", "end": "2026-10-22T11:15"},
                {"start": "2026-11-01T01:10", "end": "2026-11-01T01:50"},
            ],
            "caps": [
                {"id": "cap.h", "scope": "number", "relations": ["self", "guarantor"], "limit": 1, "window": "45m"},
                {"id": "cap.d", "scope": "case", "limit": 5, "window": "calendar_day"},
                {"id": "cap.c", "scope": "case", "count": "connected", "limit": 1, "window": "1d"},
                {"id": "cap.u", "scope": "number", "count": "unanswered", "limit": 2, "window": "3h"},
            ],
        }
    ).default,
    "holidays": load_policy({"cn_holidays": True, "window": {"start": "08:00", "end": "24:00"}}).default,
    # N calendar days in the callee's dates, across New York's fall-back on 1 Nov.
    "calendar-days": load_policy(
        {
            "window": {"start": "07:00", "end": "23:30"},
            "caps": [
                {"id": "cap.n3", "scope": "number", "limit": 3, "window": "3 calendar_days"},
                {"id": "cap.c2", "scope": "case", "count": "connected", "limit": 1, "window": "2 calendar_days"},
                {"id": "cap.u4", "scope": "number", "count": "unanswered", "limit": 2, "window": "4 calendar_days"},
            ],
        }
    ).default,
}

BASE = datetime(2026, 9, 28, 0, 0, tzinfo=SH)  # National Day break 1-7 Oct; New York leaves DST on 1 Nov


def callee_zone(number: str):  # noqa: ANN201
    return NY if number_zone(number) == "America/New_York" else SH


def reference_count(cap: Cap, history: list[HistoryEvent], number: str, case_id: str, t: datetime) -> int:
    zone = callee_zone(number)

    def selected(e: HistoryEvent, kind: str) -> bool:
        in_scope = e.number == number if cap.scope == "number" else e.case_id == case_id
        if not in_scope or e.relation not in cap.relations or e.kind != kind:
            return False
        if cap.window_delta is None:
            today = t.astimezone(zone).date()
            return 0 <= (today - e.at.astimezone(zone).date()).days < cap.days
        return e.at > t - cap.window_delta

    attempts = sum(selected(e, "attempt") for e in history)
    connected = sum(selected(e, "connected") for e in history)
    if cap.count == "attempts":
        return attempts
    if cap.count == "connected":
        return connected
    return max(0, attempts - connected)


def blacked_out(pol: Policy, number: str, t: datetime) -> bool:
    local = t.astimezone(callee_zone(number))
    if local.date() in pol.blackout_dates:
        return True
    if pol.cn_holidays and pol.calendar.holiday(local.date()) is not None:
        return True
    wall = local.replace(tzinfo=None)
    sod = local.hour * 3600 + local.minute * 60 + local.second
    for p in pol.blackout_periods:
        if p.start_at is None and p.start_s <= sod < p.end_s:
            return True
        if p.start_at is not None and p.start_at <= wall < p.end_at:
            return True
    return False


def in_window(pol: Policy, number: str, t: datetime) -> bool:
    local = t.astimezone(callee_zone(number))
    sod = local.hour * 3600 + local.minute * 60 + local.second
    return pol.window.start_s <= sod < pol.window.end_s


dial_steps = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=4 * 3600),  # seconds since the previous request
        st.sampled_from(NUMBERS),
        st.booleans(),  # answered
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy_name=st.sampled_from(sorted(POLICIES)), start=st.integers(0, 38 * 86400), steps=dial_steps)
def test_no_generated_sequence_exceeds_a_cap_or_calls_outside_the_window(policy_name, start, steps) -> None:
    pol = POLICIES[policy_name]
    history: list[HistoryEvent] = []
    t = BASE + timedelta(seconds=start)
    for gap, number, answered in steps:
        t += timedelta(seconds=gap)
        decision = evaluate(make_request(number=number), history, pol, t)
        if not decision.allowed:
            continue
        assert decision.rule_id == "allow"
        assert in_window(pol, number, t), f"allowed at {t.astimezone(callee_zone(number))} outside the window"
        assert not blacked_out(pol, number, t), f"allowed at {t.astimezone(callee_zone(number))} in a blackout"
        for cap in pol.caps:
            if RELATION[number] in cap.relations:
                assert reference_count(cap, history, number, "C-1", t) < cap.limit, cap.id
        history.append(event(t, number, relation=RELATION[number]))
        if answered:
            history.append(event(t, number, kind="connected", relation=RELATION[number]))


# Dense recent history on few numbers, so that caps bind as often as the window does.
@settings(max_examples=150 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy_name=st.sampled_from(sorted(POLICIES)),
    start=st.integers(0, 38 * 86400),
    steps=dial_steps,
    slots=st.lists(st.integers(0, 8 * 3600), min_size=1, max_size=3),  # callback times after the start
)
def test_outside_the_window_or_over_a_cap_only_an_open_appointment_slot_allows_a_call(
    policy_name, start, steps, slots
) -> None:
    pol = POLICIES[policy_name]
    t = BASE + timedelta(seconds=start)
    tol, most = pol.appointment.tolerance, pol.appointment.max_attempts
    appointments = tuple(Appointment(DEBTOR, t + timedelta(seconds=o)) for o in slots)
    history: list[HistoryEvent] = []
    for gap, number, answered in steps:
        t += timedelta(seconds=gap)
        decision = evaluate(make_request(number=number, appointments=appointments), history, pol, t)
        if decision.allowed:
            assert not blacked_out(pol, number, t)
            over_cap = any(
                RELATION[number] in cap.relations and reference_count(cap, history, number, "C-1", t) >= cap.limit
                for cap in pol.caps
            )
            if over_cap or not in_window(pol, number, t):
                hypothesis_event("exempted by an appointment")
                assert decision.rule_id == "appointment.exception"
                assert number == DEBTOR
                assert any(
                    abs(a.at - t) <= tol
                    and sum(e.kind == "attempt" and e.number == number and abs(e.at - a.at) <= tol for e in history) < most
                    for a in appointments
                )
            else:
                assert decision.rule_id == "allow"
            history.append(event(t, number, relation=RELATION[number]))
            if answered:
                history.append(event(t, number, kind="connected", relation=RELATION[number]))


history_events = st.lists(
    st.tuples(
        st.one_of(st.integers(0, 3 * 3600), st.integers(0, 3 * 86400)),  # seconds before `now`
        st.sampled_from([DEBTOR, DEBTOR, DEBTOR, FAMILY, FAMILY, *NUMBERS]),
        st.sampled_from(["attempt", "attempt", "connected"]),
    ),
    min_size=2,
    max_size=40,
)


@settings(max_examples=400 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy_name=st.sampled_from(sorted(POLICIES)),
    now_day=st.integers(0, 40),
    now_sod=st.one_of(st.integers(8 * 3600, 21 * 3600), st.integers(0, 86399)),
    number=st.sampled_from([DEBTOR, DEBTOR, FAMILY, US_RELATIVE, GUARANTOR]),
    past=history_events,
    probe=st.floats(min_value=0.0, max_value=1.0),
)
def test_at_next_allowed_at_the_call_is_allowed_and_one_second_before_it_is_not(
    policy_name, now_day, now_sod, number, past, probe
) -> None:
    pol = POLICIES[policy_name]
    now = BASE + timedelta(days=now_day, seconds=now_sod)
    history = [event(now - timedelta(seconds=s), n, kind=k, relation=RELATION[n]) for s, n, k in past]
    _assert_next_allowed_is_exact(pol, make_request(number=number), history, now, probe)


recent_burst = st.lists(
    st.tuples(st.integers(0, 5400), st.sampled_from(["attempt", "attempt", "attempt", "connected"])),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy_name=st.sampled_from(sorted(POLICIES)),
    now_day=st.integers(0, 40),
    now_sod=st.integers(9 * 3600, 18 * 3600),
    number=st.sampled_from([DEBTOR, FAMILY]),
    burst=recent_burst,
    probe=st.floats(min_value=0.0, max_value=1.0),
)
def test_next_allowed_at_is_exact_when_a_burst_of_recent_calls_hits_the_caps(
    policy_name, now_day, now_sod, number, burst, probe
) -> None:
    pol = POLICIES[policy_name]
    now = BASE + timedelta(days=now_day, seconds=now_sod)
    history = [event(now - timedelta(seconds=s), number, kind=k, relation=RELATION[number]) for s, k in burst]
    _assert_next_allowed_is_exact(pol, make_request(number=number), history, now, probe)


@settings(max_examples=300 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy_name=st.sampled_from(sorted(POLICIES)),
    now_day=st.integers(0, 40),
    now_sod=st.integers(0, 86399),
    number=st.sampled_from([DEBTOR, FAMILY, US_RELATIVE]),
    burst=recent_burst,
    slots=st.lists(st.integers(-3600, 14 * 3600), min_size=1, max_size=3),  # appointment offsets from now
    probe=st.floats(min_value=0.0, max_value=1.0),
)
def test_next_allowed_at_is_exact_with_agreed_callback_times(
    policy_name, now_day, now_sod, number, burst, slots, probe
) -> None:
    pol = POLICIES[policy_name]
    now = BASE + timedelta(days=now_day, seconds=now_sod)
    history = [event(now - timedelta(seconds=s), number, kind=k, relation=RELATION[number]) for s, k in burst]
    appointments = tuple(Appointment(number, now + timedelta(seconds=o)) for o in slots)
    request = make_request(number=number, appointments=appointments)
    _assert_next_allowed_is_exact(pol, request, history, now, probe)


def _assert_next_allowed_is_exact(pol, request, history, now, probe) -> None:  # noqa: ANN001
    decision = evaluate(request, history, pol, now)
    # Replayable: the same inputs give the same record, and it is plain JSON.
    assert evaluate(request, history, pol, now).to_json() == decision.to_json()
    assert json.loads(decision.to_json())["rule_id"] == decision.rule_id
    if decision.allowed:
        hypothesis_event(decision.rule_id)
        assert decision.next_allowed_at == now
        return
    assert decision.rule_id.startswith(("window.", "cap.")), decision.rule_id
    hypothesis_event(f"blocked by {decision.rule_id.split('.')[0]}")
    nxt = decision.next_allowed_at
    hypothesis_event(f"next via {decision.inputs_used.get('next_allowed_search')}")
    assert nxt is not None, decision.inputs_used.get("next_allowed_search")
    assert nxt > now
    assert evaluate(request, history, pol, nxt).allowed, evaluate(request, history, pol, nxt).reason
    assert not evaluate(request, history, pol, nxt - timedelta(seconds=1)).allowed
    between = now + (nxt - now) * probe
    if between < nxt:
        assert not evaluate(request, history, pol, between).allowed


@settings(max_examples=100 * SCALE, deadline=None)
@given(now_offset=st.integers(0, 12 * 86400), number=st.sampled_from(NUMBERS), flag=st.sampled_from(["dispute", "deceased"]))
def test_a_hard_stop_never_has_a_next_allowed_time(now_offset, number, flag) -> None:
    from policy_factories import make_case

    request = make_request(number=number, case=make_case(flags=frozenset({flag})))
    decision = evaluate(request, [], POLICIES["default"], BASE + timedelta(seconds=now_offset))
    assert decision.rule_id == f"case.{flag}"
    assert decision.next_allowed_at is None


# ---------------------------------------------------------------- configuration fuzz

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 30),
    st.sampled_from(["08:00", "21:00", "24:00", "25:00", "1h", "7d", "0m", "calendar_day", "self", "family",
                     "number", "case", "attempts", "unanswered", "us-reg-f", "cn-cba-2026", "Asia/Shanghai",
                     "CN", "2026-11-26", "cap.number_daily", "cap.new", "", "x"]),
    st.text(max_size=6),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(["id", "scope", "relations", "count", "limit", "window", "start", "end", "enabled",
                             "tolerance", "max_attempts", "bank-a", "zzz", "preset", "caps", "cn_holidays",
                             "blackout_dates", "appointment", "timezone"]),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=12,
)
_policy_tables = st.dictionaries(
    st.sampled_from(["timezone", "default_region", "window", "appointment", "caps", "blackout_dates", "cn_holidays",
                     "preset", "creditors", "unknown"]),
    _values,
    max_size=5,
)


@settings(max_examples=250 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=_policy_tables)
def test_any_configuration_either_loads_or_is_refused_with_a_key_path(table) -> None:
    from policy import PolicyConfigError

    try:
        book = load_policy(table)
    except PolicyConfigError as exc:
        assert exc.path.startswith("policy") and exc.reason
        return
    for pol in [book.default, *book.creditors.values()]:
        assert len(pol.version) == 64
        assert pol.window.start_s < pol.window.end_s
        assert all(c.limit >= 0 for c in pol.caps)
