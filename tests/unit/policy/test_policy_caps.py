"""Frequency caps: rolling vs calendar day, relations, scopes, counts, and when they free up."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from policy_factories import (
    DEBTOR,
    FAMILY,
    FRIEND,
    GUARANTOR,
    NY,
    US_RELATIVE,
    WORK,
    attempts_at,
    check,
    decide,
    event,
    make_case,
    make_request,
    policy_from,
    sh,
)


def test_two_attempts_within_the_hour_block_a_third_to_the_debtor() -> None:
    history = attempts_at(sh(2026, 11, 24, 10, 5), sh(2026, 11, 24, 10, 40))
    decision = decide(now=sh(2026, 11, 24, 11, 0), history=history)
    assert decision.rule_id == "cap.number_hourly"
    assert decision.inputs_used["counters"]["cap.number_hourly"]["count"] == 2
    assert decision.next_allowed_at == sh(2026, 11, 24, 11, 5)


def test_next_allowed_is_rounded_up_to_the_whole_second_so_it_is_never_earlier_than_lawful() -> None:
    history = attempts_at(sh(2026, 11, 24, 10, 5) + timedelta(microseconds=250_000), sh(2026, 11, 24, 10, 40))
    decision = decide(now=sh(2026, 11, 24, 11, 0), history=history)
    assert decision.rule_id == "cap.number_hourly"
    assert decision.next_allowed_at == sh(2026, 11, 24, 11, 5, 1)
    assert "11:05:01+08:00" in decision.reason and ".25" not in decision.reason
    assert decide(now=decision.next_allowed_at, history=history).allowed


def test_a_rolling_window_frees_at_the_oldest_counted_event_plus_the_window_exactly() -> None:
    history = attempts_at(sh(2026, 11, 24, 14, 0), sh(2026, 11, 24, 14, 30))
    assert decide(now=sh(2026, 11, 24, 14, 59, 59), history=history).rule_id == "cap.number_hourly"
    assert decide(now=sh(2026, 11, 24, 15, 0) - timedelta(microseconds=1), history=history).rule_id == (
        "cap.number_hourly"
    )
    # An event exactly one window old is no longer counted (time > now - window).
    at_boundary = decide(now=sh(2026, 11, 24, 15, 0), history=history)
    assert at_boundary.allowed
    assert at_boundary.inputs_used["counters"]["cap.number_hourly"]["count"] == 1


def test_the_hourly_cap_hit_at_2059_waits_for_8am_not_for_2110() -> None:
    history = attempts_at(sh(2026, 11, 24, 20, 10), sh(2026, 11, 24, 20, 40))
    decision = decide(now=sh(2026, 11, 24, 20, 59), history=history)
    assert decision.rule_id == "cap.number_hourly"
    assert decision.next_allowed_at == sh(2026, 11, 25, 8, 0)


def test_the_daily_cap_counts_the_callee_local_calendar_day_and_frees_at_the_next_window_start() -> None:
    history = attempts_at(*(sh(2026, 11, 24, h) for h in (8, 10, 12, 14)))
    decision = decide(now=sh(2026, 11, 24, 16, 0), history=history)
    assert decision.rule_id == "cap.number_daily"
    assert decision.next_allowed_at == sh(2026, 11, 25, 8, 0)
    # Yesterday's attempts do not count today.
    assert decide(now=sh(2026, 11, 25, 8, 0), history=history).allowed


def test_a_calendar_day_cap_frees_at_local_midnight_when_the_window_is_open_then() -> None:
    pol = policy_from({"window": {"start": "00:00", "end": "24:00"}})
    history = attempts_at(*(sh(2026, 11, 24, h) for h in (1, 3, 5, 7)))
    decision = decide(now=sh(2026, 11, 24, 23, 0), history=history, policy=pol)
    assert decision.rule_id == "cap.number_daily"
    assert decision.next_allowed_at == sh(2026, 11, 25, 0, 0)


def test_the_calendar_day_of_a_new_york_callee_is_new_yorks_day() -> None:
    case = make_case("C-ny-day")
    # Four attempts on 24 Nov New York time (13:00Z-16:00Z = 08:00-11:00 EST).
    history = [event(datetime(2026, 11, 24, h, tzinfo=timezone.utc), US_RELATIVE, case_id="C-ny-day") for h in (13, 14, 15, 16)]
    pol = policy_from({"caps": [{"id": "cap.family_daily", "scope": "number", "relations": ["family"], "limit": 4, "window": "calendar_day"}]})
    request = make_request(number=US_RELATIVE, case=case)
    # 24 Nov 20:00 EST = 25 Nov 01:00Z: still the same New York day although UTC and Shanghai moved on.
    blocked = decide(request, history=history, policy=pol, now=datetime(2026, 11, 25, 1, 0, tzinfo=timezone.utc))
    assert blocked.rule_id == "cap.family_daily"
    assert blocked.next_allowed_at == datetime(2026, 11, 25, 8, 0, tzinfo=NY)
    assert decide(request, history=history, policy=pol, now=datetime(2026, 11, 25, 8, 0, tzinfo=NY)).allowed


def test_third_party_caps_apply_to_relatives_on_top_of_the_number_caps() -> None:
    history = attempts_at(sh(2026, 11, 24, 9), sh(2026, 11, 24, 11), sh(2026, 11, 24, 13), number=FAMILY)
    decision = decide(make_request(number=FAMILY), history=history, now=sh(2026, 11, 24, 15, 0))
    assert decision.rule_id == "cap.third_party_daily"
    counters = decision.inputs_used["counters"]
    assert counters["cap.number_daily"] == {"applies": True, "count": 3, "limit": 4, "window": "calendar_day"}
    assert not check(decision, "cap.third_party_daily").passed
    assert check(decision, "cap.number_daily").passed
    # The debtor (self) is not held to the third-party cap of 3.
    debtor_history = attempts_at(sh(2026, 11, 24, 9), sh(2026, 11, 24, 11), sh(2026, 11, 24, 13))
    assert decide(history=debtor_history, now=sh(2026, 11, 24, 15, 0)).allowed


def test_a_cap_counts_only_events_of_the_relations_it_applies_to() -> None:
    pol = policy_from({"caps": [{"id": "cap.debtor_hourly", "scope": "number", "relations": ["self"], "limit": 2, "window": "1h"}]})
    history = [
        event(sh(2026, 11, 24, 10, 10), DEBTOR, case_id="C-other", relation="family"),
        event(sh(2026, 11, 24, 10, 20), DEBTOR, case_id="C-other", relation="family"),
        event(sh(2026, 11, 24, 10, 30), DEBTOR),
    ]
    decision = decide(history=history, now=sh(2026, 11, 24, 10, 45), policy=pol)
    assert decision.allowed
    assert decision.inputs_used["counters"]["cap.debtor_hourly"]["count"] == 1


def test_one_number_takes_four_calls_a_day_whoever_it_belongs_to_on_each_case() -> None:
    # Seed 001, 第十三条: the debtor's number on this case is a relative's on another.
    history = [
        event(sh(2026, 11, 24, 8, 30), DEBTOR, case_id="C-other", relation="family"),
        event(sh(2026, 11, 24, 10, 0), DEBTOR, case_id="C-other", relation="family"),
        event(sh(2026, 11, 24, 12, 0), DEBTOR),
        event(sh(2026, 11, 24, 14, 0), DEBTOR),
    ]
    decision = decide(history=history, now=sh(2026, 11, 24, 16, 0))
    assert decision.rule_id == "cap.number_daily"
    assert decision.inputs_used["counters"]["cap.number_daily"]["count"] == 4


def test_one_number_takes_two_calls_an_hour_whoever_it_belongs_to_on_each_case() -> None:
    history = [
        event(sh(2026, 11, 24, 10, 10), DEBTOR, case_id="C-other", relation="family"),
        event(sh(2026, 11, 24, 10, 30), DEBTOR),
    ]
    decision = decide(history=history, now=sh(2026, 11, 24, 10, 45))
    assert decision.rule_id == "cap.number_hourly"
    assert decision.next_allowed_at == sh(2026, 11, 24, 11, 10)


def test_a_number_cap_counts_attempts_on_that_number_across_cases() -> None:
    history = [event(sh(2026, 11, 24, 10, 10), DEBTOR, case_id="C-elsewhere"), event(sh(2026, 11, 24, 10, 20), DEBTOR)]
    assert decide(history=history, now=sh(2026, 11, 24, 10, 45)).rule_id == "cap.number_hourly"


def test_the_case_cap_counts_every_number_of_the_case() -> None:
    numbers = [DEBTOR, GUARANTOR, FAMILY, WORK, FRIEND]
    history = [event(sh(2026, 11, 24, 8, 0) + timedelta(minutes=50 * i), numbers[i % 5]) for i in range(10)]
    decision = decide(make_request(number=GUARANTOR), history=history, now=sh(2026, 11, 24, 17, 0))
    assert decision.rule_id == "cap.case_daily"
    assert decision.inputs_used["counters"]["cap.case_daily"]["count"] == 10
    assert decision.next_allowed_at == sh(2026, 11, 25, 8, 0)
    # Another case's attempts do not count towards this case.
    other = [event(e.at, e.number, case_id="C-9") for e in history]
    assert decide(make_request(number=GUARANTOR), history=other[:2], now=sh(2026, 11, 24, 17, 0)).allowed


def test_connected_caps_count_connected_calls_only() -> None:
    pol = policy_from({"creditors": {"bank-a": {"preset": "us-reg-f"}}})
    attempts_only = attempts_at(sh(2026, 11, 20, 10), sh(2026, 11, 21, 10))
    assert decide(history=attempts_only, policy=pol, now=sh(2026, 11, 24, 10)).allowed
    connected = attempts_only + [event(sh(2026, 11, 21, 10), kind="connected")]
    decision = decide(history=connected, policy=pol, now=sh(2026, 11, 24, 10))
    assert decision.rule_id == "cap.regf_quiet_after_conversation"
    # The conversation day (21 Nov) is day 1 of 7: free from 28 Nov, at the window's start.
    assert decision.next_allowed_at == sh(2026, 11, 28, 8, 0)


def test_events_of_other_numbers_and_cases_are_ignored() -> None:
    history = attempts_at(*(sh(2026, 11, 24, 9, m) for m in (0, 10, 20, 30)), number="+8613999999999", case_id="C-x")
    assert decide(history=history, now=sh(2026, 11, 24, 9, 40)).allowed


def test_events_later_than_now_still_count_so_clock_skew_between_gates_cannot_exceed_a_cap() -> None:
    history = attempts_at(sh(2026, 11, 24, 10, 0, 0), sh(2026, 11, 24, 10, 0, 1))
    assert decide(history=history, now=sh(2026, 11, 24, 10, 0, 0)).rule_id == "cap.number_hourly"


def test_a_cap_with_limit_zero_blocks_with_no_next_allowed_time() -> None:
    pol = policy_from({"creditors": {"bank-a": {"caps": [{"id": "cap.number_daily", "limit": 0}]}}})
    decision = decide(policy=pol)
    assert decision.rule_id == "cap.number_daily"
    assert decision.next_allowed_at is None
    assert "no lawful time" in decision.inputs_used["next_allowed_search"]


def test_next_allowed_at_waits_for_every_cap_not_just_the_deciding_one() -> None:
    # Hourly cap frees at 11:05, but the case cap (10 today) keeps it blocked until tomorrow.
    history = attempts_at(sh(2026, 11, 24, 10, 5), sh(2026, 11, 24, 10, 40))
    others = [event(sh(2026, 11, 24, 8, 0) + timedelta(minutes=9 * i), WORK) for i in range(8)]
    decision = decide(history=history + others, now=sh(2026, 11, 24, 11, 0))
    assert decision.rule_id == "cap.number_hourly"
    assert decision.next_allowed_at == sh(2026, 11, 25, 8, 0)


def test_history_with_naive_times_is_refused_as_undecidable() -> None:
    import pytest

    with pytest.raises(ValueError, match="timezone-aware"):
        decide(history=[event(datetime(2026, 11, 24, 9, 0))], now=sh(2026, 11, 24, 10, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(now=datetime(2026, 11, 24, 10, 0))


def test_an_unknown_relation_is_held_to_the_third_party_caps_instead_of_escaping_them() -> None:
    from policy import ContactSnapshot

    odd = "+8613655556666"
    case = make_case("C-odd", contacts=(ContactSnapshot(odd, "neighbour"),))
    history = [event(sh(2026, 11, 24, 9, m), odd, case_id="C-odd", relation="neighbour") for m in (0, 20)]
    decision = decide(make_request(number=odd, case=case), history=history, now=sh(2026, 11, 24, 9, 40))
    assert not check(decision, "cap.third_party_hourly").passed


def test_a_rolling_window_across_the_new_york_fall_back_counts_real_elapsed_time() -> None:
    pol = policy_from({"window": {"start": "00:00", "end": "24:00"}})
    case = make_case("C-fallback")
    # 1 Nov 2026: 01:30 EDT (05:30Z) and, an hour later, 01:30 EST again (06:30Z).
    first = datetime(2026, 11, 1, 5, 30, tzinfo=timezone.utc)
    history = [event(first, US_RELATIVE, case_id="C-fallback"), event(first + timedelta(minutes=20), US_RELATIVE, case_id="C-fallback")]
    request = make_request(number=US_RELATIVE, case=case)
    blocked = decide(request, history=history, policy=pol, now=first + timedelta(minutes=50))
    assert blocked.rule_id == "cap.number_hourly"
    assert not check(blocked, "cap.third_party_hourly").passed
    # Frees one real hour after the first attempt: 01:30 EST, the second 01:30 of the night.
    # (Compared as timestamps: by PEP 495 a time in the repeated hour never compares
    # equal to another zone's datetime.)
    assert blocked.next_allowed_at.timestamp() == (first + timedelta(hours=1)).timestamp()
    assert blocked.next_allowed_at.utcoffset() == timedelta(hours=-5)
    assert blocked.next_allowed_at.isoformat() == "2026-11-01T01:30:00-05:00"


def test_the_25_hour_new_york_day_of_the_fall_back_is_one_calendar_day() -> None:
    pol = policy_from(
        {"window": {"start": "00:00", "end": "24:00"},
         "caps": [{"id": "cap.family_daily", "scope": "number", "relations": ["family"], "limit": 2, "window": "calendar_day"}]}
    )
    case = make_case("C-25h")
    # 00:10 EDT (04:10Z) and 23:50 EST (2 Nov 04:50Z) are both 1 November in New York.
    history = [event(datetime(2026, 11, 1, 4, 10, tzinfo=timezone.utc), US_RELATIVE, case_id="C-25h")]
    request = make_request(number=US_RELATIVE, case=case)
    late = datetime(2026, 11, 2, 4, 50, tzinfo=timezone.utc)
    assert decide(request, history=history, policy=pol, now=late).allowed
    history.append(event(late, US_RELATIVE, case_id="C-25h"))
    blocked = decide(request, history=history, policy=pol, now=late + timedelta(minutes=5))
    assert blocked.rule_id == "cap.family_daily"
    assert blocked.next_allowed_at == datetime(2026, 11, 2, 0, 0, tzinfo=NY)


# ---------------------------------------------------------------- N calendar days

THREE_DAYS = {"window": {"start": "00:00", "end": "24:00"}, "caps": [
    {"id": "cap.quiet", "scope": "case", "count": "connected", "limit": 1, "window": "3 calendar_days"},
]}


def test_n_calendar_days_count_the_callees_last_n_dates_and_free_at_the_midnight_ending_them() -> None:
    pol = policy_from(THREE_DAYS)
    talked = [event(sh(2026, 11, 24, 23, 50), kind="connected")]
    # 24th (day 1), 25th, 26th are quiet; the 27th is free from its first second.
    blocked = decide(history=talked, policy=pol, now=sh(2026, 11, 26, 23, 59, 59))
    assert blocked.rule_id == "cap.quiet"
    assert blocked.next_allowed_at == sh(2026, 11, 27, 0, 0)
    assert decide(history=talked, policy=pol, now=sh(2026, 11, 27, 0, 0)).allowed
    assert "last 3 calendar days" in check(blocked, "cap.quiet").detail


@pytest.mark.parametrize(
    ("talked_utc", "free_local"),
    [
        # New York springs forward on 14 Mar 2027: a 3-day period 12-14 Mar ends at 15 Mar 00:00 EDT.
        (datetime(2027, 3, 12, 15, 0, tzinfo=timezone.utc), "2027-03-15T00:00:00-04:00"),
        # ... and falls back on 1 Nov 2026: 31 Oct - 2 Nov ends at 3 Nov 00:00 EST.
        (datetime(2026, 10, 31, 15, 0, tzinfo=timezone.utc), "2026-11-03T00:00:00-05:00"),
    ],
)
def test_n_calendar_days_free_at_callee_midnight_across_dst_changes(talked_utc, free_local) -> None:
    pol = policy_from(THREE_DAYS)
    case = make_case("C-dst3", commission_end=None)
    request = make_request(number=US_RELATIVE, case=case)
    talked = [event(talked_utc, US_RELATIVE, case_id="C-dst3", relation="family", kind="connected")]
    blocked = decide(request, history=talked, policy=pol, now=talked_utc + timedelta(hours=1))
    assert blocked.next_allowed_at.isoformat() == free_local
    at = blocked.next_allowed_at
    assert decide(request, history=talked, policy=pol, now=at).allowed
    assert decide(request, history=talked, policy=pol, now=at - timedelta(seconds=1)).rule_id == "cap.quiet"


@pytest.mark.parametrize(
    ("window", "normalised"),
    [("7 calendar_days", "7 calendar_days"), ("7calendar_days", "7 calendar_days"), ("1 calendar_day", "calendar_day")],
)
def test_calendar_day_windows_are_written_n_calendar_days(window, normalised) -> None:
    pol = policy_from({"caps": [{"id": "cap.x", "scope": "case", "limit": 3, "window": window}]})
    assert pol.caps[0].window == normalised


@pytest.mark.parametrize("window", ["0 calendar_days", "401 calendar_days", "calendar_days", "7 days"])
def test_a_bad_calendar_day_window_is_refused_with_its_key_path(window) -> None:
    from policy import PolicyConfigError, load_policy

    with pytest.raises(PolicyConfigError) as err:
        load_policy({"caps": [{"id": "cap.x", "scope": "case", "limit": 3, "window": window}]})
    assert err.value.path == "policy.caps[0].window"


def test_the_number_caps_say_they_count_the_number_whatever_its_relation() -> None:
    decision = decide(now=sh(2026, 11, 24, 10, 0))
    assert "this number (any relation, any case)" in check(decision, "cap.number_daily").detail
    assert "不论关系" in check(decision, "cap.number_hourly").detail_zh
    # The third-party caps keep their plain wording.
    assert "(any relation" not in check(decide(make_request(number=FAMILY)), "cap.third_party_daily").detail


def test_a_daily_cap_counts_calls_stamped_after_todays_midnight_when_the_clock_has_stepped_back() -> None:
    # The clock ran a day ahead (10 calls of the case on five numbers, stamped 25 Nov)
    # and NTP stepped it back to 24 Nov: those calls were placed today all the same.
    numbers = (GUARANTOR, FAMILY, WORK, FRIEND, US_RELATIVE)
    ahead = [event(sh(2026, 11, 25, 10, 0) + timedelta(minutes=30 * i), numbers[i % 5]) for i in range(10)]
    decision = decide(history=ahead, now=sh(2026, 11, 24, 10, 0))
    assert decision.rule_id == "cap.case_daily"
    assert check(decision, "cap.case_daily").passed is False
    assert decision.inputs_used["counters"]["cap.case_daily"]["count"] == 10
    # Stamped 25 Nov, they count on 25 Nov too: the case is free again on the 26th.
    assert decision.next_allowed_at == sh(2026, 11, 26, 8, 0)
    assert decide(history=ahead, now=sh(2026, 11, 26, 8, 0)).allowed
    # Stamped 25 Nov, they count on 25 Nov too: the case is free again on the 26th.
    assert decision.next_allowed_at == sh(2026, 11, 26, 8, 0)
    assert decide(history=ahead, now=sh(2026, 11, 26, 8, 0)).allowed


def test_a_multi_day_cap_counts_calls_stamped_after_todays_midnight() -> None:
    pol = policy_from({"creditors": {"bank-a": {"preset": "us-reg-f"}}})
    ahead = attempts_at(*(sh(2026, 11, 26, 9, 0) + timedelta(hours=3 * i) for i in range(7)), number=GUARANTOR)
    decision = decide(history=ahead, policy=pol, now=sh(2026, 11, 24, 10, 0))
    assert decision.inputs_used["counters"]["cap.regf_case_7d"]["count"] == 7
    assert check(decision, "cap.regf_case_7d").passed is False
