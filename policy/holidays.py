"""PRC statutory holidays from `chinese-calendar`, with the extent of its data.

The library publishes each year's State Council schedule once it is announced, so its
data always ends at some year. A date beyond that is *unknown*, not "no holiday": the
engine passes the check with a note and `dialgate policy lint` warns before the data
runs out.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache

import chinese_calendar

__all__ = ["holiday_name", "holiday_data_years", "holiday_data_end", "HolidayDataMissing"]

_HOLIDAYS: dict[date, str] = dict(chinese_calendar.constants.holidays)

_ZH = {
    "New Year's Day": "元旦",
    "Spring Festival": "春节",
    "Tomb-sweeping Day": "清明节",
    "Labour Day": "劳动节",
    "Dragon Boat Festival": "端午节",
    "National Day": "国庆节",
    "Mid-autumn Festival": "中秋节",
    "Anti-Fascist 70th Day": "抗战胜利纪念日",
}


class HolidayDataMissing(LookupError):
    """`chinese-calendar` has no schedule for the year asked about."""


def _years() -> tuple[int, int]:
    years = [d.year for d in _HOLIDAYS]
    return min(years), max(years)


_FIRST_YEAR, _LAST_YEAR = _years()


def holiday_data_years() -> tuple[int, int]:
    """First and last year the installed `chinese-calendar` has a schedule for."""
    return _FIRST_YEAR, _LAST_YEAR


def holiday_data_end() -> date:
    """The last day covered by the holiday data (31 December of its last year)."""
    return date(_LAST_YEAR, 12, 31)


@lru_cache(maxsize=4096)
def holiday_name(day: date) -> tuple[str, str] | None:
    """(English, Chinese) name of the statutory holiday on `day`, or None.

    Raises `HolidayDataMissing` when the library has no data for `day`'s year.
    """
    if not (_FIRST_YEAR <= day.year <= _LAST_YEAR):
        raise HolidayDataMissing(
            f"chinese-calendar {chinese_calendar.__version__} has no holiday data for {day.year} "
            f"(only {_FIRST_YEAR}-{_LAST_YEAR})"
        )
    name = _HOLIDAYS.get(day)
    if name is None:
        return None
    return name, _ZH.get(name, name)


def library_version() -> str:
    return str(chinese_calendar.__version__)
