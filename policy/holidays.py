"""PRC holidays for any year: statutory days from the law, breaks from the yearly arrangement.

Two sources, kept apart because they are known at different times:

* **Statutory days** (全国年节及纪念日放假办法, as amended in 2024): 1 January, the
  Spring Festival (lunar New Year's Eve and days 1-3), Qingming, 1-2 May, the Dragon
  Boat and Mid-Autumn festivals, 1-3 October. They follow from the law and the lunar
  calendar, so they are computed for every year (lunar dates and solar terms from the
  `holidays` library; its bridging and make-up days are ignored here).
* **The yearly arrangement** (国务院办公厅 notice, published each autumn): the whole
  break ranges, weekend days inside them included, and the make-up working days
  (调休). It is data: `BUILTIN_ARRANGEMENTS` below for the years known at release,
  plus an operator's file in the same format (`parse_arrangements`).

A year without an arrangement still has its statutory days blocked; the engine says
in every decision that the arrangement is missing, and `dialgate policy lint` fails
from 30 days before such a year.

Arrangement format (one statement a line; ``#`` starts a comment)::

    year 2026
    off  2026-02-15 2026-02-23  春节 Spring Festival
    work 2026-02-14             春节调休 Spring Festival make-up day

`off FROM TO [name]` is an inclusive break; `work DAY [name]` a make-up working day.
Dates may reach 7 days into the neighbouring years (a break around 1 January).
Refused, with the line: unknown statements, bad dates, a date far outside its
year, overlapping breaks, a make-up day on a weekday or inside a break, a year
given twice, and a year whose breaks miss one of its statutory days.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from typing import Iterable, Mapping

import holidays as _holidays_lib
from holidays.version import __version__ as _holidays_version

__all__ = [
    "Arrangement",
    "HolidayCalendar",
    "HolidayDay",
    "HolidayFileError",
    "BUILTIN_ARRANGEMENTS",
    "default_calendar",
    "format_arrangements",
    "parse_arrangements",
    "statutory_days",
]

_NEAR = timedelta(days=7)

# Names as the `holidays` library gives them → the names the law uses.
_ZH = {
    "New Year's Day": "元旦",
    "Chinese New Year's Eve": "农历除夕",
    "Chinese New Year (Spring Festival)": "春节",
    "Tomb-Sweeping Day": "清明节",
    "Labor Day": "劳动节",
    "Dragon Boat Festival": "端午节",
    "Mid-Autumn Festival": "中秋节",
    "National Day": "国庆节",
}


class HolidayFileError(ValueError):
    """A holiday arrangement that cannot be used; `line` is 1-based (0: the whole file)."""

    def __init__(self, source: str, line: int, reason: str) -> None:
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {reason}")
        self.source = source
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HolidayDay:
    """Why a date is a holiday: names and where that came from."""

    name: str
    name_zh: str
    source: str  # "arrangement" (a break of the State Council's notice) | "statutory" (the law alone)


@dataclass(frozen=True, slots=True)
class Arrangement:
    """One year's State Council arrangement: inclusive breaks and make-up working days."""

    year: int
    off: tuple[tuple[date, date, str], ...]
    work: tuple[tuple[date, str], ...]
    source: str = "built-in"


@lru_cache(maxsize=256)
def statutory_days(year: int) -> Mapping[date, tuple[str, str]]:
    """The statutory holidays of `year` under the law in force then: {day: (English, Chinese)}."""
    days: dict[date, tuple[str, str]] = {}
    for day, names in _holidays_lib.country_holidays("CN", years=year, observed=False).items():
        kept = [n for n in names.split("; ") if not n.startswith("Day off") and "Extended" not in n]
        if kept:
            days[day] = ("; ".join(kept), "；".join(_ZH.get(n, n) for n in kept))
    return days


