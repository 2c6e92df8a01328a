"""Cases: imports of cases and repayments, a number added, a case read, callers looked up."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any, Mapping, Sequence
from zoneinfo import ZoneInfo

from dialer.errors import Conflict, NoSuchCase, UnprocessableEntity
from dialer.masking import mask_number, mask_optional
from dialer.model import CaseInput, CaseRecord, ChangeSource, ContactRecord, Principal
from dialer.usecases.base import GateBase
from dialer.usecases.commands import CASE_READ_ROLES, DATA_ROLES, LOOKUP_ROLES, require_role
from dialer.usecases.presenters import _same, case_json, outcome_json
from policy import NumberFormatError, normalize_number


class CaseUseCases(GateBase):
    # -- imports ---------------------------------------------------------------------
    async def import_cases(self, actor: Principal, cases: Sequence[CaseInput]) -> dict[str, Any]:
        """Upsert validated cases in one transaction (all or nothing)."""
        from dialer.import_apply import import_cases_at_once  # every import applies its rows there

        require_role(actor, DATA_ROLES, "import cases")
        return await import_cases_at_once(self.store, actor, cases, self._now())

    async def import_repayments(self, actor: Principal, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Record repayments; a settled one closes its case. Unknown cases refuse the file."""
        from dialer.import_apply import import_repayments_at_once  # every import applies its rows there

        require_role(actor, DATA_ROLES, "import repayments")
        return await import_repayments_at_once(self.store, actor, rows, self._now())

    async def add_contact(
        self, actor: Principal, case_id: str, contact: ContactRecord, creditor: str | None = None,
        written: tuple[str, str] | None = None,
    ) -> CaseRecord:
        """`written`: the number as given and the region it was read in, when the case's
        creditor was not named (its region was not known then)."""
        require_role(actor, DATA_ROLES, "add contacts")
        now = self._now()
        async with self.store.write((f"case:{case_id}", f"number:{contact.number}")) as uow:
            case = await self._resolve_case(uow, actor, case_id, creditor)
            if written is not None:
                _same_reading(written, self.policies.for_creditor(case.creditor).default_region, contact.number)
            source = ChangeSource(kind="api", actor=actor.name, role=actor.role,
                                  ref=f"POST /v1/cases/{case.case_id}/contacts", reason=contact.source)
            if not await uow.cases.add_contact(case.pk, replace(contact, added_at=now), source=source):
                raise Conflict(
                    f"case {case_id} already has number {mask_number(contact.number)}",
                    details={"case_id": case_id, "number": mask_number(contact.number)},
                )
            if contact.source == "info_repair" and case.status == "active":
                # 最新线索: a number found by information repair is followed up by the next day.
                zone = ZoneInfo(self.policies.for_creditor(case.creditor).timezone)
                await uow.cases.update(case.pk, now, source=source, follow_up_status="new_lead",
                                       next_action_date=now.astimezone(zone).date() + timedelta(days=1))
            await uow.outbox.add(
                "case.updated", creditor=case.creditor, case_pk=case.pk, case_id=case.case_id, occurred_at=now,
                payload={"contact_added": mask_number(contact.number), "relation": contact.relation,
                         "source": contact.source},
            )
            await uow.audit.add(
                at=now, actor=actor.name, action="contact.added", creditor=case.creditor, case_id=case.case_id,
                details={"number": mask_number(contact.number), "relation": contact.relation, "source": contact.source},
            )
            after = await uow.cases.get(case.creditor, case.case_id)
            assert after is not None
            return after

    # -- queries ---------------------------------------------------------------------
    async def case_view(self, actor: Principal, case_id: str, creditor: str | None = None) -> dict[str, Any]:
        require_role(actor, CASE_READ_ROLES, "read cases")
        async with self.store.read() as uow:
            case = await self._resolve_case(uow, actor, case_id, creditor)
            if actor.role == "collector" and case.assigned_agent != actor.name:
                raise NoSuchCase(f"no case {case_id!r}", details={"case_id": case_id})
            attempts = await uow.attempts.for_case(case.pk)
            outcomes = {o.attempt_id: o for o in await uow.attempts.outcomes_for_case(case.pk)}
            decisions = await uow.decisions.get_many(a.decision_id for a in attempts)
        show = (lambda n: n) if actor.sees_full_numbers else mask_number
        text = _same if actor.sees_full_numbers else mask_optional
        return {
            **case_json(case, show, text),
            "attempts": [
                {
                    "attempt_id": a.attempt_id,
                    "at": a.at.isoformat(),
                    "number": show(a.number),
                    "relation": a.relation,
                    "agent_id": a.agent_id,
                    "channel": a.channel,
                    "state": a.state,
                    "connected": a.connected,
                    "decision": decisions[a.decision_id].to_api() if a.decision_id in decisions else None,
                    "outcome": outcome_json(outcomes[a.attempt_id], text) if a.attempt_id in outcomes else None,
                }
                for a in attempts
            ],
        }

    async def lookup(self, actor: Principal, raw_number: str) -> list[dict[str, Any]]:
        require_role(actor, LOOKUP_ROLES, "look up callers")
        number = normalize_number(raw_number, self.policies.default.default_region)
        async with self.store.read() as uow:
            cases = await uow.cases.by_number(number, actor.scope())
        if actor.role == "collector":  # only the cases they may open (their assigned ones)
            cases = [c for c in cases if c.assigned_agent == actor.name]
        show = (lambda n: n) if actor.sees_full_numbers else mask_number
        text = _same if actor.sees_full_numbers else mask_optional
        out = []
        for c in cases:
            contact = c.contact(number)
            out.append(
                {
                    "case_id": c.case_id,
                    "creditor": c.creditor,
                    "debtor_name": text(c.debtor_name),
                    "status": c.status,
                    "assigned_agent": c.assigned_agent,
                    "follow_up_status": c.follow_up_status,
                    "number": show(number),
                    "relation": contact.relation if contact else None,
                    "contact_name": text(contact.name) if contact else None,
                }
            )
        return out


def _same_reading(written: tuple[str, str], region: str, number: str) -> None:
    """Refuse a number that the case's creditor reads as another number (or none) than
    the region it was read in: its imports, and the dials of its numbers as written,
    read in the creditor's region, and the number added must be the one they mean."""
    raw, read_in = written
    if region == read_in:
        return
    try:
        theirs: str | None = normalize_number(raw, region)
    except NumberFormatError:
        theirs = None
    if theirs != number:
        raise UnprocessableEntity(
            f"number {mask_number(raw)} reads as {mask_number(number)} in region {read_in} but"
            f" {'as ' + mask_number(theirs) if theirs else 'as no valid number'} in region {region},"
            " where the case's creditor writes its numbers: write it with its country code (+…)"
            f" (号码在 {read_in} 与该案委托方所在地区 {region} 的读法不同，请带国家代码填写)",
            details={"field": "number", "region": region},
        )
