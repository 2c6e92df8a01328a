"""`evaluate(request, history, policy, now) -> Decision`: the dial decision, explained.

Every rule is evaluated and listed in `Decision.checks`, in precedence order; the
deciding rule is the first failing one that no appointment exempted:

1. system.store_unavailable, system.recording_unavailable
2. agent.not_assigned
3. case.closed, case.commission_not_started, case.commission_expired
4. case.paused
5. case.<flag> for each flag of `model.CASE_FLAGS`
6. contact.not_authorized, contact.invalid_number, contact.do_not_call
7. line.not_registered
8. window.blackout_date, window.outside_hours            (temporal)
9. the caps, in configuration order                       (temporal)

Times are compared as aware datetimes (exact, any zone); arithmetic is done in UTC so
a DST change never shifts a rolling window. Time of day, "today" and holidays are the
callee's; commission dates are the policy zone's.

Only when every non-temporal rule passes and a temporal one blocks is
`next_allowed_at` searched (`next_allowed.py`: a fixpoint over the temporal rules; an
appointment slot that opens earlier wins). Allowed decisions carry
`next_allowed_at = now`; decisions blocked by a non-temporal rule carry None.

Every instant a decision carries (`next_allowed_at`, `evaluated_at`) is in the callee's
zone with its offset, allowed and blocked alike, so an answer reads as the callee's
clock and still compares exactly as an instant.

This module walks the rules in order and builds the decision; the rule families live
beside it: `hard_stops` (1–7), `blackouts` and `compiled` (8, and the per-policy texts
and cached checks), `caps` (9), `appointments`, `next_allowed`, on the callee's clock
from `callee_time`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterable

from .appointments import appointment
from .blackouts import active_period
from .callee_time import UTC, callee_zone, seconds_of_day, window_zones
from .caps import Caps
from .compiled import compiled
from .config import Policy
from .hard_stops import (
    FAIL_DNC,
    FAIL_FLAGS,
    FAIL_PAUSED,
    FAIL_REC,
    FAIL_STORE,
    PASS_CLOSED,
    PASS_DNC,
    PASS_FLAG_LIST,
    PASS_FLAGS,
    PASS_NOT_EXPIRED,
    PASS_PAUSED,
    PASS_REC,
    PASS_STARTED,
    PASS_STORE,
    PASS_VALID,
    STATUS_ZH,
    agent_check,
    contact_pass,
    line_check,
    mask,
    number_check,
)
from .model import CASE_FLAGS, CLOSED_STATUSES, Check, Decision, DialRequest, HistoryEvent
from .next_allowed import search_next
from .wording import REL_ZH, make_check

__all__ = ["evaluate", "TEMPORAL_PREFIXES"]

TEMPORAL_PREFIXES = ("window.", "cap.")


def evaluate(
    request: DialRequest,
    history: Iterable[HistoryEvent],
    policy: Policy,
    now: datetime,
) -> Decision:
    """Decide whether `request` may be dialled at `now`, and say why.

    `history` holds the attempts and connected calls of the same number and the same
    case inside `policy.lookback` (others are ignored). `now` must be timezone-aware.
    Raises ValueError for unusable input (naive datetimes); the caller fails closed.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    now_u = now.astimezone(UTC)
    comp = compiled(policy)
    case = request.case
    region = policy.default_region
    checks: list[Check] = []
    add = checks.append

    # 1. system faults ----------------------------------------------------------
    faults = request.faults
    if faults:
        add(FAIL_STORE if "store_unavailable" in faults else PASS_STORE)
        add(FAIL_REC if "recording_unavailable" in faults else PASS_REC)
    else:
        add(PASS_STORE)
        add(PASS_REC)

    # 2. agent --------------------------------------------------------------------
    agent = request.agent
    add(agent_check(agent.role, agent.agent_id, agent.creditors, case.case_id, case.creditor, case.assigned_agent))

    # 3-5. case -------------------------------------------------------------------
    policy_today = now_u.astimezone(policy.zone).date()
    status = case.status
    if status in CLOSED_STATUSES:
        add(make_check("case.closed", False, f"the case is {status}", f"案件已{STATUS_ZH.get(status, status)}，不得拨打"))
    elif status not in ("active", "paused"):
        add(make_check("case.closed", False, f"unknown case status {status!r}: failing closed", f"未知案件状态 {status!r}，拒绝拨打"))
    else:
        add(PASS_CLOSED)
    start, end = case.commission_start, case.commission_end
    if start is not None and policy_today < start:
        add(
            make_check(
                "case.commission_not_started",
                False,
                f"the commission starts on {start.isoformat()} (today is {policy_today.isoformat()} in {policy.timezone})",
                f"委托期自 {start.isoformat()} 开始（{policy.timezone} 今日为 {policy_today.isoformat()}）",
            )
        )
    else:
        add(PASS_STARTED)
    if end is not None and policy_today > end:
        add(
            make_check(
                "case.commission_expired",
                False,
                f"the commission ended on {end.isoformat()} (today is {policy_today.isoformat()} in {policy.timezone})",
                f"委托期已于 {end.isoformat()} 届满（{policy.timezone} 今日为 {policy_today.isoformat()}）",
            )
        )
    else:
        add(PASS_NOT_EXPIRED)
    add(FAIL_PAUSED if status == "paused" else PASS_PAUSED)
    flags = case.flags
    if flags:
        for flag in CASE_FLAGS:
            add(FAIL_FLAGS[flag] if flag in flags else PASS_FLAGS[flag])
    else:
        checks.extend(PASS_FLAG_LIST)

    # 6. contact ------------------------------------------------------------------
    number = request.number
    contact = case.contact(number)
    normalised, number_problem = number_check(number, region)
    if contact is None and normalised is not None and normalised != number:
        contact = case.contact(normalised)
        if contact is not None:
            number = normalised
    masked = mask(number)
    if contact is None:
        add(
            make_check(
                "contact.not_authorized",
                False,
                f"{masked} is not a number the creditor supplied or staff verified for case {case.case_id}",
                f"{masked} 不是委托方提供或核实后添加的本案号码，严禁擅自拨打",
            )
        )
    else:
        add(contact_pass(masked, contact.relation))
    if contact is not None and contact.status == "invalid":
        add(make_check("contact.invalid_number", False, f"{masked} is known invalid (empty or wrong number)", f"{masked} 已确认为空号/错号"))
    elif number_problem is not None:
        add(make_check("contact.invalid_number", False, f"{masked} is not a dialable number: {number_problem}", f"{masked} 不是有效号码：{number_problem}"))
    else:
        add(PASS_VALID)
    add(FAIL_DNC if contact is not None and contact.do_not_call else PASS_DNC)

    # 7. registered line ----------------------------------------------------------
    add(line_check(request, region, policy.allow_unregistered_lines))

    # 8. window -------------------------------------------------------------------
    zone, zone_name, zone_source, zone_note = callee_zone(
        contact.tz if contact is not None else None, number, policy.timezone
    )
    local = now_u.astimezone(zone)
    # A number spanning several zones, with no contact zone: the callee's clock may
    # show any of them, so the window must hold, and no blackout, in every one.
    wzones = window_zones(zone, zone_source, number)
    wlocals = (local,) if len(wzones) == 1 else tuple(now_u.astimezone(z) for z in wzones)
    for wlocal in wlocals:
        blackout = comp.day_check(policy, wlocal.date())
        if blackout.passed and policy.blackout_periods:
            period = active_period(policy, wlocal)
            if period is not None:
                blackout = make_check(
                    "window.blackout_date",
                    False,
                    f"callee local time {wlocal.strftime('%Y-%m-%d %H:%M')} is inside the creditor's blackout period "
                    f"{period.label()}",
                    f"被叫当地时间 {wlocal.strftime('%Y-%m-%d %H:%M')} 处于委托方要求避开的敏感时段 {period.label()}",
                )
        if not blackout.passed:
            break
    add(blackout)
    window = policy.window
    outside = next((w for w in wlocals if not window.start_s <= seconds_of_day(w) < window.end_s), None)
    if outside is None:
        if len(wlocals) == 1:
            add(comp.inside_check(zone_name, local.hour, local.minute))
        else:
            add(
                make_check(
                    "window.outside_hours",
                    True,
                    f"callee local time is inside {comp.window_text} in each of the number's {len(wlocals)} zones",
                    f"被叫号码所属的 {len(wlocals)} 个时区的当地时间均在允许时段 {comp.window_text} 内",
                )
            )
    else:
        hms = f"{outside.hour:02d}:{outside.minute:02d}:{outside.second:02d}"
        out_zone = zone_name if len(wlocals) == 1 else str(outside.tzinfo)
        several_en = "" if len(wlocals) == 1 else f", one of the {len(wlocals)} zones of the number"
        several_zh = "" if len(wlocals) == 1 else f"，该号码所属 {len(wlocals)} 个时区之一"
        add(
            make_check(
                "window.outside_hours",
                False,
                f"callee local time {hms} ({out_zone}{several_en}) is outside the calling window {comp.window_text}",
                f"被叫当地时间 {hms}（{out_zone}{several_zh}）不在允许拨打时段 {comp.window_text} 内",
            )
        )
    hours_index = len(checks) - 1

    # 9. caps ---------------------------------------------------------------------
    relation = None
    if contact is not None:
        # An unknown relation is held to the strictest class rather than escaping
        # every cap; events are classified the same way below.
        relation = contact.relation if contact.relation in REL_ZH else "third_party"
    case_id = case.case_id
    number_groups: dict[tuple[str, str], list[datetime]] = {}
    case_groups: dict[tuple[str, str], list[datetime]] = {}
    # Naive event times are refused where they are compared (see caps._Counter).
    for e in history:
        if e.number == number:
            key = (e.relation if e.relation in REL_ZH else "third_party", e.kind)
            number_groups.setdefault(key, []).append(e.at)
            if e.case_id == case_id:
                case_groups.setdefault(key, []).append(e.at)
        elif e.case_id == case_id:
            key = (e.relation if e.relation in REL_ZH else "third_party", e.kind)
            case_groups.setdefault(key, []).append(e.at)
    capsx = Caps(number_groups, case_groups, zone)
    day = None
    counters: dict[str, dict[str, bool | int | str]] = {}
    waivable_caps: list[int] = []  # the checks an agreed callback time may exempt
    # A cap's "does not apply" check exists exactly when it does not apply to `relation`.
    na_checks = comp.na_checks.get(relation) or comp.na_checks[None]
    for i, cap in enumerate(policy.caps):
        na_check = na_checks[i]
        if na_check is not None:
            counters[cap.id] = {"applies": False, "limit": cap.limit, "window": cap.window}
            add(na_check)
            continue
        if cap.window_delta is None and day is None:
            day = comp.day_bounds(zone_name, zone, local)
        n = capsx.count(cap, now_u, day)
        counters[cap.id] = {"applies": True, "count": n, "limit": cap.limit, "window": cap.window}
        if cap.appointment_waives:
            waivable_caps.append(len(checks))
        add(comp.cap_check(i, cap, n))

    inputs: dict[str, Any] = {
        "callee_local_time": local.isoformat(),
        "zone": zone_name,
        "zone_source": zone_source,
        "policy_date": policy_today.isoformat(),
        "relation": relation,
        "number": masked,
        "counters": counters,
        "appointment": None,
    }
    if zone_note:
        inputs["zone_note"] = zone_note
    if len(wzones) > 1:
        inputs["window_zones"] = [str(z) for z in wzones]

    # appointment exemption --------------------------------------------------------
    exempted = False
    appointments = [a for a in request.appointments if a.number == number] if request.appointments else ()
    if appointments and appointment(policy, appointments, capsx, now_u, zone, inputs):
        for i in [hours_index, *waivable_caps]:
            c = checks[i]
            if not c.passed:
                exempted = True
                checks[i] = Check(
                    c.rule_id,
                    False,
                    c.detail + " — exempted by the agreed callback time",
                    c.detail_zh + "（与客户约定时间，豁免）",
                    exempted=True,
                )
        inputs["appointment"]["used"] = exempted

    # decide ------------------------------------------------------------------------
    deciding = None
    for c in checks:
        if not c.passed and not c.exempted:
            deciding = c
            break
    if deciding is None:
        if exempted:
            appt = inputs["appointment"]
            waived = ", ".join(c.rule_id for c in checks if c.exempted)
            return Decision(
                True,
                "appointment.exception",
                f"allowed by the agreed callback time {appt['at']}: exempted from {waived}",
                f"与客户约定回拨时间 {appt['at']}，豁免 {waived}，允许拨打",
                local,
                tuple(checks),
                policy.version,
                local,
                inputs,
            )
        return Decision(
            True,
            "allow",
            f"allowed: all {len(checks)} checks passed",
            f"允许拨打：全部 {len(checks)} 项检查通过",
            local,
            tuple(checks),
            policy.version,
            local,
            inputs,
        )

    next_at: datetime | None = None
    if deciding.rule_id.startswith(TEMPORAL_PREFIXES):
        next_at, note = search_next(policy, capsx, relation, appointments, now_u, zone, wzones)
        inputs["next_allowed_search"] = note
        if next_at is not None:
            # Whole seconds, rounded up: answers and reasons read cleanly, never earlier than lawful.
            if next_at.microsecond:
                next_at = next_at.replace(microsecond=0) + timedelta(seconds=1)
            next_at = next_at.astimezone(zone)
    reason = f"{deciding.rule_id}: {deciding.detail}"
    reason_zh = deciding.detail_zh
    if next_at is not None:
        reason += f"; next lawful time {next_at.isoformat()} (callee time)"
        reason_zh += f"；最早可拨时间 {next_at.isoformat()}（被叫当地时间）"
    return Decision(False, deciding.rule_id, reason, reason_zh, next_at, tuple(checks), policy.version, local, inputs)