@dataclass(frozen=True, eq=False)
class HolidayCalendar:
    """Statutory days for every year plus the arrangements known; answers per date."""

    arrangements: Mapping[int, Arrangement]
    # Per-date answers, filled on first use (a date's answer never changes).
    _memo: dict[date, HolidayDay | None] = field(default_factory=dict, compare=False, repr=False)

    def holiday(self, day: date) -> HolidayDay | None:
        """The holiday `day` falls in, or None (an ordinary day or a make-up working day)."""
        memo = self._memo
        if day in memo:
            return memo[day]
        found: HolidayDay | None = None
        for arr in self._arrangements_near(day):
            for start, end, name in arr.off:
                if start <= day <= end:
                    en, zh = _split_name(name)
                    found = HolidayDay(en, zh, "arrangement")
                    break
            if found is not None:
                break
        if found is None and day.year not in self.arrangements:
            names = statutory_days(day.year).get(day)
            if names is not None:
                found = HolidayDay(names[0], names[1], "statutory")
        if len(memo) > 8192:
            memo.clear()
        memo[day] = found
        return found

    def arranged(self, year: int) -> bool:
        """Whether the State Council's arrangement for `year` is known."""
        return year in self.arrangements

    def is_workday(self, day: date) -> bool:
        """A working day: a make-up day, or a weekday outside every holiday."""
        for arr in self._arrangements_near(day):
            if any(d == day for d, _ in arr.work):
                return True
        return day.weekday() < 5 and self.holiday(day) is None

    def add_workdays(self, day: date, n: int) -> date:
        """The `n`-th working day after `day`."""
        d, added = day, 0
        while added < n:
            d += timedelta(days=1)
            added += self.is_workday(d)
        return d

    def last_arranged_year(self) -> int | None:
        """The latest year whose arrangement is known (None when none is)."""
        return max(self.arrangements) if self.arrangements else None

    def fingerprint(self) -> str:
        """Identifies the data decisions depend on (part of the policy version)."""
        text = repr(sorted((y, a.off, a.work) for y, a in self.arrangements.items()))
        text += f"|holidays {_holidays_version}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def with_arrangements(self, extra: Mapping[int, Arrangement]) -> "HolidayCalendar":
        """This calendar with `extra` years added or replaced (an operator's newer notice wins)."""
        merged = dict(self.arrangements)
        merged.update(extra)
        return HolidayCalendar(merged)

    def _arrangements_near(self, day: date) -> Iterable[Arrangement]:
        for year in (day.year, day.year + 1, day.year - 1):
            arr = self.arrangements.get(year)
            if arr is not None:
                yield arr


def _split_name(name: str) -> tuple[str, str]:
    """``"春节 Spring Festival"`` → ("Spring Festival", "春节"); either part may be missing."""
    head, _, tail = name.partition(" ")
    if head and any("\u4e00" <= ch <= "\u9fff" for ch in head):
        return (tail.strip() or head), head
    return (name or "holiday"), (name or "节假日")


def parse_arrangements(text: str, source: str = "arrangement") -> dict[int, Arrangement]:
    """Parse and validate arrangement text; raises `HolidayFileError` naming the line."""
    years: dict[int, tuple[int, list[tuple[date, date, str, int]], list[tuple[date, str, int]]]] = {}
    current: int | None = None
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        kind = parts[0]
        if kind == "year":
            if len(parts) != 2 or not parts[1].isdigit() or not 1949 < int(parts[1]) < 2200:
                raise HolidayFileError(source, n, f"expected 'year YYYY', got {line!r}")
            current = int(parts[1])
            if current in years:
                raise HolidayFileError(source, n, f"year {current} is given twice (first on line {years[current][0]})")
            years[current] = (n, [], [])
            continue
        if current is None:
            raise HolidayFileError(source, n, "a 'year YYYY' line must come first")
        if kind == "off":
            if len(parts) < 3:
                raise HolidayFileError(source, n, "expected 'off FROM TO [name]'")
            start, end = _date(parts[1], current, source, n), _date(parts[2], current, source, n)
            if end < start:
                raise HolidayFileError(source, n, f"break ends {end} before it starts {start}")
            years[current][1].append((start, end, " ".join(parts[3:]), n))
        elif kind == "work":
            if len(parts) < 2:
                raise HolidayFileError(source, n, "expected 'work DAY [name]'")
            day = _date(parts[1], current, source, n)
            if day.weekday() < 5:
                raise HolidayFileError(
                    source, n, f"make-up working day {day} is a {day.strftime('%A')}: a weekday is a working day already"
                )
            years[current][2].append((day, " ".join(parts[2:]), n))
        else:
            raise HolidayFileError(source, n, f"unknown statement {kind!r}: expected year, off or work")
    result: dict[int, Arrangement] = {}
    for year, (year_line, offs, works) in years.items():
        offs.sort()
        for (a0, a1, _, la), (b0, b1, _, lb) in zip(offs, offs[1:]):
            if b0 <= a1:
                raise HolidayFileError(source, lb, f"break {b0}–{b1} overlaps the break {a0}–{a1} on line {la}")
        for day, _, ln in works:
            for start, end, _, lo in offs:
                if start <= day <= end:
                    raise HolidayFileError(source, ln, f"make-up working day {day} lies inside the break on line {lo}")
        for day, names in sorted(statutory_days(year).items()):
            if not any(start <= day <= end for start, end, _, _ in offs):
                raise HolidayFileError(
                    source, year_line, f"year {year}: statutory holiday {day} ({names[1]} {names[0]}) is in no break"
                )
        result[year] = Arrangement(
            year, tuple((s, e, name) for s, e, name, _ in offs), tuple((d, name) for d, name, _ in sorted(works)), source
        )
    return result


