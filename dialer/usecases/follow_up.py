"""A call's outcome: what it must carry, and the case's follow-up status and next
action date it leads to (seed 000), within the rules' bounds."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from dialer.errors import UnprocessableEntity
from dialer.model import CHOSEN_STATUSES, DISPOSITIONS, FOLLOW_UP_STATUSES, RESULTS, CaseRecord
from dialer.usecases.commands import LogOutcome
from policy.holidays import HolidayCalendar, default_calendar
from policy.text import Text

RESULT_FLAGS = {
    "dispute": "dispute",
    "complaint_risk": "complaint_risk",
    "reported_deceased": "deceased",
    "reported_incarcerated": "incarcerated",
    "fraud_claim": "fraud_claim",
}


# Results that stop calls and must reach a supervisor at once (seed 001: 立即通报业务主管).
ALERTS: dict[str, Text] = {
    "complaint_risk": Text("complaint risk: calls stopped, supervisor to follow up", "投诉倾向：已停止拨打，请主管跟进"),
    "dispute": Text("dispute: calls stopped, supervisor first, then the creditor is consulted",
                    "争议：已停止拨打，请业务主管立即处理并与委托方核实"),
}
NIGHT_END = time(20, 30)  # 夜间催收 must finish by 20:30 (seed 000)
CUSTOM_MAX_DAYS = 30  # a custom date without a commission end: at most a month ahead


def _validate_outcome(cmd: LogOutcome) -> None:
    errors = []
    if cmd.disposition not in DISPOSITIONS:
        errors.append({"field": "disposition", "error": f"expected one of {', '.join(DISPOSITIONS)}"})
    if cmd.result not in RESULTS:
        errors.append({"field": "result", "error": f"expected one of {', '.join(RESULTS)}"})
    connected = cmd.disposition.startswith("connected")
    if cmd.result != "none" and not connected and cmd.disposition in DISPOSITIONS:
        errors.append({"field": "result", "error": "a result other than none needs a connected call"})
    if cmd.result == "callback" and cmd.callback_at is None:
        errors.append({"field": "callback_at", "error": "required when result is callback"})
    if cmd.result in ("promise_to_pay", "instalment") and cmd.promise is None:
        errors.append({"field": "promise", "error": "required (amount and date) for promise_to_pay and instalment"})
    if cmd.result == "third_party_refuses_contact" and cmd.disposition != "connected_third_party":
        errors.append({"field": "result", "error": "third_party_refuses_contact needs disposition connected_third_party"})
    if errors:
        raise UnprocessableEntity("invalid outcome", details={"errors": errors})


def _check_promise_within_commission(cmd: LogOutcome, case: CaseRecord, today: date) -> None:
    """A promise dated before today (the creditor's zone) is refused (422): its follow-up
    date would silently become today, not the day before the promise. A promise dated
    after the commission end is refused too, not recorded as a promise: the agency's
    mandate ends first, so nobody would follow it up; the creditor extends the
    commission first (POST /v1/cases/{id}/commission)."""
    if cmd.promise is not None and cmd.promise.date < today:
        raise UnprocessableEntity(
            "promise date in the past",
            details={"errors": [{
                "field": "promise.date",
                "error": f"{cmd.promise.date.isoformat()} is before today ({today.isoformat()} in the creditor's zone)",
                "error_zh": f"承诺日期早于今天（{today.isoformat()}）",
            }]},
        )
    if cmd.promise is None or case.commission_end is None or cmd.promise.date <= case.commission_end:
        return
    end = case.commission_end.isoformat()
    raise UnprocessableEntity(
        "promise date after the commission end",
        details={"errors": [{
            "field": "promise.date",
            "error": f"{cmd.promise.date.isoformat()} is after the commission end {end}: ask the creditor to "
                     f"extend the commission first",
            "error_zh": f"承诺日期晚于委托期结束日 {end}，请先申请延长委托期",
        }]},
    )


def chosen_follow_up(
    cmd: LogOutcome,
    status: str,
    next_date: date | None,
    local_now: datetime,
    case: CaseRecord,
    calendar: HolidayCalendar | None = None,
) -> tuple[str, date | None]:
    """The collector's own next action date and status (催记), within the rules' bounds:

    * no status: a date from today up to the rule's date — a follow-up may be brought
      forward, never pushed past what the status requires;
    * urgent (紧急): within 3 working days (default: the next working day);
    * night (夜间催收): today, and only before 20:30 local time;
    * custom (自定义): any day from today to the commission end (a month without one).

    A stop or an agreement (dispute, complaint risk, deceased…, promise, instalment,
    callback) and a paused or closed case keep their own status. Refusals are 422s that
    name the field, in English and Chinese."""
    today = local_now.date()
    errors: list[dict[str, str]] = []

    def err(field_: str, msg: str, msg_zh: str) -> None:
        errors.append({"field": field_, "error": msg, "error_zh": msg_zh})

    d = cmd.next_action_date
    end = case.commission_end
    if cmd.status is not None and cmd.status not in CHOSEN_STATUSES:
        err("status", f"expected one of {', '.join(CHOSEN_STATUSES)}", f"可选状态：{'、'.join(CHOSEN_STATUSES)}")
    elif next_date is None or status not in ("waiting", "reachable", "lost_contact"):
        if status in ("paused", "closed"):
            err("next_action_date" if cmd.status is None else "status",
                f"the case is {status}: no follow-up until it is reopened", f"案件{FOLLOW_UP_STATUSES[status]}，不安排跟进")
        else:
            err("status" if cmd.status else "next_action_date",
                f"result {cmd.result} sets its own follow-up ({status})",
                f"结果 {cmd.result} 已决定跟进状态（{FOLLOW_UP_STATUSES.get(status, status)}）")
    elif cmd.status is None:
        assert d is not None
        if not today <= d <= next_date:
            err("next_action_date", f"must be from {today} to {next_date} (the {status} rule's date)",
                f"须在 {today} 至 {next_date} 之间（{FOLLOW_UP_STATUSES[status]}规则）")
        status, next_date = status, d
    elif cmd.status == "urgent":
        latest = _add_workdays(today, 3, calendar)
        d = d or _add_workdays(today, 1, calendar)
        if not today <= d <= latest:
            err("next_action_date", f"urgent follow-up is within 3 working days: {today} to {latest}",
                f"紧急案件须在3个工作日内跟进：{today} 至 {latest}")
        status, next_date = "urgent", d
    elif cmd.status == "night":
        d = d or today
        if d != today:
            err("next_action_date", f"night collection is the same evening: {today}", f"夜间催收须为当晚：{today}")
        elif local_now.time() >= NIGHT_END:
            err("status", f"night collection must finish by {NIGHT_END:%H:%M}; it is {local_now:%H:%M}",
                f"夜间催收须在 {NIGHT_END:%H:%M} 前完成，现在是 {local_now:%H:%M}")
        status, next_date = "night", d
    else:  # custom
        latest = end or today + timedelta(days=CUSTOM_MAX_DAYS)
        if d is None:
            err("next_action_date", "required for a custom status", "自定义状态须填写下次跟进日期")
        elif not today <= d <= latest:
            err("next_action_date", f"must be from {today} to {latest}", f"须在 {today} 至 {latest} 之间")
        status, next_date = "custom", d
    if not errors and end is not None and next_date is not None and next_date > end:
        err("next_action_date", f"after the commission end {end}", f"晚于委托期结束日 {end}")
    if errors:
        raise UnprocessableEntity("next action outside the rules' bounds", details={"errors": errors})
    return status, next_date


def _add_workdays(day: date, n: int, calendar: HolidayCalendar | None) -> date:
    # The policy's PRC calendar: statutory days for any year, breaks and make-up days
    # where the State Council's arrangement is known.
    return (calendar or default_calendar()).add_workdays(day, n)


def follow_up(
    cmd: LogOutcome, connected: bool, today: date, zone: ZoneInfo, dialable_left: bool,
    calendar: HolidayCalendar | None = None,
) -> tuple[str, date | None]:
    """The case's follow-up status and next action date after an outcome (seed 000)."""
    r = cmd.result
    # Only the holder or an authorised agent can promise (seed 000): a relative's word is
    # a reachable contact, not 承诺还款.
    promiser = cmd.disposition == "connected_self" or cmd.authorised_agent
    if r in ("promise_to_pay", "instalment") and cmd.promise is not None and promiser:
        return ("promise" if r == "promise_to_pay" else "instalment"), max(today, cmd.promise.date - timedelta(days=1))
    if r == "callback" and cmd.callback_at is not None:
        return "callback", cmd.callback_at.astimezone(zone).date()
    if r == "dispute":
        return "dispute", today  # supervisor first, today
    if r == "complaint_risk":
        return "complaint_risk", today  # escalate within minutes
    if r in ("reported_deceased", "reported_incarcerated", "fraud_claim"):
        return "deceased_incarcerated_fraud", today + timedelta(days=2)
    if not dialable_left:
        return "lost_contact", _add_workdays(today, 6, calendar)
    if connected:
        return "reachable", _add_workdays(today, 3, calendar)
    return "waiting", today + timedelta(days=2)
