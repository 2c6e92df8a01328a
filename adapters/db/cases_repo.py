"""Cases, contacts and the per-case history chain."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, AsyncIterator, Iterable, Sequence

import structlog
from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db import tables as t
from dialer.evidence import EvidenceKey
from dialer.model import (
    UNKNOWN_IMPORT,
    CaseInput,
    CaseRecord,
    ChangeSource,
    ContactRecord,
    HistoryEntry,
    history_body,
)
from policy.model import Appointment
from adapters.db.queries import (
    I_CONTACT, I_HISTORY, Q_APPOINTMENTS, Q_CASE_BY_KEY, Q_CASE_BY_KEY_LOCKED, Q_CASE_BY_PK_LOCKED,
    Q_CASES_BY_ID, Q_CASES_BY_ID_SCOPED, Q_CONTACTS_OF, Q_CREDITOR, Q_NEXT_SEQ,
)
from dialer.case_merge import (
    CaseMerge, TRACKED_FIELDS, contact_field, contact_state, flags_set, flags_text, history_reason, merge_case, tracked,
)
from dialer.chain import GENESIS_HASH, NO_KEY, history_from_record, link_history_body

log = structlog.get_logger("dialgate.store")

# The batch upsert's statements (built once, like adapters.db.queries).
Q_CASES_BY_IDS_LOCKED = (
    select(t.cases).where(t.cases.c.case_id.in_(bindparam("case_ids", expanding=True)))
    .order_by(t.cases.c.id).with_for_update()
)
I_CASE_RETURNING = insert(t.cases).returning(t.cases.c.id, sort_by_parameter_order=True)
U_CASE_ALL = update(t.cases).where(t.cases.c.id == bindparam("_pk"))
U_CONTACT = update(t.contacts).where(t.contacts.c.id == bindparam("_id"))
D_CONTACT = t.contacts.delete().where(t.contacts.c.id == bindparam("_id"))

SYSTEM_CHANGE = ChangeSource(kind="system", actor="system", role="system")


Snapshot = dict[tuple[str, str], tuple[dict[str, Any] | None, list[dict[str, Any]]]]


@dataclass(slots=True)
class UpsertPlan:
    """`SqlCaseRepository.plan_upsert`'s answer: the rows, what each row's case and
    contacts were when it was decided (`stored`, plain mappings by (creditor, case id),
    compared again when written), and what each row does (the merges, the history rows
    chained after each head; `spans`: each row's slice of `history`)."""

    rows: Sequence[tuple[int | None, CaseInput]]
    now: datetime
    source: ChangeSource
    stored: Snapshot | None
    currents: list[Any]
    merges: list[CaseMerge]
    history: list[dict[str, Any]]
    heads: list[dict[str, Any]]
    spans: list[tuple[int, int]]

    def take(self, rows: Sequence[tuple[int | None, CaseInput]]) -> "UpsertPlan | None":
        """The plan of `rows` when they are a run of this plan's rows (the same objects,
        in order), else None."""
        if not rows or self.stored is None:
            return None
        start = next((i for i, r in enumerate(self.rows) if r is rows[0]), None)
        if start is None:
            return None
        end = start + len(rows)
        if end > len(self.rows) or any(a is not b for a, b in zip(self.rows[start:end], rows)):
            return None
        if start == 0 and end == len(self.rows):
            return self
        h0, h1 = self.spans[start][0], self.spans[end - 1][1]
        return UpsertPlan(
            rows, self.now, self.source, {_key(c): self.stored[_key(c)] for _, c in rows},
            self.currents[start:end], self.merges[start:end], self.history[h0:h1], self.heads[start:end],
            [(a - h0, b - h0) for a, b in self.spans[start:end]],
        )


def _key(case: CaseInput) -> tuple[str, str]:
    return (case.creditor, case.case_id)


def _snapshot(
    rows: Sequence[tuple[int | None, CaseInput]], stored: dict[tuple[str, str], Any], contacts: dict[int, list[Any]],
) -> Snapshot:
    """Each row's stored case and contacts as plain dicts, comparable whichever driver
    read them."""
    out: Snapshot = {}
    for _, case in rows:
        cur = stored.get(_key(case))
        out[_key(case)] = (None, []) if cur is None else (dict(cur), [dict(c) for c in contacts.get(cur["id"], ())])
    return out


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
            flags=flags_set(r["flags"]),
            amount_due=r["amount_due"],
            overdue_days=r["overdue_days"],
            follow_up_status=r["follow_up_status"],
            next_action_date=r["next_action_date"],
            event_seq=r["event_seq"],
            contacts=tuple(by_case.get(r["id"], ())),
            updated_at=r["updated_at"],
            creditor_flags=flags_set(r["creditor_flags"]),
            agency_flags=flags_set(r["agency_flags"]),
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

    def _history_rows(
        self, head: Any, changes: Sequence[tuple[Any, ...]], source: ChangeSource, now: datetime,
        reason: str | None = None, rows: list[dict[str, Any]] | None = None,
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The `case_history` rows of one entry per (field, old, new[, reason]) after the
        head of `head` (a case row: id, creditor, case_id, history_seq, history_hash),
        appended to `rows`; and the head columns to write back with the change."""
        seq, prev = int(head["history_seq"]), head["history_hash"]
        rows = [] if rows is None else rows
        default_reason = reason if reason is not None else source.reason
        creditor, case_id, at = head["creditor"], head["case_id"], now.isoformat()
        for change in changes:
            field_, old, new = change[:3]
            why = change[3] if len(change) > 3 else default_reason
            seq += 1
            # The link's body built directly (`HistoryEntry.body`'s shape): an import
            # writes an entry per new case, and an entry object per change cost more
            # than the link's hash.
            record, hash_ = link_history_body(history_body(
                creditor, case_id, seq, at, source.actor, source.role, source.kind, source.ref, source.row,
                field_, old, new, history_reason(why), prev,
            ), self.evidence)
            rows.append(dict(
                case_pk=head["id"], creditor=creditor, case_id=case_id, seq=seq, at=now,
                actor=source.actor, role=source.role, source=source.kind, source_ref=source.ref,
                source_row=source.row, field=field_, record=record, prev_hash=prev, hash=hash_,
            ))
            prev = hash_
        return rows, {"history_seq": seq, "history_hash": prev}

    async def _append_history(
        self, row: Any, changes: Sequence[tuple[Any, ...]], source: ChangeSource, now: datetime,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Append one entry per (field, old, new[, reason]) after the case's history head;
        returns the head columns to write back with the change (same transaction)."""
        rows, head = self._history_rows(row, changes, source, now, reason)
        if rows:
            await self.conn.execute(I_HISTORY, rows)
        return head

    async def upsert(
        self, case: CaseInput, now: datetime, *, source: ChangeSource | None = None
    ) -> tuple[CaseRecord, bool]:
        """Apply one case file's row: `upsert_many` of one (its rules: `dialer.case_merge`).
        Every change is a history entry naming `source` (default: an import, row unknown)."""
        src = source or UNKNOWN_IMPORT
        ((rec, created),) = await self.upsert_many([(src.row, case)], now, src)
        return rec, created

    async def plan_upsert(
        self, rows: Sequence[tuple[int | None, CaseInput]], now: datetime, source: ChangeSource,
    ) -> "UpsertPlan | None":
        """What `upsert_many(rows, now, source)` would write, decided from the stored
        cases as this unit reads them: the merges and the chained history entries,
        computed in a read unit so a write unit holds the store's write lock only to
        write them. None when the rows name a case twice (the second row merges with
        what the first wrote)."""
        rows = list(rows)  # the plan's own list: a caller's read-ahead shrinks as batches are written
        if len({(case.creditor, case.case_id) for _, case in rows}) != len(rows):
            return None
        stored, contacts = await self._stored_for(rows)
        plan = self._plan(rows, now, source, stored, contacts)
        plan.stored = _snapshot(rows, stored, contacts)
        return plan

    async def upsert_many(
        self, rows: Sequence[tuple[int | None, CaseInput]], now: datetime, source: ChangeSource,
        plan: "UpsertPlan | None" = None,
    ) -> list[tuple[CaseRecord, bool]]:
        """Apply case file rows `(row number, case)` in order, each by the rules of
        `dialer.case_merge.merge_case`, as a few set statements: the batch's stored
        cases and contacts read in two queries, then every insert, update and history
        entry written with one executemany per table. A row's history entries name
        `source` at its row number. Returns each row's case as written, and whether it
        was created.

        `plan` (`plan_upsert` of these rows, or of rows they are a run of, with the same
        now and source, in an earlier unit) is written as it is when the stored cases
        and contacts read here are still the ones it was decided from; otherwise the
        rows are decided again here."""
        part = plan.take(rows) if plan is not None and plan.now == now and plan.source == source else None
        if part is not None:
            return await self._upsert_chunk(rows, now, source, part)
        out: list[tuple[CaseRecord, bool]] = []
        chunk: list[tuple[int | None, CaseInput]] = []
        keys: set[tuple[str, str]] = set()
        for row, case in rows:
            key = (case.creditor, case.case_id)
            if key in keys:  # the same case twice: the second merges with what the first wrote
                out.extend(await self._upsert_chunk(chunk, now, source))
                chunk, keys = [], set()
            chunk.append((row, case))
            keys.add(key)
        if chunk:
            out.extend(await self._upsert_chunk(chunk, now, source))
        return out

    def _plan(
        self, rows: Sequence[tuple[int | None, CaseInput]], now: datetime, source: ChangeSource,
        stored: dict[tuple[str, str], Any], contacts: dict[int, list[Any]],
    ) -> "UpsertPlan":
        """The merges of `rows` (no case twice) over `stored` / `contacts`, and their
        history entries chained after each case's head."""
        currents = [stored.get((case.creditor, case.case_id)) for _, case in rows]
        merges = [merge_case(cur, contacts.get(cur["id"], ()) if cur is not None else (), case, now)
                  for (_, case), cur in zip(rows, currents)]
        # Chained before anything is written: a link covers the entry, not the case's
        # primary key, which a new case has only once inserted.
        history: list[dict[str, Any]] = []
        heads: list[dict[str, Any]] = []
        spans: list[tuple[int, int]] = []
        for (row, case), m, cur in zip(rows, merges, currents):
            src = source.at_row(row) if row is not None else source
            start = len(history)
            if cur is None:
                cur = {"id": None, "creditor": case.creditor, "case_id": case.case_id, "history_seq": 0,
                       "history_hash": GENESIS_HASH}
            if m.changes:
                _, head = self._history_rows(cur, m.changes, src, now, m.reason, history)
            else:
                head = {"history_seq": cur["history_seq"], "history_hash": cur["history_hash"]}
            heads.append(head)
            spans.append((start, len(history)))
        return UpsertPlan(rows, now, source, None, currents, merges, history, heads, spans)

    async def _upsert_chunk(
        self, rows: Sequence[tuple[int | None, CaseInput]], now: datetime, source: ChangeSource,
        plan: "UpsertPlan | None" = None,
    ) -> list[tuple[CaseRecord, bool]]:
        for creditor in sorted({case.creditor for _, case in rows}):
            await self.ensure_creditor(creditor)
        stored, contacts = await self._stored_for(rows)
        if plan is None or plan.stored is None or plan.stored != _snapshot(rows, stored, contacts):
            # Something changed these cases since the plan was read (a call's outcome, a
            # person, another import): decide again from what is stored now.
            plan = self._plan(rows, now, source, stored, contacts)
        currents, merges, history, heads, spans = plan.currents, plan.merges, plan.history, plan.heads, plan.spans
        pks = [cur["id"] if cur is not None else 0 for cur in currents]
        new = [i for i, m in enumerate(merges) if m.created]
        if new:
            inserts = [dict(creditor=rows[i][1].creditor, case_id=rows[i][1].case_id, event_seq=0, created_at=now,
                            updated_at=now, **merges[i].values, first_call_alerted_at=None, **heads[i])
                       for i in new]
            new_pks = await self._insert_cases(inserts)
            for i, pk in zip(new, new_pks):
                pks[i] = pk
                for h in history[spans[i][0]:spans[i][1]]:
                    h["case_pk"] = pk
        updates: list[dict[str, Any]] = []
        contact_inserts: list[dict[str, Any]] = []
        contact_updates: list[dict[str, Any]] = []
        contact_deletes: list[dict[str, Any]] = []
        for i, m in enumerate(merges):
            pk = pks[i]
            if not m.created:
                updates.append({"_pk": pk, **m.values, **heads[i], "updated_at": now})
                contact_updates.extend({"_id": cid, **cols} for cid, cols in m.update_contacts)
                contact_deletes.extend({"_id": cid} for cid in m.delete_contacts)
            contact_inserts.extend(dict(
                case_pk=pk, number=c.number, relation=c.relation, name=c.name, tz=c.tz, status=c.status,
                do_not_call=c.do_not_call, source=c.source, added_at=now,
            ) for c in m.insert_contacts)
        await self._write_batch(updates, contact_deletes, contact_updates, contact_inserts, history)
        out = []
        for i, ((_, case), m) in enumerate(zip(rows, merges)):
            cur, v = currents[i], m.values
            out.append((CaseRecord(
                pk=pks[i], creditor=case.creditor, case_id=case.case_id, debtor_name=v["debtor_name"],
                status=v["status"], commission_start=v["commission_start"], commission_end=v["commission_end"],
                assigned_agent=v["assigned_agent"], flags=flags_set(v["flags"]), amount_due=v["amount_due"],
                overdue_days=v["overdue_days"], follow_up_status=v["follow_up_status"],
                next_action_date=v["next_action_date"], event_seq=int(cur["event_seq"]) if cur is not None else 0,
                contacts=tuple(m.contacts), updated_at=now, creditor_flags=flags_set(v["creditor_flags"]),
                agency_flags=flags_set(v["agency_flags"]), status_hold=v["status_hold"],
                history_seq=int(heads[i]["history_seq"]),
            ), m.created))
        return out

    async def _stored_for(
        self, rows: Sequence[tuple[int | None, CaseInput]]
    ) -> tuple[dict[tuple[str, str], Any], dict[int, list[Any]]]:
        """The stored cases of a batch by (creditor, case id), locked on PostgreSQL (their
        history heads are read here and written back), and their contacts by case pk."""
        ids = sorted({case.case_id for _, case in rows})
        wanted = {(case.creditor, case.case_id) for _, case in rows}
        found = (await self.conn.execute(Q_CASES_BY_IDS_LOCKED, {"case_ids": ids})).mappings().all()
        stored = {(r["creditor"], r["case_id"]): r for r in found if (r["creditor"], r["case_id"]) in wanted}
        contacts: dict[int, list[Any]] = {}
        if stored:
            pks = sorted(r["id"] for r in stored.values())
            for c in (await self.conn.execute(Q_CONTACTS_OF, {"pks": pks})).mappings():
                contacts.setdefault(c["case_pk"], []).append(c)
        return stored, contacts

    async def _insert_cases(self, inserts: list[dict[str, Any]]) -> list[int]:
        """Insert new case rows; their primary keys, in order."""
        res = await self.conn.execute(I_CASE_RETURNING, inserts)
        return [int(r[0]) for r in res]

    async def _write_batch(
        self, updates: list[dict[str, Any]], contact_deletes: list[dict[str, Any]],
        contact_updates: list[dict[str, Any]], contact_inserts: list[dict[str, Any]], history: list[dict[str, Any]],
    ) -> None:
        """Write a batch's changes, one executemany per table."""
        for statement, params in ((U_CASE_ALL, updates), (D_CONTACT, contact_deletes),
                                  (U_CONTACT, contact_updates), (I_CONTACT, contact_inserts),
                                  (I_HISTORY, history)):
            if params:
                await self.conn.execute(statement, params)

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
        bank = flags_set(row["creditor_flags"])
        agency = flags_set(row["agency_flags"])
        if "flags" in changes:
            agency = frozenset(changes.pop("flags")) - bank
        agency = (agency | frozenset(add_flags)) - frozenset(remove_flags)
        changes["agency_flags"] = flags_text(agency)
        changes["flags"] = flags_text(bank | agency)
        old = tracked(row)
        new = {**old, **tracked({**dict(row), **changes})}
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
                row, [(contact_field(contact.number), None,
                       contact_state(contact.relation, contact.status, contact.do_not_call, contact.source))],
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
        before = contact_state(old["relation"], old["status"], bool(old["do_not_call"]), old["source"])
        after = contact_state(merged["relation"], merged["status"], bool(merged["do_not_call"]), merged["source"])
        if before == after:
            return
        row = await self._locked_row(pk)
        if row is not None:
            head = await self._append_history(row, [(contact_field(number), before, after)],
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

    async def spellings(self, creditor: str, keys: Sequence[str]) -> list[str]:
        # Case ids are ASCII: upper() folds them alike on SQLite and PostgreSQL.
        found = await self.conn.execute(select(t.cases.c.case_id).where(
            t.cases.c.creditor == creditor, func.upper(t.cases.c.case_id).in_(list(keys))))
        return [row[0] for row in found]

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
