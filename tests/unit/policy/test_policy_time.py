"""Callee-local time: which zone, the [start, end) window, blackout dates, PRC holidays."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from policy_factories import (
    DEBTOR,
    NY,
    SH,
    US_RELATIVE,
    check,
    decide,
    make_case,
    make_request,
    policy_from,
    sh,
)

from policy import ContactSnapshot
from policy.numbers import number_zones


@pytest.mark.parametrize(
    ("local_time", "allowed"),
    [
        ((7, 59, 59), False),
        ((8, 0, 0), True),
        ((20, 59, 59), True),
        ((21, 0, 0), False),
        ((23, 30, 0), False),
        ((0, 0, 0), False),
    ],
)
def test_the_calling_window_includes_its_start_and_excludes_its_end(local_time, allowed) -> None:
    decision = decide(now=sh(2026, 11, 24, *local_time))
    assert decision.allowed is allowed
    assert check(decision, "window.outside_hours").passed is allowed


def test_a_manhattan_relative_is_judged_in_new_york_time_in_winter() -> None:
    request = make_request(number=US_RELATIVE)
    # 21:30 in Shanghai is 08:30 EST in New York (UTC-5): inside the window.
    winter = decide(request, now=sh(2026, 11, 24, 21, 30))
    assert winter.allowed
    assert winter.inputs_used["zone"] == "America/New_York"
    assert winter.inputs_used["zone_source"] == "number"
    assert winter.inputs_used["callee_local_time"].startswith("2026-11-24T08:30:00-05:00")
    # 20:30 in Shanghai is 07:30 in New York: outside.
    assert decide(request, now=sh(2026, 11, 24, 20, 30)).rule_id == "window.outside_hours"


def test_new_york_daylight_saving_time_moves_the_window_by_an_hour() -> None:
    request = make_request(number=US_RELATIVE, case=make_case("C-dst"))
    # In July New York is UTC-4: 20:30 Shanghai (12:30Z) is 08:30 EDT — allowed,
    # whereas the same wall clock in November (07:30 EST) is not.
    summer = decide(request, now=sh(2026, 7, 15, 20, 30))
    assert summer.allowed
    assert summer.inputs_used["callee_local_time"].endswith("-04:00")
    # The day after the spring change (8 March 2026), 08:00 EDT is 12:00Z.
    assert decide(request, now=datetime(2026, 3, 9, 12, 0, tzinfo=timezone.utc)).allowed
    assert not decide(request, now=datetime(2026, 3, 9, 11, 59, 59, tzinfo=timezone.utc)).allowed


def test_a_contact_zone_overrides_the_number_zone() -> None:
    case = make_case("C-tz", contacts=(ContactSnapshot(DEBTOR, "self", tz="Europe/London"),))
    decision = decide(make_request(case=case), now=sh(2026, 11, 24, 17, 0))  # 09:00 in London
    assert decision.allowed
    assert decision.inputs_used["zone"] == "Europe/London"
    assert decision.inputs_used["zone_source"] == "contact"
    assert decide(make_request(case=case), now=sh(2026, 11, 24, 10, 0)).rule_id == "window.outside_hours"


def test_an_unknown_contact_zone_is_ignored_with_a_note() -> None:
    case = make_case("C-badtz", contacts=(ContactSnapshot(DEBTOR, "self", tz="Mars/Olympus"),))
    decision = decide(make_request(case=case))
    assert decision.inputs_used["zone"] == "Asia/Shanghai"
    assert "Mars/Olympus" in decision.inputs_used["zone_note"]


def test_a_number_spanning_several_zones_falls_back_to_the_policy_zone() -> None:
    russian = "+79161234567"  # Russia: phonenumbers answers several zones for +7 mobiles
    case = make_case("C-ru", contacts=(ContactSnapshot(russian, "family"),))
    decision = decide(make_request(number=russian, case=case))
    assert decision.inputs_used["zone_source"] == "policy_default"
    assert decision.inputs_used["zone"] == "Asia/Shanghai"


def test_the_policy_default_zone_is_configurable() -> None:
    russian = "+79161234567"
    case = make_case("C-ru2", contacts=(ContactSnapshot(russian, "family"),))
    pol = policy_from({"timezone": "Europe/Moscow"})
    # The number spans several zones: the policy zone keeps its days (caps, dates); the
    # window holds in each of the number's zones (06:00Z: 09:00 in Moscow, 08:00 at UTC+2).
    decision = decide(make_request(number=russian, case=case), policy=pol, now=sh(2026, 11, 24, 14, 0))
    assert decision.inputs_used["zone"] == "Europe/Moscow"
    assert decision.allowed


def test_a_blackout_date_blocks_the_whole_callee_local_day() -> None:
    pol = policy_from({"creditors": {"bank-a": {"blackout_dates": ["2026-11-26"]}}})
    assert decide(now=sh(2026, 11, 26, 10, 0), policy=pol).rule_id == "window.blackout_date"
    decision = decide(now=sh(2026, 11, 26, 10, 0), policy=pol)
    assert decision.next_allowed_at == sh(2026, 11, 27, 8, 0)
    assert decide(now=sh(2026, 11, 27, 8, 0), policy=pol).allowed
    assert decide(now=sh(2026, 11, 25, 20, 59), policy=pol).allowed


def test_blackout_dates_are_read_on_the_callees_calendar() -> None:
    pol = policy_from({"creditors": {"bank-a": {"blackout_dates": ["2026-11-26"]}}})
    request = make_request(number=US_RELATIVE, case=make_case("C-ny-blackout"))
    # 26 Nov 09:00 in Shanghai (blacked out there) is 25 Nov 20:00 in New York: allowed.
    assert decide(request, now=sh(2026, 11, 26, 9, 0), policy=pol).allowed
    assert decide(make_request(case=make_case("C-sh-blackout")), now=sh(2026, 11, 26, 9, 0), policy=pol).rule_id == (
        "window.blackout_date"
    )
    # 27 Nov 09:00 in Shanghai (an ordinary day there) is 26 Nov 20:00 in New York: blacked out.
    assert decide(request, now=sh(2026, 11, 27, 9, 0), policy=pol).rule_id == "window.blackout_date"


def test_prc_statutory_holidays_block_when_enabled() -> None:
    pol = policy_from({"creditors": {"bank-a": {"cn_holidays": True}}})
    decision = decide(now=sh(2026, 10, 3, 10, 0), policy=pol)  # National Day break, a Saturday
    assert decision.rule_id == "window.blackout_date"
    assert "National Day" in decision.reason and "国庆节" in decision.reason_zh
    assert decision.next_allowed_at == sh(2026, 10, 8, 8, 0)
    # An ordinary weekend is not a statutory holiday.
    assert decide(now=sh(2026, 11, 28, 10, 0), policy=pol).allowed
    # Disabled (the default): the holiday is an ordinary day.
    assert decide(now=sh(2026, 10, 3, 10, 0)).allowed


def test_new_years_day_2027_is_blocked_although_its_arrangement_is_not_published() -> None:
    pol = policy_from({"cn_holidays": True})
    case = make_case("C-2027", commission_end=None)
    decision = decide(make_request(case=case), now=sh(2027, 1, 1, 10, 0), policy=pol)
    assert decision.rule_id == "window.blackout_date"
    assert "New Year's Day" in decision.reason and "元旦" in decision.reason_zh
    assert "2027 holiday arrangement is missing" in decision.reason
    assert decision.next_allowed_at == sh(2027, 1, 2, 8, 0)


def test_every_decision_in_a_year_without_an_arrangement_says_it_is_missing() -> None:
    pol = policy_from({"cn_holidays": True})
    case = make_case("C-2027b", commission_end=None)
    decision = decide(make_request(case=case), now=sh(2027, 3, 3, 10, 0), policy=pol)
    assert decision.allowed
    blackout = check(decision, "window.blackout_date")
    assert blackout.passed and "2027 holiday arrangement is missing" in blackout.detail
    assert "缺少国务院 2027 年节假日安排" in blackout.detail_zh


def test_the_window_is_per_creditor() -> None:
    pol = policy_from({"creditors": {"bank-b": {"window": {"end": "20:30"}}}}, creditor="bank-b")
    case = make_case("C-b", creditor="bank-b")
    from policy_factories import collector

    request = make_request(case=case, agent=collector("a1", frozenset({"bank-b"})))
    assert decide(request, policy=pol, now=sh(2026, 11, 24, 20, 29, 59)).allowed
    late = decide(request, policy=pol, now=sh(2026, 11, 24, 20, 30))
    assert late.rule_id == "window.outside_hours"
    assert late.next_allowed_at == sh(2026, 11, 25, 8, 0)


def test_outside_hours_before_the_start_waits_for_the_same_mornings_start() -> None:
    decision = decide(now=sh(2026, 11, 24, 6, 15))
    assert decision.rule_id == "window.outside_hours"
    assert decision.next_allowed_at == sh(2026, 11, 24, 8, 0)
    assert decision.next_allowed_at.utcoffset() == timedelta(hours=8)  # reported in callee time


def test_next_allowed_at_for_a_new_york_callee_is_8am_new_york_time() -> None:
    request = make_request(number=US_RELATIVE, case=make_case("C-ny-next"))
    decision = decide(request, now=sh(2026, 11, 24, 12, 0))  # 23:00 EST on the 23rd
    assert decision.next_allowed_at == datetime(2026, 11, 24, 8, 0, tzinfo=NY)
    assert decision.next_allowed_at.astimezone(SH) == sh(2026, 11, 24, 21, 0)


def test_a_daily_blackout_period_blocks_its_stretch_of_every_callee_day() -> None:
    pol = policy_from({"creditors": {"bank-a": {"blackout_periods": [{"start": "12:00", "end": "13:30"}]}}})
    assert decide(now=sh(2026, 11, 24, 11, 59, 59), policy=pol).allowed
    lunch = decide(now=sh(2026, 11, 24, 12, 0), policy=pol)
    assert lunch.rule_id == "window.blackout_date"
    assert "12:00–13:30 daily" in lunch.reason and "敏感时段" in lunch.reason_zh
    assert lunch.next_allowed_at == sh(2026, 11, 24, 13, 30)
    assert decide(now=sh(2026, 11, 24, 13, 29, 59), policy=pol).rule_id == "window.blackout_date"
    assert decide(now=sh(2026, 11, 24, 13, 30), policy=pol).allowed


def test_a_one_off_blackout_period_spans_days_in_callee_time() -> None:
    pol = policy_from({"blackout_periods": [{"start": "2026-11-26T18:00", "end": "2026-11-27T09:15"}]})
    blocked = decide(now=sh(2026, 11, 26, 18, 0), policy=pol)
    assert blocked.rule_id == "window.blackout_date"
    assert blocked.next_allowed_at == sh(2026, 11, 27, 9, 15)
    assert decide(now=sh(2026, 11, 27, 9, 15), policy=pol).allowed
    # For a New York callee the same wall-clock period is New York's.
    ny = make_request(number=US_RELATIVE, case=make_case("C-ny-period"))
    assert decide(ny, now=datetime(2026, 11, 26, 18, 30, tzinfo=NY), policy=pol).rule_id == "window.blackout_date"
    assert decide(ny, now=sh(2026, 11, 26, 21, 0), policy=pol).allowed  # 08:00 in New York


def test_an_appointment_does_not_exempt_a_blackout_period() -> None:
    from policy_factories import appointment

    pol = policy_from({"blackout_periods": [{"start": "12:00", "end": "13:30"}]})
    request = make_request(appointments=(appointment(sh(2026, 11, 24, 12, 30)),))
    assert decide(request, now=sh(2026, 11, 24, 12, 30), policy=pol).rule_id == "window.blackout_date"


@pytest.mark.parametrize(
    ("period", "reason"),
    [
        ({"start": "13:30", "end": "12:00"}, "must be before end"),
        ({"start": "2026-11-26T18:00", "end": "19:00"}, "both be date-times or both be times of day"),
        ({"start": "2026-11-26T18:00+08:00", "end": "2026-11-26T19:00+08:00"}, "leave out the UTC offset"),
        ({"start": "12:00"}, "missing"),
        ({"start": "12:00", "end": "13:00", "every": "day"}, "unknown key"),
    ],
)
def test_bad_blackout_periods_are_refused_with_their_path(period, reason) -> None:
    from policy import PolicyConfigError, load_policy

    with pytest.raises(PolicyConfigError) as info:
        load_policy({"creditors": {"bank-a": {"blackout_periods": [period]}}})
    assert info.value.path.startswith("policy.creditors.bank-a.blackout_periods[0]")
    assert reason in info.value.reason


RUSSIAN = "+79161234567"  # a Russian mobile: phonenumbers names zones from UTC+2 to UTC+12


def russian_case() -> tuple:
    case = make_case("C-ru", contacts=(ContactSnapshot(RUSSIAN, "self"),))
    return case, make_request(number=RUSSIAN, case=case)


def test_a_number_spanning_several_zones_is_called_only_inside_the_window_of_every_one() -> None:
    _, request = russian_case()
    # 10:00 in Shanghai is 05:00 in Moscow: the callee may well be asleep there.
    early = decide(request, now=sh(2026, 11, 24, 10, 0))
    assert early.rule_id == "window.outside_hours"
    assert "one of the 16 zones of the number" in early.reason
    assert "Europe/Moscow" in early.inputs_used["window_zones"]
    # 08:00 at UTC+2 is 06:00Z (14:00 Shanghai); 21:00 at UTC+12 is 09:00Z (17:00 Shanghai).
    assert early.next_allowed_at == sh(2026, 11, 24, 14, 0)
    assert decide(request, now=sh(2026, 11, 24, 14, 0)).allowed
    assert not decide(request, now=sh(2026, 11, 24, 13, 59, 59)).allowed
    assert decide(request, now=sh(2026, 11, 24, 16, 59, 59)).allowed
    late = decide(request, now=sh(2026, 11, 24, 17, 0))
    assert late.rule_id == "window.outside_hours"
    assert late.next_allowed_at == sh(2026, 11, 25, 14, 0)


def test_a_contact_zone_settles_the_zone_of_a_number_spanning_several() -> None:
    case = make_case("C-ru", contacts=(ContactSnapshot(RUSSIAN, "self", tz="Europe/Moscow"),))
    decision = decide(make_request(number=RUSSIAN, case=case), now=sh(2026, 11, 24, 13, 0))  # 08:00 in Moscow
    assert decision.allowed
    assert decision.inputs_used["zone"] == "Europe/Moscow"


def test_a_blackout_date_in_any_zone_of_a_number_spanning_several_blocks_it() -> None:
    _, request = russian_case()
    pol = policy_from({"window": {"start": "00:00", "end": "24:00"}, "blackout_dates": ["2026-11-25"]})
    # 20:30 on 24 Nov in Shanghai is already 25 Nov at UTC+12 (Kamchatka).
    decision = decide(request, policy=pol, now=sh(2026, 11, 24, 20, 30))
    assert decision.rule_id == "window.blackout_date"
    assert "2026-11-25" in decision.reason


@pytest.mark.parametrize("number", ["+79161234567", "+61412345678", "+18005550100"])
def test_a_number_spanning_several_zones_is_allowed_exactly_when_every_zone_is_inside_the_window(number) -> None:
    zones = [ZoneInfo(z) for z in number_zones(number)]
    assert len(zones) > 1
    case = make_case("C-x", contacts=(ContactSnapshot(number, "self"),))
    request = make_request(number=number, case=case)
    # Every 20 minutes over two days around Australia's spring change (4 Oct 2026).
    t = datetime(2026, 10, 3, 0, 0, tzinfo=timezone.utc)
    for _ in range(2 * 72):
        decision = decide(request, now=t)
        inside = all(8 * 3600 <= (lt := t.astimezone(z)).hour * 3600 + lt.minute * 60 < 21 * 3600 for z in zones)
        assert decision.allowed is inside, (number, t)
        if not decision.allowed:
            at = decision.next_allowed_at
            assert at is not None
            assert decide(request, now=at).allowed, (number, at)
            assert not decide(request, now=at - timedelta(seconds=1)).allowed, (number, at)
        t += timedelta(minutes=20)
