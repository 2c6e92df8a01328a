"""Working-day follow-up dates use the policy's PRC calendar: breaks, make-up days, any year."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

import pytest

from dialer.model import Principal
from dialer.usecases import LogOutcome, follow_up
from policy.holidays import default_calendar, parse_arrangements

SH = ZoneInfo("Asia/Shanghai")
ME = Principal(1, "c", "collector", frozenset({"bank-a"}))


def reachable(today: date, calendar=None) -> date | None:  # noqa: ANN001
    connected = LogOutcome(actor=ME, attempt_id="a", disposition="connected_self", result="none", note="n")
    return follow_up(connected, True, today, SH, True, calendar)[1]


@pytest.mark.parametrize(
    ("today", "expected", "why"),
    [
        (date(2026, 11, 24), date(2026, 11, 27), "an ordinary week"),
        (date(2026, 2, 12), date(2026, 2, 24), "13 Feb, 14 Feb (a make-up Saturday), then after the 15-23 Feb break"),
        (date(2026, 9, 30), date(2026, 10, 10), "after the National Day break: 8, 9 and 10 Oct (a make-up Saturday)"),
        (date(2026, 12, 30), date(2027, 1, 5), "1 Jan 2027 is a statutory holiday though 2027's arrangement is missing"),
        (date(2027, 2, 3), date(2027, 2, 10), "2027's Spring Festival: eve and days 1-3 by law (5-8 Feb)"),
    ],
)
def test_a_reachable_debtor_is_followed_up_three_working_days_later_on_the_prc_calendar(today, expected, why) -> None:
    assert reachable(today, default_calendar()) == expected, why


def test_an_imported_arrangement_moves_the_follow_up_past_its_bridging_days_and_onto_its_make_up_day() -> None:
    arrangement = parse_arrangements(
        "year 2027\n"
        "off 2027-01-01 2027-01-03 元旦\noff 2027-02-05 2027-02-11 春节\nwork 2027-02-20 春节调休\n"
        "off 2027-04-03 2027-04-05 清明节\noff 2027-05-01 2027-05-05 劳动节\noff 2027-06-09 2027-06-09 端午节\n"
        "off 2027-09-15 2027-09-15 中秋节\noff 2027-10-01 2027-10-07 国庆节\n"
    )
    calendar = default_calendar().with_arrangements(arrangement)
    assert reachable(date(2027, 2, 3), calendar) == date(2027, 2, 15)  # 4 Feb, then 12 and 15 Feb
    assert reachable(date(2027, 2, 17), calendar) == date(2027, 2, 20)  # Thu, Fri, then Saturday's make-up day
