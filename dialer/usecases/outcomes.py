"""Logging a call's outcome (催记): the attempt completed, the case's follow-up, its
events and alerts, in one write."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, TypedDict
from zoneinfo import ZoneInfo

import structlog

from dialer import attempt_state
from dialer.errors import Conflict, Forbidden, NoSuchAttempt, OutcomeConflict
from dialer.masking import mask_number, redact_on_input
from dialer.model import AttemptRecord, CaseRecord, ChangeSource, ContactRecord, OutcomeRecord
from dialer.ports import UnitOfWork
from dialer.usecases.base import GateBase
from dialer.usecases.commands import OUTCOME_ROLES, LogOutcome, require_role
from dialer.usecases.follow_up import (
    ALERTS, RESULT_FLAGS, _check_promise_within_commission, _validate_outcome, chosen_follow_up, follow_up,
)

log = structlog.get_logger("dialgate.gate")


class _CaseEvent(TypedDict):
    """The case and time every event of one logged outcome carries (`Outbox.add`)."""

    creditor: str
    case_pk: int | None
    case_id: str | None
    occurred_at: datetime


async def _mark_contact(
    uow: UnitOfWork, case_pk: int, attempt: AttemptRecord, contacts: dict[str, ContactRecord],
    now: datetime, source: ChangeSource, **mark: Any,
) -> None:
    """Mark the dialled number invalid or do-not-call on its case. A case file that dropped
    the number while the call was on has removed its row: the mark is then added as the
    agency's own contact, so a later file that lists the number again finds it marked."""
    if attempt.number in contacts:
        await uow.cases.update_contact(case_pk, attempt.number, now=now, source=source, **mark)
        contacts[attempt.number] = replace(contacts[attempt.number], **mark)
        return
    contact = replace(ContactRecord(number=attempt.number, relation=attempt.relation, source="outcome",
                                    added_at=now), **mark)
    if not await uow.cases.add_contact(case_pk, contact, source=source):
        # A row the case as read did not list is there after all: mark it rather than lose the mark.
        await uow.cases.update_contact(case_pk, attempt.number, now=now, source=source, **mark)
    contacts[attempt.number] = contact


