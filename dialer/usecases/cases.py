"""Cases: imports of cases and repayments, a number added, a case read, callers looked up."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any, Mapping, Sequence
from zoneinfo import ZoneInfo

from dialer.errors import Conflict, InvalidImport, NoSuchCase
from dialer.ids import new_id
from dialer.masking import mask_number, mask_optional
from dialer.model import CaseInput, CaseRecord, ChangeSource, ContactRecord, Principal
from dialer.usecases.base import GateBase
from dialer.usecases.commands import CASE_READ_ROLES, DATA_ROLES, LOOKUP_ROLES, require_role
from dialer.usecases.presenters import _same, case_json, outcome_json
from policy import normalize_number


class CaseUseCases(GateBase):
    # -- imports ---------------------------------------------------------------------
    async def import_cases(self, actor: Principal, cases: Sequence[CaseInput]) -> dict[str, Any]:
        """Upsert validated cases in one transaction (all or nothing)."""
        require_role(actor, DATA_ROLES, "import cases")
        outside = [
            {"row": i + 1, "field": "creditor", "error": f"creditor {c.creditor!r} is outside your scope"}
            for i, c in enumerate(cases)
            if not actor.can_see(c.creditor)
        ]
        if outside:
            raise InvalidImport(outside)
        now = self._now()
        created = updated = 0
        import_id = new_id()
        source = ChangeSource(kind="import", actor=actor.name, role=actor.role, ref=import_id)
        async with self.store.write(tuple(f"case:{c.case_id}" for c in cases)) as uow:
            for row, c in enumerate(cases, start=1):
                rec, is_new = await uow.cases.upsert(c, now, source=source.at_row(row))
                created += is_new
                updated += not is_new
                await uow.outbox.add(
                    "case.updated", creditor=rec.creditor, case_pk=rec.pk, case_id=rec.case_id, occurred_at=now,
                    payload={"status": rec.status, "flags": sorted(rec.flags), "imported": True,
                             "assigned_agent": rec.assigned_agent, "contacts": len(rec.contacts)},
                )
            await uow.audit.add(
                at=now, actor=actor.name, action="cases.imported", creditor=None, case_id=None,
                details={"import_id": import_id, "created": created, "updated": updated,
                         "case_ids": [c.case_id for c in cases][:1000]},
            )
        return {"import_id": import_id, "created": created, "updated": updated, "total": len(cases)}

    async def import_repayments(self, actor: Principal, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Record repayments; a settled one closes its case. Unknown cases refuse the file."""
        require_role(actor, DATA_ROLES, "import repayments")
        now = self._now()
        closed = 0
        import_id = new_id()
        async with self.store.write(tuple(f"case:{r['case_id']}" for r in rows)) as uow:
            errors = []
            found: list[CaseRecord] = []
            for i, r in enumerate(rows):
                case = await uow.cases.get(r["creditor"], r["case_id"]) if actor.can_see(r["creditor"]) else None
                if case is None:
                    errors.append({"row": i + 1, "field": "case_id", "error": f"no case {r['case_id']!r} for creditor {r['creditor']!r}"})
                else:
                    found.append(case)
            if errors:
                raise InvalidImport(errors)
            for row, (r, case) in enumerate(zip(rows, found), start=1):
                await uow.cases.record_repayment(
                    case.creditor, case.case_id, r.get("amount"), r.get("paid_on"), bool(r["settled"]), actor.name, now
                )
                # Also when the bank's file already said settled: the repayment is what
                # holds the closure against a later file that says active again.
                if r["settled"] and (case.status != "settled" or case.status_hold != "repayment"):
                    # Held against later case files: a paid debtor is not called again
                    # because the bank's next file still says "active".
                    await uow.cases.update(
                        case.pk, now, status="settled", status_hold="repayment", follow_up_status="closed",
                        next_action_date=None,
                        source=ChangeSource(kind="repayment", actor=actor.name, role=actor.role, ref=import_id,
                                            row=row, reason="settled by repayment"),
                    )
                    closed += case.status != "settled"
                    await uow.outbox.add(
                        "case.updated", creditor=case.creditor, case_pk=case.pk, case_id=case.case_id,
                        occurred_at=now, payload={"status": "settled", "reason": "repayment", "follow_up_status": "closed"},
                    )
            await uow.audit.add(
                at=now, actor=actor.name, action="repayments.imported", creditor=None, case_id=None,
                details={"import_id": import_id, "rows": len(rows), "closed": closed},
            )
        return {"recorded": len(rows), "closed": closed}

    async def add_contact(
        self, actor: Principal, case_id: str, contact: ContactRecord, creditor: str | None = None
    ) -> CaseRecord:
        require_role(actor, DATA_ROLES, "add contacts")
        now = self._now()
        async with self.store.write((f"case:{case_id}", f"number:{contact.number}")) as uow:
            case = await self._resolve_case(uow, actor, case_id, creditor)
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