def _date(text: str, year: int, source: str, line: int) -> date:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise HolidayFileError(source, line, f"bad date {text!r}: use YYYY-MM-DD") from None
    if not date(year, 1, 1) - _NEAR <= day <= date(year, 12, 31) + _NEAR:
        raise HolidayFileError(source, line, f"{day} is outside year {year}")
    return day


# The State Council's notices (国务院办公厅关于…部分节假日安排的通知), as published.
BUILTIN_ARRANGEMENTS = """
year 2024
off  2024-01-01 2024-01-01  元旦 New Year's Day
off  2024-02-10 2024-02-17  春节 Spring Festival
work 2024-02-04             春节调休
work 2024-02-18             春节调休
off  2024-04-04 2024-04-06  清明节 Qingming
work 2024-04-07             清明节调休
off  2024-05-01 2024-05-05  劳动节 Labour Day
work 2024-04-28             劳动节调休
work 2024-05-11             劳动节调休
off  2024-06-10 2024-06-10  端午节 Dragon Boat Festival
off  2024-09-15 2024-09-17  中秋节 Mid-Autumn Festival
work 2024-09-14             中秋节调休
off  2024-10-01 2024-10-07  国庆节 National Day
work 2024-09-29             国庆节调休
work 2024-10-12             国庆节调休

year 2025
off  2025-01-01 2025-01-01  元旦 New Year's Day
off  2025-01-28 2025-02-04  春节 Spring Festival
work 2025-01-26             春节调休
work 2025-02-08             春节调休
off  2025-04-04 2025-04-06  清明节 Qingming
off  2025-05-01 2025-05-05  劳动节 Labour Day
work 2025-04-27             劳动节调休
off  2025-05-31 2025-06-02  端午节 Dragon Boat Festival
off  2025-10-01 2025-10-08  国庆节、中秋节 National Day and Mid-Autumn Festival
work 2025-09-28             国庆节调休
work 2025-10-11             国庆节调休

year 2026
off  2026-01-01 2026-01-03  元旦 New Year's Day
work 2026-01-04             元旦调休
off  2026-02-15 2026-02-23  春节 Spring Festival
work 2026-02-14             春节调休
work 2026-02-28             春节调休
off  2026-04-04 2026-04-06  清明节 Qingming
off  2026-05-01 2026-05-05  劳动节 Labour Day
work 2026-05-09             劳动节调休
off  2026-06-19 2026-06-21  端午节 Dragon Boat Festival
off  2026-09-25 2026-09-27  中秋节 Mid-Autumn Festival
off  2026-10-01 2026-10-07  国庆节 National Day
work 2026-09-20             国庆节调休
work 2026-10-10             国庆节调休
"""


@lru_cache(maxsize=1)
def default_calendar() -> HolidayCalendar:
    """Statutory days plus the built-in arrangements."""
    return HolidayCalendar(parse_arrangements(BUILTIN_ARRANGEMENTS, "built-in"))


def format_arrangements(arrangements: Mapping[int, Arrangement]) -> str:
    """Arrangements back as text in the format `parse_arrangements` reads."""
    lines = []
    for year in sorted(arrangements):
        arr = arrangements[year]
        lines.append(f"year {year}")
        lines += [f"off  {s.isoformat()} {e.isoformat()}  {name}".rstrip() for s, e, name in arr.off]
        lines += [f"work {d.isoformat()}             {name}".rstrip() for d, name in arr.work]
        lines.append("")
    return "\n".join(lines)
