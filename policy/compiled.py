"""What the engine derives once per `Policy` and keeps on it: the texts of the window
and of each cap, the "does not apply" cap checks per relation, and bounded caches of
the checks and callee-day bounds that recur across decisions."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from .blackouts import blackout_check
from .callee_time import day_bounds
from .config import Cap, Policy
from .model import Check
from .wording import ALL_RELATIONS, REL_ZH, make_check

__all__ = ["compiled"]

_COUNT_EN = {"attempts": "attempts", "connected": "connected calls", "unanswered": "unanswered attempts"}
_COUNT_ZH = {"attempts": "次拨打", "connected": "次接通", "unanswered": "次未接通拨打"}


class _Compiled:
    """Texts, cap selections and cached checks derived once from a `Policy`."""

    __slots__ = (
        "window_text",
        "na_checks",
        "cap_texts",
        "cap_checks",
        "day_checks",
        "inside_checks",
        "bounds",
    )

    def __init__(self, policy: Policy) -> None:
        w = policy.window
        self.window_text = f"{w.start}–{w.end}"
        self.na_checks: dict[str | None, tuple[Check | None, ...]] = {}
        for rel in (*ALL_RELATIONS, None):
            flags = tuple(rel is not None and rel in cap.relations for cap in policy.caps)
            self.na_checks[rel] = tuple(
                None
                if ok
                else make_check(
                    cap.id,
                    True,
                    f"does not apply to relation {rel or 'unknown'} "
                    f"(applies to {', '.join(r for r in ALL_RELATIONS if r in cap.relations)})",
                    f"不适用于该联系人关系（{REL_ZH.get(rel or '', '未知')}）",
                )
                for cap, ok in zip(policy.caps, flags)
            )
        texts = []
        for cap in policy.caps:
            scope_en = "this number" if cap.scope == "number" else "this case"
            scope_zh = "该号码" if cap.scope == "number" else "本案件"
            if cap.scope == "number" and cap.relations >= frozenset(ALL_RELATIONS):
                # Seed 001 caps the number, whoever it belongs to: say so where it is counted.
                scope_en = "this number (any relation, any case)"
                scope_zh = "该号码（不论关系、不论案件）"
            if cap.window_delta is None and cap.days > 1:
                span_en = f"in the last {cap.days} calendar days, today included (callee dates)"
                span_zh = f"含当日在内的最近 {cap.days} 个自然日（被叫当地日期）"
            else:
                span_en = "today (callee time)" if cap.window_delta is None else f"in the last {cap.window}"
                span_zh = "当日（被叫当地时间）" if cap.window_delta is None else f"最近 {cap.window} 内"
            texts.append(
                (f"{_COUNT_EN[cap.count]} to {scope_en} {span_en}", f"{scope_zh}{span_zh}", _COUNT_ZH[cap.count])
            )
        self.cap_texts = tuple(texts)
        self.cap_checks: dict[tuple[int, int], Check] = {}
        self.day_checks: dict[date, Check] = {}
        self.inside_checks: dict[tuple[str, int, int], Check] = {}
        self.bounds: dict[tuple[str, date], tuple[datetime, datetime, date]] = {}

    def inside_check(self, zone_name: str, hour: int, minute: int) -> Check:
        """The passing hours check, to the minute (the exact time is in inputs_used)."""
        key = (zone_name, hour, minute)
        check = self.inside_checks.get(key)
        if check is None:
            hm = f"{hour:02d}:{minute:02d}"
            check = make_check(
                "window.outside_hours",
                True,
                f"callee local time {hm} ({zone_name}) is inside {self.window_text}",
                f"被叫当地时间 {hm} 在允许时段 {self.window_text} 内",
            )
            if len(self.inside_checks) > 20000:
                self.inside_checks.clear()
            self.inside_checks[key] = check
        return check

    def day_bounds(self, zone_name: str, zone: ZoneInfo, local: datetime) -> tuple[datetime, datetime, date]:
        """UTC bounds [start, end) of the callee-local day of `local`."""
        key = (zone_name, local.date())
        bounds = self.bounds.get(key)
        if bounds is None:
            bounds = day_bounds(local, zone)
            if len(self.bounds) > 4096:
                self.bounds.clear()
            self.bounds[key] = bounds
        return bounds

    def cap_check(self, i: int, cap: Cap, n: int) -> Check:
        key = (i, n)
        check = self.cap_checks.get(key)
        if check is None:
            en, zh_scope, zh_count = self.cap_texts[i]
            if n < cap.limit:
                check = make_check(cap.id, True, f"{n} of {cap.limit} {en}", f"{zh_scope}已 {n} {zh_count}，上限 {cap.limit}")
            else:
                check = make_check(
                    cap.id,
                    False,
                    f"limit reached: {n} of {cap.limit} {en}",
                    f"已达上限：{zh_scope}已 {n} {zh_count}，上限 {cap.limit}",
                )
            if len(self.cap_checks) < 4096:
                self.cap_checks[key] = check
        return check

    def day_check(self, policy: Policy, day: date) -> Check:
        check = self.day_checks.get(day)
        if check is None:
            check = blackout_check(policy, day)
            if len(self.day_checks) > 2048:
                self.day_checks.clear()
            self.day_checks[day] = check
        return check


def compiled(policy: Policy) -> _Compiled:
    comp = policy.derived.get("engine")
    if comp is None:
        comp = policy.derived["engine"] = _Compiled(policy)
    return comp
