"""Cases, contacts and the per-case history chain."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any, AsyncIterator, Iterable, Sequence

import structlog
from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db import tables as t
from dialer.evidence import EvidenceKey
from dialer.masking import mask_number, mask_text
from dialer.model import (
    UNKNOWN_IMPORT,
    CaseInput,
    CaseRecord,
    ChangeSource,
    ContactRecord,
    HistoryEntry,
)
from policy.model import Appointment
from adapters.db.queries import (
    I_CASE, I_CONTACT, I_HISTORY, Q_APPOINTMENTS, Q_CASE_BY_KEY, Q_CASE_BY_KEY_LOCKED, Q_CASE_BY_PK_LOCKED,
    Q_CASES_BY_ID, Q_CASES_BY_ID_SCOPED, Q_CONTACTS_OF, Q_CONTACTS_OF_CASE, Q_CREDITOR,
    Q_NEXT_SEQ, U_CASE,
)
from dialer.chain import GENESIS_HASH, NO_KEY, history_from_record, link_history

log = structlog.get_logger("dialgate.store")

# ---------------------------------------------------------------------------------
# Case history (hash chain per case)
# ---------------------------------------------------------------------------------
CLOSED_STATUSES = frozenset({"settled", "withdrawn", "returned"})
FIRST_CALL_DAYS = 2  # 首催2天内
# What a history entry records of the case row. The debtor's name is left out: the
# history outlives the commission, and the bank's data is returned without copies
# (numbers are kept masked for the same reason).
TRACKED_FIELDS: tuple[str, ...] = (
    "status", "status_hold", "commission_start", "commission_end", "assigned_agent", "creditor_flags",
    "agency_flags", "amount_due", "overdue_days", "follow_up_status", "next_action_date",
)
SYSTEM_CHANGE = ChangeSource(kind="system", actor="system", role="system")



def _as_date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def _json_value(field_: str, value: Any) -> Any:
    if field_.endswith("flags"):
        return sorted(_flags_set(value)) if isinstance(value, str) or value is None else sorted(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if field_ in ("commission_start", "commission_end", "next_action_date") and value is not None:
        return _as_date(value).isoformat()  # type: ignore[union-attr]
    return value


def _tracked(values: Any) -> dict[str, Any]:
    return {f: _json_value(f, values.get(f)) for f in TRACKED_FIELDS}


def _reason(text: str | None) -> str | None:
    """A reason as the history keeps it: free text, so any phone, card or ID number in
    it is masked (the history is append-only and outlives the commission)."""
    return mask_text(text) if text else text


def _contact_field(number: str) -> str:
    return "contact " + mask_number(number)


def _contact_state(relation: str, status: str, do_not_call: bool, source: str) -> dict[str, Any]:
    return {"relation": relation, "status": status, "do_not_call": do_not_call, "source": source}


def _flags_text(flags: Iterable[str]) -> str:
    return ",".join(sorted(set(flags)))


def _flags_set(value: str | None) -> frozenset[str]:
    return frozenset(f for f in (value or "").split(",") if f)



def _contact_record(c: Any) -> ContactRecord:
    return ContactRecord(
        number=c["number"],
        relation=c["relation"],
        name=c["name"],
        tz=c["tz"],
        status=c["status"],
        do_not_call=bool(c["do_not_call"]),
        source=c["source"],
        added_at=c["added_at"],
    )


def _case_records(rows: Sequence[Any], by_case: dict[int, list[ContactRecord]]) -> list[CaseRecord]:
    return [
        CaseRecord(
            pk=r["id"],
            creditor=r["creditor"],
            case_id=r["case_id"],
            debtor_name=r["debtor_name"],
            status=r["status"],
            commission_start=r["commission_start"],
            commission_end=r["commission_end"],
            assigned_agent=r["assigned_agent"],
            flags=_flags_set(r["flags"]),
            amount_due=r["amount_due"],
            overdue_days=r["overdue_days"],
            follow_up_status=r["follow_up_status"],
            next_action_date=r["next_action_date"],
            event_seq=r["event_seq"],
            contacts=tuple(by_case.get(r["id"], ())),
            updated_at=r["updated_at"],
            creditor_flags=_flags_set(r["creditor_flags"]),
            agency_flags=_flags_set(r["agency_flags"]),
            status_hold=r["status_hold"],
            history_seq=r["history_seq"],
        )
        for r in rows
    ]


class SqlCaseRepository:
    def __init__(self, conn: AsyncConnection, evidence: EvidenceKey | None = None) -> None:
        self.conn = conn
        self.evidence = evidence or NO_KEY  # chains the case history
        self._creditors: set[str] = set()  # known to exist in this transaction

    async def _load(self, where: Any, params: dict[str, Any] | None = None) -> list[CaseRecord]:
        query = where if params is not None else select(t.cases).where(where).order_by(t.cases.c.id)
        rows = (await self.conn.execute(query, params)).mappings().all()
        if not rows:
            return []
        pks = [r["id"] for r in rows]
        crow = (await self.conn.execute(Q_CONTACTS_OF, {"pks": pks})).mappings().all()
        by_case: dict[int, list[ContactRecord]] = {}
        for c in crow:
            by_case.setdefault(c["case_pk"], []).append(_contact_record(c))
        return _case_records(rows, by_case)

    async def find(self, case_id: str, creditors: frozenset[str] | None) -> list[CaseRecord]:
        if creditors is None:
            return await self._load(Q_CASES_BY_ID, {"case_id": case_id})
        if not creditors:
            return []
        return await self._load(Q_CASES_BY_ID_SCOPED, {"case_id": case_id, "creditors": sorted(creditors)})

    async def get(self, creditor: str, case_id: str) -> CaseRecord | None:
        found = await self._load(Q_CASE_BY_KEY, {"creditor": creditor, "case_id": case_id})
        return found[0] if found else None

    async def ensure_creditor(self, creditor: str) -> None:
        if creditor in self._creditors:  # an import's rows name the same few creditors
            return
        self._creditors.add(creditor)
        exists = (await self.conn.execute(Q_CREDITOR, {"creditor": creditor})).first()
        if exists is None:
            await self.conn.execute(
                insert(t.creditors).values(id=creditor, name=creditor, created_at=datetime.now(timezone.utc))
            )

    async def _locked_row(self, pk: int | None = None, creditor: str = "", case_id: str = "") -> Any:
        """The case row (by pk, or by creditor and case id), locked against a concurrent
        change on PostgreSQL (its history head is read here and written back); SQLite
        has one writer at a time."""
        if pk is not None:
            res = await self.conn.execute(Q_CASE_BY_PK_LOCKED, {"pk": pk})
        else:
            res = await self.conn.execute(Q_CASE_BY_KEY_LOCKED, {"creditor": creditor, "case_id": case_id})
        return res.mappings().first()

    async def _append_history(
        self, row: Any, changes: Sequence[tuple[Any, ...]], source: ChangeSource, now: datetime,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Append one entry per (field, old, new[, reason]) after the case's history head;
        returns the head columns to write back with the change (same transaction)."""
        seq, prev = int(row["history_seq"]), row["history_hash"]
        rows = []
        default_reason = reason if reason is not None else source.reason
        for change in changes:
            field_, old, new = change[:3]
            why = change[3] if len(change) > 3 else default_reason
            seq += 1
            entry, record = link_history(
                HistoryEntry(
                    creditor=row["creditor"], case_id=row["case_id"], seq=seq, at=now, actor=source.actor,
                    role=source.role, source=source.kind, source_ref=source.ref, source_row=source.row,
                    field=field_, old=old, new=new, reason=_reason(why),
                ),
                prev, self.evidence,
            )
            rows.append(dict(
                case_pk=row["id"], creditor=entry.creditor, case_id=entry.case_id, seq=seq, at=now,
                actor=entry.actor, role=entry.role, source=entry.source, source_ref=entry.source_ref,
                source_row=entry.source_row, field=field_, record=record, prev_hash=prev, hash=entry.hash,
            ))
            prev = entry.hash
        if rows:
            await self.conn.execute(I_HISTORY, rows)
        return {"history_seq": seq, "history_hash": prev}

    async def upsert(
        self, case: CaseInput, now: datetime, *, source: ChangeSource | None = None
    ) -> tuple[CaseRecord, bool]:
        """Apply a case file's row. What the creditor supplies (status, dates, amounts, the
        bank's own flags and numbers) replaces what the last file said; what the agency
        learned (flags set by outcomes or people, do-not-call and invalid marks, numbers
        added after verification) stays; a status held by a repayment closure, a pause or
        a withdrawal is reopened only by an explicit `reopen` with its reason. Every
        change is a history entry naming `source` (default: an import, row unknown)."""
        src = source or UNKNOWN_IMPORT
        await self.ensure_creditor(case.creditor)
        row = await self._locked_row(creditor=case.creditor, case_id=case.case_id)
        bank_flags = frozenset(case.flags)
        if row is None:
            if case.status == "paused":
                follow, next_date = "paused", None
            elif case.status in CLOSED_STATUSES:
                follow, next_date = "closed", None
            else:  # 首催2天内: the first call is due within two days of assignment
                follow, next_date = "new", now.date() + timedelta(days=FIRST_CALL_DAYS)
            values = dict(
                debtor_name=case.debtor_name, status=case.status, commission_start=case.commission_start,
                commission_end=case.commission_end, assigned_agent=case.assigned_agent,
                flags=_flags_text(bank_flags), creditor_flags=_flags_text(bank_flags), agency_flags="",
                status_hold=None, amount_due=case.amount_due, overdue_days=case.overdue_days,
                follow_up_status=follow, next_action_date=next_date,
            )
            created_entry = {k: v for k, v in _tracked(values).items() if k != "debtor_name"}
            created_entry["contacts"] = [
                {"number": mask_number(c.number), "relation": c.relation, "source": c.source} for c in case.contacts
            ]
            entry, record = link_history(
                HistoryEntry(
                    creditor=case.creditor, case_id=case.case_id, seq=1, at=now, actor=src.actor, role=src.role,
                    source=src.kind, source_ref=src.ref, source_row=src.row, field="case", old=None,
                    new=created_entry, reason=_reason(src.reason),
                ),
                GENESIS_HASH, self.evidence,
            )
            res = await self.conn.execute(I_CASE, dict(
                creditor=case.creditor, case_id=case.case_id, event_seq=0, created_at=now, updated_at=now,
                history_seq=1, history_hash=entry.hash, first_call_alerted_at=None, **values,
            ))
            pk = res.inserted_primary_key[0]
            await self.conn.execute(I_HISTORY, dict(
                case_pk=pk, creditor=case.creditor, case_id=case.case_id, seq=1, at=now, actor=src.actor,
                role=src.role, source=src.kind, source_ref=src.ref, source_row=src.row, field="case",
                record=record, prev_hash=GENESIS_HASH, hash=entry.hash,
            ))
            if case.contacts:
                await self.conn.execute(I_CONTACT, [dict(
                    case_pk=pk, number=c.number, relation=c.relation, name=c.name, tz=c.tz, status=c.status,
                    do_not_call=c.do_not_call, source=c.source, added_at=now,
                ) for c in case.contacts])
            rec = await self.get(case.creditor, case.case_id)
            assert rec is not None
            return rec, True

        pk = row["id"]
        agency = _flags_set(row["agency_flags"])
        hold = row["status_hold"]
        status = case.status
        reason = src.reason
        changes: list[tuple[Any, ...]] = []
        if hold is not None and case.reopen:
            hold, reason = None, case.reopen
        elif hold is not None and case.status == "active" and row["status"] != "active":
            # A stale file still saying "active" after a repayment closure, a pause or a
            # withdrawal: kept, and the refusal is on the record.
            status = row["status"]
            changes.append(("status", row["status"], row["status"],
                            f"file says active; held by {hold}: reopening needs an explicit reopen with a reason"))
        follow, next_date = row["follow_up_status"], _as_date(row["next_action_date"])
        if status == "paused":
            follow, next_date = "paused", None
        elif status in CLOSED_STATUSES:
            follow, next_date = "closed", None
        elif follow in ("paused", "closed"):
            follow, next_date = "waiting", now.date()
        elif follow == "new" and case.assigned_agent != row["assigned_agent"]:
            # Reassigned before its first call: the new agent's two days start now.
            next_date = now.date() + timedelta(days=FIRST_CALL_DAYS)
        end = case.commission_end
        extended = _as_date(row["commission_extended_to"])
        if extended is not None and (end is None or end < extended):
            # The creditor's extension, made through the API, outlasts a file that
            # predates it; a file with a later end supersedes it.
            if _as_date(row["commission_end"]) == extended:
                changes.append(("commission_end", extended.isoformat(), extended.isoformat(),
                                f"file says {end}; kept the extension to {extended}"))
            end = extended
        values = dict(
            debtor_name=case.debtor_name, status=status, commission_start=case.commission_start,
            commission_end=end, assigned_agent=case.assigned_agent,
            flags=_flags_text(bank_flags | agency), creditor_flags=_flags_text(bank_flags),
            agency_flags=_flags_text(agency), status_hold=hold, amount_due=case.amount_due,
            overdue_days=case.overdue_days, follow_up_status=follow, next_action_date=next_date,
        )
        old, new = _tracked(row), _tracked(values)
        changes.extend((f, old[f], new[f]) for f in TRACKED_FIELDS if old[f] != new[f])
        if follow == "new" and next_date != _as_date(row["next_action_date"]):
            values["first_call_alerted_at"] = None  # a new deadline: alert again if it is missed
        changes.extend(await self._apply_contacts(pk, case.contacts, now))
        if changes:
            values.update(await self._append_history(row, changes, src, now, reason))
        values["updated_at"] = now
        await self.conn.execute(U_CASE, {"_pk": pk, **values})
        rec = await self.get(case.creditor, case.case_id)
        assert rec is not None
        return rec, False

    async def _apply_contacts(
        self, pk: int, contacts: Sequence[ContactRecord], now: datetime
    ) -> list[tuple[str, Any, Any]]:
        """The creditor's list replaces the creditor-sourced numbers; numbers added by
        staff (info repair) and the do-not-call / invalid marks stay. Returns the changes."""
        current = {r["number"]: r for r in (await self.conn.execute(Q_CONTACTS_OF_CASE, {"pk": pk})).mappings()}
        incoming = {c.number for c in contacts}
        changes: list[tuple[str, Any, Any]] = []
        for c in contacts:
            old = current.get(c.number)
            if old is None:
                await self.conn.execute(I_CONTACT, dict(
                    case_pk=pk, number=c.number, relation=c.relation, name=c.name, tz=c.tz, status=c.status,
                    do_not_call=c.do_not_call, source=c.source, added_at=now,
                ))
                changes.append((_contact_field(c.number), None, _contact_state(c.relation, c.status, c.do_not_call,
                                                                               c.source)))
                continue
            status = "invalid" if old["status"] == "invalid" else c.status
            dnc = bool(old["do_not_call"]) or c.do_not_call
            before = _contact_state(old["relation"], old["status"], bool(old["do_not_call"]), old["source"])
            after = _contact_state(c.relation, status, dnc, old["source"])
            if before != after or old["name"] != c.name or old["tz"] != c.tz:
                await self.conn.execute(
                    update(t.contacts).where(t.contacts.c.id == old["id"])
                    .values(relation=c.relation, name=c.name, tz=c.tz, status=status, do_not_call=dnc)
                )
            if before != after:
                changes.append((_contact_field(c.number), before, after))
        for number, old in current.items():
            if number not in incoming and old["source"] == "creditor":
                await self.conn.execute(t.contacts.delete().where(t.contacts.c.id == old["id"]))
                changes.append((_contact_field(number),
                                _contact_state(old["relation"], old["status"], bool(old["do_not_call"]),
                                               old["source"]), None))
        return changes

    async def update(
        self, pk: int, now: datetime, *, source: ChangeSource | None = None, reason: str | None = None,
        add_flags: Iterable[str] = (), remove_flags: Iterable[str] = (), **changes: Any,
    ) -> None:
        """Change case columns (status, status_hold, commission_end, follow_up_status,
        next_action_date, …), each change a history entry. `add_flags` / `remove_flags`
        change the agency's flags; the bank's own flags change only with its file.
        `flags=` sets the effective flags: what is not the bank's becomes the agency's."""
        row = await self._locked_row(pk)
        if row is None:
            raise LookupError(f"case pk {pk} vanished")
        bank = _flags_set(row["creditor_flags"])
        agency = _flags_set(row["agency_flags"])
        if "flags" in changes:
            agency = frozenset(changes.pop("flags")) - bank
        agency = (agency | frozenset(add_flags)) - frozenset(remove_flags)
        changes["agency_flags"] = _flags_text(agency)
        changes["flags"] = _flags_text(bank | agency)
        old = _tracked(row)
        new = {**old, **_tracked({**dict(row), **changes})}
        diff = [(f, old[f], new[f]) for f in TRACKED_FIELDS if old[f] != new[f]]
        if diff:
            changes.update(await self._append_history(row, diff, source or SYSTEM_CHANGE, now, reason))
        changes["updated_at"] = now
        await self.conn.execute(update(t.cases).where(t.cases.c.id == pk).values(**changes))

    async def add_contact(self, pk: int, contact: ContactRecord, *, source: ChangeSource | None = None) -> bool:
        exists = (
            await self.conn.execute(
                select(t.contacts.c.id).where(t.contacts.c.case_pk == pk, t.contacts.c.number == contact.number)
            )
        ).first()
        if exists is not None:
            return False
        now = contact.added_at or datetime.now(timezone.utc)
        await self.conn.execute(
            insert(t.contacts).values(
                case_pk=pk,
                number=contact.number,
                relation=contact.relation,
                name=contact.name,
                tz=contact.tz,
                status=contact.status,
                do_not_call=contact.do_not_call,
                source=contact.source,
                added_at=now,
            )
        )
        row = await self._locked_row(pk)
        if row is not None:
            head = await self._append_history(
                row, [(_contact_field(contact.number), None,
                       _contact_state(contact.relation, contact.status, contact.do_not_call, contact.source))],
                source or SYSTEM_CHANGE, now,
            )
            await self.conn.execute(update(t.cases).where(t.cases.c.id == pk).values(**head))
        return True

    async def update_contact(
        self, pk: int, number: str, *, now: datetime | None = None, source: ChangeSource | None = None,
        **changes: Any,
    ) -> None:
        old = (
            await self.conn.execute(
                select(t.contacts).where(t.contacts.c.case_pk == pk, t.contacts.c.number == number)
            )
        ).mappings().first()
        await self.conn.execute(
            update(t.contacts).where(t.contacts.c.case_pk == pk, t.contacts.c.number == number).values(**changes)
        )
        if old is None:
            return
        merged = {**dict(old), **changes}
        before = _contact_state(old["relation"], old["status"], bool(old["do_not_call"]), old["source"])
        after = _contact_state(merged["relation"], merged["status"], bool(merged["do_not_call"]), merged["source"])
        if before == after:
            return
        row = await self._locked_row(pk)
        if row is not None:
            head = await self._append_history(row, [(_contact_field(number), before, after)],
                                              source or SYSTEM_CHANGE, now or datetime.now(timezone.utc))
            await self.conn.execute(update(t.cases).where(t.cases.c.id == pk).values(**head))

    async def worklist(
        self, creditors: frozenset[str] | None, agent: str | None, due: date, limit: int
    ) -> list[dict[str, Any]]:
        """Active cases due by `due` (next action date on or before it) or awaiting their
        first call, most overdue first; case columns only."""
        c = t.cases.c
        conds: list[Any] = [c.status == "active",
                            or_(c.next_action_date <= due, c.follow_up_status == "new")]
        if creditors is not None:
            if not creditors:
                return []
            conds.append(c.creditor.in_(sorted(creditors)))
        if agent is not None:
            conds.append(c.assigned_agent == agent)
        q = (select(c.id, c.creditor, c.case_id, c.assigned_agent, c.follow_up_status, c.next_action_date,
                    c.created_at, c.amount_due, c.overdue_days)
             .where(*conds).order_by(c.next_action_date, c.id).limit(limit))
        return [dict(r) for r in (await self.conn.execute(q)).mappings()]

    async def first_calls_overdue(self, before: date, limit: int, after: int = 0) -> list[dict[str, Any]]:
        """Active new cases whose first-call date is before `before`, not yet alerted, by
        primary key after `after`."""
        c = t.cases.c
        q = (select(c.id, c.creditor, c.case_id, c.assigned_agent, c.next_action_date)
             .where(c.status == "active", c.follow_up_status == "new", c.next_action_date < before,
                    c.first_call_alerted_at.is_(None), c.id > after)
             .order_by(c.id).limit(limit))
        return [dict(r) for r in (await self.conn.execute(q)).mappings()]

    async def mark_first_call_alerted(self, pk: int, now: datetime) -> None:
        await self.conn.execute(update(t.cases).where(t.cases.c.id == pk).values(first_call_alerted_at=now))

    async def history(self, pk: int, *, after: int = 0, limit: int = 500) -> list[HistoryEntry]:
        """The case's history entries after seq `after`, oldest first."""
        h = t.case_history.c
        rows = await self.conn.execute(
            select(h.record, h.hash).where(h.case_pk == pk, h.seq > after).order_by(h.seq).limit(limit)
        )
        return [history_from_record(r[0], r[1]) for r in rows]

    async def history_heads(self) -> list[tuple[int, str, str, int, str]]:
        """(pk, creditor, case_id, history_seq, history_hash) of every case."""
        c = t.cases.c
        rows = await self.conn.execute(
            select(c.id, c.creditor, c.case_id, c.history_seq, c.history_hash).order_by(c.id)
        )
        return [(int(r[0]), r[1], r[2], int(r[3]), r[4]) for r in rows]

    async def iterate_history(self, batch: int = 5000) -> AsyncIterator[dict[str, Any]]:
        """Every stored history row in (case_pk, seq, id) order, as raw dicts."""
        h = t.case_history.c
        last = (-1, -1, -1)
        while True:
            q = (
                select(t.case_history)
                .where(or_(h.case_pk > last[0], and_(h.case_pk == last[0], or_(
                    h.seq > last[1], and_(h.seq == last[1], h.id > last[2])))))
                .order_by(h.case_pk, h.seq, h.id)
                .limit(batch)
            )
            rows = (await self.conn.execute(q)).mappings().all()
            if not rows:
                return
            for r in rows:
                yield dict(r)
            last = (rows[-1]["case_pk"], rows[-1]["seq"], rows[-1]["id"])

    async def active_for_agent(self, agent_id: str, number: str) -> list[CaseRecord]:
        """The active cases assigned to `agent_id` that hold `number` (any creditor)."""
        holding = select(t.contacts.c.case_pk).where(t.contacts.c.number == number)
        return await self._load(
            and_(t.cases.c.id.in_(holding), t.cases.c.status == "active", t.cases.c.assigned_agent == agent_id)
        )

    async def by_number(self, number: str, creditors: frozenset[str] | None) -> list[CaseRecord]:
        sub = select(t.contacts.c.case_pk).where(t.contacts.c.number == number)
        where: Any = t.cases.c.id.in_(sub)
        if creditors is not None:
            if not creditors:
                return []
            where = and_(where, t.cases.c.creditor.in_(sorted(creditors)))
        return await self._load(where)

    async def next_event_seq(self, pk: int, count: int = 1) -> int:
        row = (await self.conn.execute(Q_NEXT_SEQ, {"pk": pk, "count": count})).first()
        if row is None:
            raise LookupError(f"case pk {pk} vanished")
        return int(row[0]) - count + 1

    async def appointments(self, pk: int, since: datetime) -> list[Appointment]:
        rows = await self.conn.execute(Q_APPOINTMENTS, {"case_pk": pk, "since": since})
        return [Appointment(number=r[0], at=r[1]) for r in rows]

    async def add_appointment(self, pk: int, number: str, at: datetime, attempt_id: str | None) -> None:
        await self.conn.execute(
            insert(t.appointments).values(
                case_pk=pk, number=number, at=at, attempt_id=attempt_id, created_at=datetime.now(timezone.utc)
            )
        )

    async def record_repayment(
        self, creditor: str, case_id: str, amount: str | None, paid_on: date | None, settled: bool, by: str, now: datetime
    ) -> None:
        await self.conn.execute(
            insert(t.repayments).values(
                creditor=creditor,
                case_id=case_id,
                amount=amount,
                paid_on=paid_on,
                settled=settled,
                imported_by=by,
                imported_at=now,
            )
        )


# ---------------------------------------------------------------------------------
# Attempts and outcomes
# ---------------------------------------------------------------------------------
