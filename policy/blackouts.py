"""The creditor's blackouts on the callee's calendar: blackout dates, PRC holidays
(with `cn_holidays`) and blackout periods — the `window.blackout_date` check, and
when a blackout covering an instant ends."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from .callee_time import ONE_DAY, at_local, seconds_of_day, wall_instant
from .config import BlackoutPeriod, Policy
from .model import Check
from .wording import make_check

__all__ = ["active_period", "blackout_check", "blackout_ends_at", "blackout_ends_in_every_zone"]


def blackout_check(policy: Policy, day: date) -> Check:
    if day in policy.blackout_dates:
        return make_check(
            "window.blackout_date",
            False,
            f"{day.isoformat()} (callee date) is a blackout date of the creditor",
            f"{day.isoformat()}（被叫当地日期）为委托方要求避开的敏感日期",
        )
    if policy.cn_holidays:
        cal = policy.calendar
        hol = cal.holiday(day)
        missing_en = missing_zh = ""
        if not cal.arranged(day.year):
            missing_en = (
                f"; the State Council's {day.year} holiday arrangement is missing, so only the statutory days "
                f"are blocked (import it: dialgate holidays import FILE)"
            )
            missing_zh = f"；缺少国务院 {day.year} 年节假日安排，仅按法定节假日拦截（请导入：dialgate holidays import）"
        if hol is not None:
            kind_en = "a PRC holiday" if hol.source == "arrangement" else "a PRC statutory holiday"
            kind_zh = "法定节假日（放假安排）" if hol.source == "arrangement" else "法定节假日"
            return make_check(
                "window.blackout_date",
                False,
                f"{day.isoformat()} (callee date) is {kind_en} ({hol.name}){missing_en}",
                f"{day.isoformat()}（被叫当地日期）为{kind_zh}（{hol.name_zh}）{missing_zh}",
            )
        return make_check(
            "window.blackout_date",
            True,
            f"{day.isoformat()} is neither a blackout date nor a PRC holiday{missing_en}",
            f"非敏感日期、非法定节假日{missing_zh}",
        )
    return make_check("window.blackout_date", True, f"{day.isoformat()} is not a blackout date", "非委托方敏感日期")


def _blocked_day(policy: Policy, day: date) -> bool:
    if day in policy.blackout_dates:
        return True
    if policy.cn_holidays:
        return policy.calendar.holiday(day) is not None
    return False


def active_period(policy: Policy, local: datetime) -> BlackoutPeriod | None:
    """The blackout period the callee-local `local` falls in, or None."""
    if not policy.blackout_periods:
        return None
    wall = local.replace(tzinfo=None)
    sod = seconds_of_day(local)
    for period in policy.blackout_periods:
        if period.start_at is None or period.end_at is None:
            if period.start_s is not None and period.end_s is not None and period.start_s <= sod < period.end_s:
                return period
        elif period.start_at <= wall < period.end_at:
            return period
    return None


def blackout_ends_at(policy: Policy, local: datetime, zone: ZoneInfo, t: datetime) -> datetime | None:
    """When the blackout covering instant `t` ends (UTC), or None if `t` is not blacked out."""
    if _blocked_day(policy, local.date()):
        return at_local(local.date() + ONE_DAY, 0, zone, t)
    period = active_period(policy, local)
    if period is None:
        return None
    if period.end_at is not None:
        return wall_instant(period.end_at, zone, t)
    assert period.end_s is not None  # a period without dates is a daily one
    return at_local(local.date(), period.end_s, zone, t)


def blackout_ends_in_every_zone(policy: Policy, zones: tuple[ZoneInfo, ...], t: datetime) -> datetime | None:
    """When no zone of `zones` is blacked out any more after instant `t` (the latest end
    of the blackouts covering it), or None if none covers `t`."""
    ends = [e for z in zones if (e := blackout_ends_at(policy, t.astimezone(z), z, t)) is not None]
    return max(ends) if ends else None