class OutcomeUseCases(GateBase):
    # -- LogOutcome ------------------------------------------------------------------
    async def log_outcome(self, cmd: LogOutcome) -> tuple[OutcomeRecord, bool, CaseRecord]:
        """Record a call's outcome (idempotent). Returns (outcome, created, case after)."""
        require_role(cmd.actor, OUTCOME_ROLES, "log call outcomes")
        if cmd.actor.role == "pbx" and (cmd.result != "none" or cmd.promise is not None or cmd.callback_at is not None):
            # The switch knows how a call ended, not what was said: an agreed callback
            # from it would waive the window and the caps at a time nobody agreed to.
            raise Forbidden(
                "role 'pbx' may log how a call ended, not its result: a result is the collector's",
                details={"role": "pbx", "field": "result", "result": cmd.result,
                         "error_zh": "呼叫中心系统只能登记通话结束方式，通话结果须由催收员登记"},
            )
        _validate_outcome(cmd)
        now = self._now()
        digest = hashlib.sha256(
            "|".join(
                [
                    cmd.attempt_id,
                    cmd.disposition,
                    cmd.result,
                    cmd.note,
                    cmd.callback_at.astimezone(timezone.utc).isoformat() if cmd.callback_at else "",
                    f"{cmd.promise.amount}@{cmd.promise.date.isoformat()}" if cmd.promise else "",
                ]
                # Only when given, so digests of outcomes logged without them stay the same.
                + ([f"{cmd.next_action_date}|{cmd.status}|{cmd.authorised_agent}"]
                   if cmd.next_action_date or cmd.status or cmd.authorised_agent else [])
            ).encode()
        ).hexdigest()
        # The case's and the number's locks too: the stops an outcome sets (a flag, a number
        # do-not-call or invalid) and the call it marks connected must not commit under a
        # dial that read them before. An attempt never changes case or number, so they are
        # read before the write.
        keys = [f"attempt:{cmd.attempt_id}"]
        async with self.store.read() as r:
            known = await r.attempts.get(cmd.attempt_id)
        if known is not None:
            keys.extend(attempt_state.dial_locks(known))
        async with self.store.write(keys) as uow:
            attempt = await uow.attempts.get(cmd.attempt_id)
            if (
                attempt is None
                or not cmd.actor.can_see(attempt.creditor)
                or (cmd.actor.role == "collector" and attempt.agent_id != cmd.actor.name)
            ):
                raise NoSuchAttempt(f"no attempt {cmd.attempt_id!r}", details={"attempt_id": cmd.attempt_id})
            existing = await uow.attempts.get_outcome(cmd.attempt_id)
            case = await uow.cases.get(attempt.creditor, attempt.case_id)
            assert case is not None
            if existing is not None:
                if existing.request_digest == digest:
                    return existing, False, case
                raise OutcomeConflict(
                    f"attempt {cmd.attempt_id} already has a different outcome",
                    details={"attempt_id": cmd.attempt_id, "disposition": existing.disposition, "result": existing.result},
                )
            pol = self.policies.for_creditor(case.creditor)
            zone = ZoneInfo(pol.timezone)
            connected = cmd.disposition.startswith("connected")
            if connected and attempt.state == "released":
                # The call ended before the debtor's phone rang: nobody answered, so no
                # one agreed a callback time that would waive the window and the caps.
                raise Conflict(
                    f"attempt {cmd.attempt_id} was released before the number was dialled: it never connected",
                    details={"attempt_id": cmd.attempt_id, "state": attempt.state, "disposition": cmd.disposition,
                             "error_zh": "该次外呼在拨出前已释放，未曾接通，不能登记为接通"},
                )
            _check_promise_within_commission(cmd, case, now.astimezone(zone).date())
            outcome = OutcomeRecord(
                attempt_id=cmd.attempt_id,
                disposition=cmd.disposition,
                result=cmd.result,
                # Card and ID numbers typed into a note are not kept (dialer/masking.py).
                note=redact_on_input(cmd.note) or "",
                callback_at=cmd.callback_at,
                promise_amount=cmd.promise.amount if cmd.promise else None,
                promise_date=cmd.promise.date if cmd.promise else None,
                logged_by=cmd.actor.name,
                logged_at=now,
                request_digest=digest,
            )
            await uow.attempts.add_outcome(case.pk, outcome)

            flags = set(case.flags)
            contacts = {c.number: c for c in case.contacts}
            changes: dict[str, Any] = {}
            source = ChangeSource(kind="outcome", actor=cmd.actor.name, role=cmd.actor.role, ref=cmd.attempt_id,
                                  reason=f"{cmd.disposition}/{cmd.result}")
            if cmd.disposition == "invalid_number":
                await _mark_contact(uow, case.pk, attempt, contacts, now, source, status="invalid")
            if cmd.result == "third_party_refuses_contact":
                await _mark_contact(uow, case.pk, attempt, contacts, now, source, do_not_call=True)
            if cmd.result == "callback" and cmd.callback_at is not None:
                await uow.cases.add_appointment(case.pk, attempt.number, cmd.callback_at, cmd.attempt_id)
            if cmd.result in RESULT_FLAGS:
                # The agency's flag: no later case file lifts it, only a person with a reason.
                flags.add(RESULT_FLAGS[cmd.result])
                changes["add_flags"] = (RESULT_FLAGS[cmd.result],)
            status, next_date = follow_up(
                cmd, connected, now.astimezone(zone).date(), zone,
                any(c.status == "valid" and not c.do_not_call for c in contacts.values()),
                self.policies.calendar,
            )
            if case.status == "paused":
                status, next_date = "paused", None
            elif case.status in ("settled", "withdrawn", "returned"):
                status, next_date = "closed", None
            if cmd.status is not None or cmd.next_action_date is not None:
                status, next_date = chosen_follow_up(
                    cmd, status, next_date, now.astimezone(zone), case, self.policies.calendar
                )
            changes["follow_up_status"] = status
            changes["next_action_date"] = next_date
            await uow.cases.update(case.pk, now, source=source, **changes)
            ev = _CaseEvent(creditor=case.creditor, case_pk=case.pk, case_id=case.case_id, occurred_at=now)
            await attempt_state.mark_completed(uow, attempt, connected=connected, at=now)
            await uow.outbox.add(
                "outcome.logged", **ev,
                payload={"attempt_id": cmd.attempt_id, "disposition": cmd.disposition, "result": cmd.result,
                         "agent_id": attempt.agent_id, "logged_by": cmd.actor.name,
                         "number": mask_number(attempt.number)},
            )
            await uow.outbox.add(
                "case.updated", **ev,
                payload={"follow_up_status": status, "next_action_date": next_date.isoformat() if next_date else None,
                         "flags": sorted(flags), "status": case.status},
            )
            if cmd.result in ALERTS:
                await uow.outbox.add(
                    f"alert.{cmd.result}", **ev,
                    payload={"attempt_id": cmd.attempt_id, "agent_id": attempt.agent_id,
                             "number": mask_number(attempt.number), **ALERTS[cmd.result].fields("message")},
                )
            await uow.audit.add(
                at=now, actor=cmd.actor.name, action="outcome.logged", creditor=case.creditor,
                case_id=case.case_id, details={"attempt_id": cmd.attempt_id, "disposition": cmd.disposition,
                                               "result": cmd.result},
            )
            after = await uow.cases.get(case.creditor, case.case_id)
            assert after is not None
        log.info("outcome.logged", attempt_id=cmd.attempt_id, disposition=cmd.disposition, result=cmd.result)
        return outcome, True, after
