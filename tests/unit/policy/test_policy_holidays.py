"""PRC holidays: statutory days from the law for any year, breaks from the yearly arrangement."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from policy_factories import check, decide, make_case, make_request, policy_from, sh

from policy import load_policy
from policy.holidays import (
    BUILTIN_ARRANGEMENTS,
    HolidayFileError,
    default_calendar,
    format_arrangements,
    parse_arrangements,
    statutory_days,
)

# 全国年节及纪念日放假办法 (2024 amendment): 13 statutory days a year.
STATUTORY_2026 = {
    date(2026, 1, 1): "元旦",
    date(2026, 2, 16): "农历除夕",
    date(2026, 2, 17): "春节",
    date(2026, 2, 18): "春节",
    date(2026, 2, 19): "春节",
    date(2026, 4, 5): "清明节",
    date(2026, 5, 1): "劳动节",
    date(2026, 5, 2): "劳动节",
    date(2026, 6, 19): "端午节",
    date(2026, 9, 25): "中秋节",
    date(2026, 10, 1): "国庆节",
    date(2026, 10, 2): "国庆节",
    date(2026, 10, 3): "国庆节",
}
STATUTORY_2027 = {
    date(2027, 1, 1): "元旦",
    date(2027, 2, 5): "农历除夕",
    date(2027, 2, 6): "春节",
    date(2027, 2, 7): "春节",
    date(2027, 2, 8): "春节",
    date(2027, 4, 5): "清明节",
    date(2027, 5, 1): "劳动节",
    date(2027, 5, 2): "劳动节",
    date(2027, 6, 9): "端午节",
    date(2027, 9, 15): "中秋节",
    date(2027, 10, 1): "国庆节",
    date(2027, 10, 2): "国庆节",
    date(2027, 10, 3): "国庆节",
}
# 国务院办公厅关于2026年部分节假日安排的通知.
BREAKS_2026 = [
    (date(2026, 1, 1), date(2026, 1, 3)),
    (date(2026, 2, 15), date(2026, 2, 23)),
    (date(2026, 4, 4), date(2026, 4, 6)),
    (date(2026, 5, 1), date(2026, 5, 5)),
    (date(2026, 6, 19), date(2026, 6, 21)),
    (date(2026, 9, 25), date(2026, 9, 27)),
    (date(2026, 10, 1), date(2026, 10, 7)),
]
MAKE_UP_2026 = [date(2026, 1, 4), date(2026, 2, 14), date(2026, 2, 28), date(2026, 5, 9), date(2026, 9, 20), date(2026, 10, 10)]

GOOD_2027 = (
    "year 2027\n"
    "off  2027-01-01 2027-01-03  元旦 New Year's Day\n"
    "off  2027-02-05 2027-02-11  春节 Spring Festival\n"
    "work 2027-02-20             春节调休\n"
    "off  2027-04-03 2027-04-05  清明节 Qingming\n"
    "off  2027-05-01 2027-05-05  劳动节 Labour Day\n"
    "off  2027-06-09 2027-06-09  端午节 Dragon Boat Festival\n"
    "off  2027-09-15 2027-09-15  中秋节 Mid-Autumn Festival\n"
    "off  2027-10-01 2027-10-07  国庆节 National Day\n"
)


@pytest.mark.parametrize(("year", "expected"), [(2026, STATUTORY_2026), (2027, STATUTORY_2027)])
def test_the_statutory_days_of_a_year_are_the_thirteen_the_law_names(year, expected) -> None:
    days = statutory_days(year)
    assert {d: zh for d, (_, zh) in days.items()} == expected


@pytest.mark.parametrize("year", range(2025, 2041))
def test_every_year_from_2025_has_thirteen_statutory_days_on_their_fixed_and_lunar_dates(year) -> None:
    days = statutory_days(year)
    assert sum(len(zh.split("；")) for _, zh in days.values()) == 13
    for fixed in ((1, 1), (5, 1), (5, 2), (10, 1), (10, 2), (10, 3)):
        assert date(year, *fixed) in days
    eve = next(d for d, (_, zh) in days.items() if zh == "农历除夕")
    assert [d for d, (_, zh) in days.items() if zh == "春节"] == [eve + timedelta(days=i) for i in (1, 2, 3)]


def test_the_2026_arrangement_is_the_state_councils_notice() -> None:
    arrangement = default_calendar().arrangements[2026]
    assert [(s, e) for s, e, _ in arrangement.off] == sorted(BREAKS_2026)
    assert [d for d, _ in arrangement.work] == MAKE_UP_2026


@pytest.mark.parametrize(
    ("day", "holiday", "workday"),
    [
        (date(2026, 2, 21), "春节", False),  # a Saturday inside the Spring Festival break
        (date(2026, 10, 4), "国庆节", False),  # a Sunday inside the National Day break
        (date(2026, 10, 7), "国庆节", False),  # a bridging weekday
        (date(2026, 2, 14), None, True),  # a make-up Saturday
        (date(2026, 11, 28), None, False),  # an ordinary Saturday
        (date(2026, 11, 24), None, True),  # an ordinary Tuesday
        (date(2027, 1, 1), "元旦", False),  # statutory, no arrangement yet
        (date(2027, 2, 9), None, True),  # a likely bridging day: unknown until the notice
    ],
)
def test_the_calendar_answers_holiday_and_working_day_per_date(day, holiday, workday) -> None:
    cal = default_calendar()
    found = cal.holiday(day)
    assert (found.name_zh if found else None) == holiday
    assert cal.is_workday(day) is workday


def test_a_weekend_day_inside_a_break_is_blocked_and_the_make_up_saturday_is_not() -> None:
    pol = policy_from({"cn_holidays": True})
    blocked = decide(now=sh(2026, 2, 21, 10, 0), policy=pol)
    assert blocked.rule_id == "window.blackout_date" and "春节" in blocked.reason_zh
    assert blocked.next_allowed_at == sh(2026, 2, 24, 8, 0)
    assert decide(now=sh(2026, 2, 14, 10, 0), policy=pol).allowed


@pytest.mark.parametrize("day", sorted(STATUTORY_2027))
def test_every_statutory_day_of_2027_blocks_a_creditor_with_cn_holidays(day) -> None:
    pol = policy_from({"cn_holidays": True})
    decision = decide(make_request(case=make_case("C-27", commission_end=None)), now=sh(day.year, day.month, day.day, 10), policy=pol)
    assert decision.rule_id == "window.blackout_date"
    assert "arrangement is missing" in decision.reason


def test_an_imported_2027_arrangement_blocks_its_bridging_days_and_drops_the_missing_note() -> None:
    cal = default_calendar().with_arrangements(parse_arrangements(GOOD_2027))
    pol = load_policy({"cn_holidays": True}, cal).default
    case = make_case("C-27b", commission_end=None)
    bridging = decide(make_request(case=case), now=sh(2027, 2, 9, 10), policy=pol)
    assert bridging.rule_id == "window.blackout_date" and "missing" not in bridging.reason
    ordinary = decide(make_request(case=case), now=sh(2027, 3, 3, 10), policy=pol)
    assert ordinary.allowed and "missing" not in check(ordinary, "window.blackout_date").detail
    # The data is part of the policy version: a new notice is a new policy.
    assert pol.version != load_policy({"cn_holidays": True}).default.version
    assert load_policy({}, cal).default.version == load_policy({}).default.version


BAD = [
    ("work 2027-03-03\n", 11, "is a Wednesday"),
    ("off 2027-10-05 2027-10-09 x\n", 11, "overlaps the break 2027-10-01–2027-10-07 on line 9"),
    ("work 2027-02-06\n", 11, "inside the break on line 3"),
    ("holiday 2027-03-03\n", 11, "unknown statement 'holiday'"),
    ("off 2027-13-01 2027-13-02\n", 11, "bad date '2027-13-01'"),
    ("off 2027-03-05 2027-03-01\n", 11, "before it starts"),
    ("work 2028-03-04\n", 11, "outside year 2027"),
    ("year 2027\n", 11, "given twice (first on line 1)"),
]


@pytest.mark.parametrize(("extra", "line", "reason"), BAD, ids=[r for _, _, r in BAD])
def test_a_bad_arrangement_is_refused_naming_its_line(extra, line, reason) -> None:
    with pytest.raises(HolidayFileError) as err:
        parse_arrangements(GOOD_2027 + "\n" + extra, "notice.txt")
    assert err.value.line == line and reason in err.value.reason
    assert str(err.value).startswith(f"notice.txt:{line}: ")


def test_an_arrangement_whose_breaks_miss_a_statutory_day_is_refused() -> None:
    text = GOOD_2027.replace("off  2027-06-09 2027-06-09  端午节 Dragon Boat Festival\n", "")
    with pytest.raises(HolidayFileError) as err:
        parse_arrangements(text)
    assert err.value.line == 1 and "2027-06-09" in err.value.reason and "端午节" in err.value.reason


def test_lines_before_the_first_year_are_refused() -> None:
    with pytest.raises(HolidayFileError) as err:
        parse_arrangements("# notice\noff 2027-01-01 2027-01-03\n")
    assert err.value.line == 2 and "year" in err.value.reason


def test_the_built_in_arrangements_survive_a_round_trip_through_the_file_format() -> None:
    parsed = parse_arrangements(BUILTIN_ARRANGEMENTS)
    again = parse_arrangements(format_arrangements(parsed))
    assert {y: (a.off, a.work) for y, a in again.items()} == {y: (a.off, a.work) for y, a in parsed.items()}
