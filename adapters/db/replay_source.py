"""`SqlAlchemyReplaySource`: the logged dials of a period for `dialgate simulate --from-log`.

One read unit of the store: the `dial` records of the decision log in ``[since,
until)`` joined to their attempt rows (the full number, the relation and whether the
call connected), then the cases they name with their contacts and agreed callback
times. The record text is the canonical JSON the hash chain covers; only its channel,
masked number and failed checks are read from it (for an allowed dial nothing failed).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select

from adapters.db import tables as t
from dialer.masking import mask_number
from dialer.replay import LoggedDial, ReplayData, StoredCase, StoredContact, masked_failed

_d, _a, _c, _k, _p = t.decisions.c, t.attempts.c, t.cases.c, t.contacts.c, t.appointments.c
_CHUNK = 500


class SqlAlchemyReplaySource:
    def __init__(self, store: Any) -> None:
        self._store = store

    async def load(self, since: datetime, until: datetime, creditors: frozenset[str] | None) -> ReplayData:
        query = (
            select(_d.decision_id, _d.at, _d.creditor, _d.case_id, _d.agent_id, _d.allowed, _d.rule_id,
                   _d.attempt_id, _d.record, _a.number, _a.relation, _a.connected)
            .select_from(t.decisions.outerjoin(t.attempts, _a.id == _d.attempt_id))
            .where(_d.kind == "dial", _d.at >= since, _d.at < until)
            .order_by(_d.at, _d.id)
        )
        if creditors is not None:
            query = query.where(_d.creditor.in_(sorted(creditors)))
        dials: list[LoggedDial] = []
        async with self._store.read() as uow:
            for row in (await uow.conn.execute(query)).all():
                if row.allowed and row.number is not None and row.rule_id == "allow":
                    # Every check passed: the record text adds nothing the row lacks, and
                    # parsing it is most of the read's cost.
                    failed: frozenset[str] = frozenset()
                    masked = mask_number(row.number)
                else:
                    record = json.loads(row.record)
                    failed = masked_failed(record.get("checks", ()))
                    masked = record.get("number", "")
                dials.append(LoggedDial(
                    decision_id=row.decision_id, at=row.at, creditor=row.creditor, case_id=row.case_id,
                    agent_id=row.agent_id, number_masked=masked, allowed=bool(row.allowed), rule_id=row.rule_id,
                    failed=failed, attempt_id=row.attempt_id, number=row.number, relation=row.relation,
                    connected=bool(row.connected),
                ))
            wanted = {(d.creditor, d.case_id) for d in dials}
            cases = await self._cases(uow, wanted)
        notes = []
        unmatched = sum(1 for d in dials if (d.creditor, d.case_id) not in cases and d.case_id not in ("", "-"))
        if unmatched:
            notes.append(f"{unmatched} logged dials name a case no longer in the store: kept as logged")
        return ReplayData(dials=dials, cases=cases, notes=notes)

    async def _cases(self, uow: Any, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], StoredCase]:
        ids = sorted({case_id for _, case_id in wanted})
        rows: list[Any] = []
        for i in range(0, len(ids), _CHUNK):
            q = select(_c.id, _c.creditor, _c.case_id, _c.status, _c.commission_start, _c.commission_end,
                       _c.assigned_agent).where(_c.case_id.in_(ids[i:i + _CHUNK]))
            rows += [r for r in (await uow.conn.execute(q)).all() if (r.creditor, r.case_id) in wanted]
        pks = [r.id for r in rows]
        contacts: dict[int, list[StoredContact]] = {}
        appointments: dict[int, list[tuple[str, datetime, datetime]]] = {}
        for i in range(0, len(pks), _CHUNK):
            chunk = pks[i:i + _CHUNK]
            q = select(_k.case_pk, _k.number, _k.relation, _k.tz, _k.added_at).where(_k.case_pk.in_(chunk)).order_by(_k.id)
            for r in (await uow.conn.execute(q)).all():
                contacts.setdefault(r.case_pk, []).append(StoredContact(r.number, r.relation, r.tz, r.added_at))
            q = select(_p.case_pk, _p.number, _p.at, _p.created_at).where(_p.case_pk.in_(chunk))
            for r in (await uow.conn.execute(q)).all():
                appointments.setdefault(r.case_pk, []).append((r.number, r.at, r.created_at))
        return {
            (r.creditor, r.case_id): StoredCase(
                creditor=r.creditor, case_id=r.case_id, status=r.status, commission_start=r.commission_start,
                commission_end=r.commission_end, assigned_agent=r.assigned_agent,
                contacts=tuple(contacts.get(r.id, ())), appointments=tuple(appointments.get(r.id, ())),
            )
            for r in rows
        }
