"""Creditor actions on a case, lifting a stop, reopening, and reading the case history.

Each action is one command (`PauseCase`, `LiftFlag`, …) run by `CaseActions.run`: it
resolves the case within the caller's creditors, checks the role and the case's state,
and writes the change through the case repository — which puts it on the case's
hash-chained history with the caller, role, API call and reason — plus a `case.updated`
event and an audit-log line, in one transaction.

Who may do what (the creditor instructs; the agency's people carry it out):

* pause / resume / extend the commission / withdraw (暂停催收 / 恢复 / 延长委托 / 撤案):
  supervisor, data staff, admin;
* lift a stop an outcome or a person set (dispute, complaint risk, deceased, …):
  supervisor, compliance, admin — never a collector; the bank's own flag is lifted only
  by the bank's file;
* reopen a case closed by a repayment or held by a pause or withdrawal: supervisor,
  compliance, data staff, admin.

Every action needs a reason; every refusal names what is wrong (409 for a state that
does not allow it, 422 for a bad value).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from dialer.errors import Conflict, NoSuchCase, UnprocessableEntity
from dialer.model import ChangeSource, HistoryEntry, Principal
from dialer.usecases import CASE_READ_ROLES, Gate, case_json, require_role
from dialer.masking import mask_number, mask_optional, redact_on_input
from policy import CASE_FLAGS

log = structlog.get_logger("dialgate.cases")

CREDITOR_ACTION_ROLES = frozenset({"supervisor", "data", "admin"})
LIFT_ROLES = frozenset({"supervisor", "compliance", "admin"})
REOPEN_ROLES = frozenset({"supervisor", "compliance", "data", "admin"})
CLOSED = frozenset({"settled", "withdrawn", "returned"})
MAX_REASON = 500


@dataclass(frozen=True, slots=True)
class CaseAction:
    """`action`: pause | resume | withdraw | extend | reopen | lift."""

    actor: Principal
    case_id: str
    action: str
    reason: str
    creditor: str | None = None
    flag: str | None = None  # lift
    commission_end: date | None = None  # extend


ROLES: dict[str, frozenset[str]] = {
    "pause": CREDITOR_ACTION_ROLES,
    "resume": CREDITOR_ACTION_ROLES,
    "withdraw": CREDITOR_ACTION_ROLES,
    "extend": CREDITOR_ACTION_ROLES,
    "reopen": REOPEN_ROLES,
    "lift": LIFT_ROLES,
}
PATHS: dict[str, str] = {
    "pause": "pause", "resume": "resume", "withdraw": "withdraw", "extend": "commission", "reopen": "reopen",
}


class CaseActions:
    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def run(self, cmd: CaseAction) -> dict[str, Any]:
        require_role(cmd.actor, ROLES[cmd.action], _what(cmd))
        # Card and ID numbers never reach the store: the audit log keeps the reason as given.
        reason = redact_on_input(cmd.reason.strip()) or ""
        if not reason or len(cmd.reason) > MAX_REASON:
            raise UnprocessableEntity(
                "a reason is required", details={"errors": [
                    {"field": "reason", "error": f"required: why (1-{MAX_REASON} characters)"}]},
            )
        if cmd.action == "lift" and cmd.flag not in CASE_FLAGS:
            raise UnprocessableEntity(
                f"unknown flag {cmd.flag!r}",
                details={"errors": [{"field": "flag", "error": f"expected one of {', '.join(CASE_FLAGS)}"}]},
            )
        now = self.gate._now()
        async with self.gate.store.write((f"case:{cmd.case_id}",)) as uow:
            case = await self.gate._resolve_case(uow, cmd.actor, cmd.case_id, cmd.creditor)
            path = (f"flags/{cmd.flag}/lift" if cmd.action == "lift" else PATHS[cmd.action])
            source = ChangeSource(kind="api", actor=cmd.actor.name, role=cmd.actor.role,
                                  ref=f"POST /v1/cases/{case.case_id}/{path}", reason=reason)
            today = now.astimezone(ZoneInfo(self.gate.policies.for_creditor(case.creditor).timezone)).date()
            changes = _changes(cmd, case, today)
            await uow.cases.update(case.pk, now, source=source, **changes)
            after = await uow.cases.get(case.creditor, case.case_id)
            assert after is not None
            await uow.outbox.add(
                "case.updated", creditor=after.creditor, case_pk=after.pk, case_id=after.case_id, occurred_at=now,
                payload={"status": after.status, "flags": sorted(after.flags), "action": cmd.action,
                         "follow_up_status": after.follow_up_status,
                         "next_action_date": after.next_action_date.isoformat() if after.next_action_date else None},
            )
            await uow.audit.add(
                at=now, actor=cmd.actor.name, action=f"case.{cmd.action}", creditor=after.creditor,
                case_id=after.case_id, details={"reason": reason, "flag": cmd.flag,
                                                "history_seq": after.history_seq},
            )
        log.info("case.action", action=cmd.action, case_id=after.case_id, creditor=after.creditor,
                 history_seq=after.history_seq)
        if cmd.actor.sees_full_numbers:
            return {**case_json(after, lambda n: n), "history_seq": after.history_seq}
        return {**case_json(after, mask_number, mask_optional), "history_seq": after.history_seq}

    async def history(
        self, actor: Principal, case_id: str, creditor: str | None = None, after: int = 0, limit: int = 500
    ) -> dict[str, Any]:
        require_role(actor, CASE_READ_ROLES, "read case history")
        async with self.gate.store.read() as uow:
            case = await self.gate._resolve_case(uow, actor, case_id, creditor)
            if actor.role == "collector" and case.assigned_agent != actor.name:
                raise NoSuchCase(f"no case {case_id!r}", details={"case_id": case_id})
            entries: list[HistoryEntry] = await uow.cases.history(case.pk, after=after, limit=limit)
        return {
            "case_id": case.case_id,
            "creditor": case.creditor,
            "history_seq": case.history_seq,
            "items": [e.to_api() for e in entries],
            "next_after": entries[-1].seq if len(entries) == limit else None,
        }


def _what(cmd: CaseAction) -> str:
    return {"pause": "pause cases", "resume": "resume cases", "withdraw": "withdraw cases",
            "extend": "extend commissions", "reopen": "reopen cases", "lift": "lift case flags"}[cmd.action]


def _conflict(message: str, message_zh: str, **details: Any) -> Conflict:
    return Conflict(f"{message} / {message_zh}", details=details)


def _changes(cmd: CaseAction, case: Any, today: date) -> dict[str, Any]:
    """The case columns the action changes, or the refusal when its state does not allow it."""
    a = cmd.action
    if a == "pause":
        if case.status != "active":
            raise _conflict(f"case is {case.status}, not active", f"案件状态为 {case.status}，非在催", status=case.status)
        # Only the creditor lifts it: a later file saying "active" keeps it paused.
        return dict(status="paused", status_hold="pause", follow_up_status="paused", next_action_date=None)
    if a == "resume":
        if case.status != "paused":
            raise _conflict(f"case is {case.status}, not paused", f"案件状态为 {case.status}，未暂停", status=case.status)
        if case.status_hold not in (None, "pause"):
            # A file's pause over a repayment closure or a withdrawal keeps that hold:
            # resuming would lift it without the reopening its reason belongs to.
            raise _conflict(f"case is held by {case.status_hold}: lifting it needs a reopen",
                            f"案件因 {case.status_hold} 锁定，须重新打开（reopen）",
                            status=case.status, status_hold=case.status_hold)
        return dict(status="active", status_hold=None, follow_up_status="waiting", next_action_date=today)
    if a == "withdraw":
        if case.status in CLOSED:
            raise _conflict(f"case is already {case.status}", f"案件已为 {case.status}", status=case.status)
        return dict(status="withdrawn", status_hold="withdraw", follow_up_status="closed", next_action_date=None)
    if a == "extend":
        end = cmd.commission_end
        if end is None or (case.commission_end is not None and end <= case.commission_end):
            raise UnprocessableEntity(
                "an extension must end after the current commission end",
                details={"errors": [{"field": "commission_end", "error": "must be later than "
                                     f"{case.commission_end.isoformat() if case.commission_end else 'the start'}"}]},
            )
        if case.commission_start is not None and end < case.commission_start:
            raise UnprocessableEntity("commission_end before commission_start",
                                      details={"errors": [{"field": "commission_end", "error": "before the start"}]})
        return dict(commission_end=end, commission_extended_to=end)
    if a == "reopen":
        if case.status == "active" and case.status_hold is None:
            raise _conflict("case is open", "案件未结案", status=case.status)
        return dict(status="active", status_hold=None, follow_up_status="waiting", next_action_date=today)
    # lift
    flag = cmd.flag
    if flag not in case.agency_flags:
        if flag in case.creditor_flags:
            raise _conflict(f"{flag} is the bank's own flag: the bank's case file lifts it",
                            f"{flag} 为委托方标记，须由委托方案件文件解除", flag=flag, set_by="creditor")
        raise _conflict(f"case has no flag {flag}", f"案件无 {flag} 标记", flag=flag)
    return dict(remove_flags=(flag,))
