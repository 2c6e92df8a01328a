"""What a case file's row, or a repayment, does to a stored case: pure rules, no I/O.

Gather (the stored case and its contacts), decide here, apply (the repository writes
what this returns). Every import path, one row at a time or a batch of rows, goes
through `merge_case`, so a stop or a closure is kept by the same rules whichever path
applied the file:

* what the creditor supplies (status, dates, amounts, the bank's own flags and
  numbers) replaces what the last file said;
* what the agency learned stays: flags set by outcomes or people, do-not-call and
  invalid marks, numbers added after verification;
* a status held by a repayment closure, a pause or a withdrawal made through the API is
  lifted only by an explicit `reopen` with its reason; a stale file saying "active" is
  kept out, and the refusal is on the record;
* the creditor's extension of the commission outlasts a file with an earlier end.

A stored case is a mapping of the `cases` columns; a stored contact a mapping of the
`contacts` columns (with its `id`). Changes are `(field, old, new[, reason])`: the
history entries the repository chains, in this order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Iterable, Mapping, Sequence

from dialer.masking import mask_number, mask_text
from dialer.model import CaseInput, ContactRecord

CLOSED_STATUSES = frozenset({"settled", "withdrawn", "returned"})
FIRST_CALL_DAYS = 2  # 首催2天内
# What a history entry records of the case row. The debtor's name is left out: the
# history outlives the commission, and the bank's data is returned without copies
# (numbers are kept masked for the same reason).
TRACKED_FIELDS: tuple[str, ...] = (
    "status", "status_hold", "commission_start", "commission_end", "assigned_agent", "creditor_flags",
    "agency_flags", "amount_due", "overdue_days", "follow_up_status", "next_action_date",
)
# The columns a merge writes on an existing case (the same set every time, so a batch
# writes them with one statement).
CASE_COLUMNS: tuple[str, ...] = (
    "debtor_name", "status", "commission_start", "commission_end", "assigned_agent", "flags", "creditor_flags",
    "agency_flags", "status_hold", "amount_due", "overdue_days", "follow_up_status", "next_action_date",
    "first_call_alerted_at",
)
Change = tuple[Any, ...]  # (field, old, new) or (field, old, new, reason)


def as_date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def flags_text(flags: Iterable[str]) -> str:
    return ",".join(sorted(set(flags)))


_NO_FLAGS: frozenset[str] = frozenset()


def flags_set(value: str | None) -> frozenset[str]:
    if not value:  # most cases carry no flag
        return _NO_FLAGS
    return frozenset(f for f in value.split(",") if f)


_FLAG_FIELDS = frozenset(f for f in TRACKED_FIELDS if f.endswith("flags"))
_DATE_FIELDS = frozenset({"commission_start", "commission_end", "next_action_date"})


def tracked(values: Mapping[str, Any]) -> dict[str, Any]:
    """The history's view of a case row: TRACKED_FIELDS as JSON values (flags as sorted
    lists, dates as ISO text)."""
    out: dict[str, Any] = {}
    for f in TRACKED_FIELDS:
        v = values.get(f)
        if f in _FLAG_FIELDS:
            v = sorted(flags_set(v)) if isinstance(v, str) or v is None else sorted(v)
        elif isinstance(v, (date, datetime)):
            v = v.isoformat()
        elif v is not None and f in _DATE_FIELDS:
            v = as_date(v).isoformat()  # type: ignore[union-attr]
        out[f] = v
    return out


def history_reason(text: str | None) -> str | None:
    """A reason as the history keeps it: free text, so any phone, card or ID number in
    it is masked (the history is append-only and outlives the commission)."""
    return mask_text(text) if text else text


def contact_field(number: str) -> str:
    return "contact " + mask_number(number)


def contact_state(relation: str, status: str, do_not_call: bool, source: str) -> dict[str, Any]:
    # The source is free text: the history, kept forever, holds masked numbers only.
    return {"relation": relation, "status": status, "do_not_call": do_not_call, "source": mask_text(source)}


@dataclass(slots=True)
class CaseMerge:
    """What one row does to one case. `values`: the case columns to write (CASE_COLUMNS
    for an existing case; for a new one, those but `first_call_alerted_at`).
    `changes`: the history entries, in order (a new case: its one "case" entry).
    `reason`: the reason of entries that carry none of their own (the reopening's), or
    None for the change source's. `contacts`: the case's contacts afterwards, stored
    order (existing by id, then the new ones as the file lists them)."""

    created: bool
    values: dict[str, Any]
    changes: list[Change]
    reason: str | None = None
    insert_contacts: list[ContactRecord] = field(default_factory=list)
    update_contacts: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (contact id, columns)
    delete_contacts: list[int] = field(default_factory=list)  # contact ids
    contacts: list[ContactRecord] = field(default_factory=list)


def merge_case(
    stored: Mapping[str, Any] | None, stored_contacts: Sequence[Mapping[str, Any]], case: CaseInput, now: datetime,
) -> CaseMerge:
    """The effect of the file row `case` on the stored case (None: not stored yet)."""
    if stored is None:
        return _new_case(case, now)
    return _existing_case(stored, stored_contacts, case, now)


def _new_case(case: CaseInput, now: datetime) -> CaseMerge:
    bank_flags = frozenset(case.flags)
    if case.status == "paused":
        follow, next_date = "paused", None
    elif case.status in CLOSED_STATUSES:
        follow, next_date = "closed", None
    else:  # 首催2天内: the first call is due within two days of assignment
        follow, next_date = "new", now.date() + timedelta(days=FIRST_CALL_DAYS)
    values: dict[str, Any] = dict(
        debtor_name=case.debtor_name, status=case.status, commission_start=case.commission_start,
        commission_end=case.commission_end, assigned_agent=case.assigned_agent,
        flags=flags_text(bank_flags), creditor_flags=flags_text(bank_flags), agency_flags="",
        status_hold=None, amount_due=case.amount_due, overdue_days=case.overdue_days,
        follow_up_status=follow, next_action_date=next_date,
    )
    entry = tracked(values)
    entry["contacts"] = [
        {"number": mask_number(c.number), "relation": c.relation, "source": mask_text(c.source)} for c in case.contacts
    ]
    contacts = [ContactRecord(c.number, c.relation, c.name, c.tz, c.status, c.do_not_call, c.source, now)
                for c in case.contacts]
    return CaseMerge(True, values, [("case", None, entry)], None, list(case.contacts), contacts=contacts)


def _existing_case(
    row: Mapping[str, Any], stored_contacts: Sequence[Mapping[str, Any]], case: CaseInput, now: datetime,
) -> CaseMerge:
    bank_flags = frozenset(case.flags)
    agency = flags_set(row["agency_flags"])
    hold = row["status_hold"]
    status = case.status
    reason: str | None = None
    changes: list[Change] = []
    if hold is not None and case.reopen:
        hold, reason = None, case.reopen
    elif hold is not None and case.status == "active" and row["status"] != "active":
        # A stale file still saying "active" after a repayment closure, a pause or a
        # withdrawal: kept, and the refusal is on the record.
        status = row["status"]
        changes.append(("status", row["status"], row["status"],
                        f"file says active; held by {hold}: reopening needs an explicit reopen with a reason"))
    follow, next_date = row["follow_up_status"], as_date(row["next_action_date"])
    if status == "paused":
        follow, next_date = "paused", None
    elif status in CLOSED_STATUSES:
        follow, next_date = "closed", None
    elif follow in ("paused", "closed"):
        follow, next_date = "waiting", now.date()
    elif follow == "new" and case.assigned_agent != row["assigned_agent"]:
        # Reassigned before its first call: the new agent's two days start now.
        next_date = now.date() + timedelta(days=FIRST_CALL_DAYS)
    # A blank date in the file is a value the bank did not send, not an open-ended
    # commission: taken as one, it would reopen an ended period (or one not yet begun).
    start, end = case.commission_start, case.commission_end
    stored_start, stored_end = as_date(row["commission_start"]), as_date(row["commission_end"])
    if start is None and stored_start is not None:
        start = stored_start
        changes.append(("commission_start", start.isoformat(), start.isoformat(),
                        "file gives no commission start; kept the stored one"))
    if end is None and stored_end is not None:
        end = stored_end
        changes.append(("commission_end", end.isoformat(), end.isoformat(),
                        "file gives no commission end; kept the stored one"))
    extended = as_date(row.get("commission_extended_to"))
    if extended is not None and (end is None or end < extended):
        # The creditor's extension, made through the API, outlasts a file that
        # predates it; a file with a later end supersedes it.
        if as_date(row["commission_end"]) == extended:
            changes.append(("commission_end", extended.isoformat(), extended.isoformat(),
                            f"file says {end}; kept the extension to {extended}"))
        end = extended
    values: dict[str, Any] = dict(
        debtor_name=case.debtor_name, status=status, commission_start=start,
        commission_end=end, assigned_agent=case.assigned_agent,
        flags=flags_text(bank_flags | agency), creditor_flags=flags_text(bank_flags),
        agency_flags=flags_text(agency), status_hold=hold, amount_due=case.amount_due,
        overdue_days=case.overdue_days, follow_up_status=follow, next_action_date=next_date,
        first_call_alerted_at=row.get("first_call_alerted_at"),
    )
    old, new = tracked(row), tracked(values)
    changes.extend((f, old[f], new[f]) for f in TRACKED_FIELDS if old[f] != new[f])
    if follow == "new" and next_date != as_date(row["next_action_date"]):
        values["first_call_alerted_at"] = None  # a new deadline: alert again if it is missed
    merge = CaseMerge(False, values, changes, reason)
    _merge_contacts(merge, stored_contacts, case.contacts, now)
    return merge


def _merge_contacts(
    merge: CaseMerge, stored: Sequence[Mapping[str, Any]], contacts: Sequence[ContactRecord], now: datetime,
) -> None:
    """The creditor's list replaces the creditor-sourced numbers; numbers added by staff
    (info repair) and the do-not-call / invalid marks stay, a marked number with its mark
    even when the list drops it."""
    current = {r["number"]: r for r in sorted(stored, key=lambda r: r["id"])}
    incoming = {c.number for c in contacts}
    after: dict[str, ContactRecord] = {
        n: ContactRecord(n, r["relation"], r["name"], r["tz"], r["status"], bool(r["do_not_call"]), r["source"],
                         r["added_at"])
        for n, r in current.items()
    }
    for c in contacts:
        old = current.get(c.number)
        if old is None:
            merge.insert_contacts.append(c)
            after[c.number] = ContactRecord(c.number, c.relation, c.name, c.tz, c.status, c.do_not_call, c.source,
                                            now)
            merge.changes.append((contact_field(c.number), None,
                                  contact_state(c.relation, c.status, c.do_not_call, c.source)))
            continue
        status = "invalid" if old["status"] == "invalid" else c.status
        dnc = bool(old["do_not_call"]) or c.do_not_call
        before = contact_state(old["relation"], old["status"], bool(old["do_not_call"]), old["source"])
        now_state = contact_state(c.relation, status, dnc, old["source"])
        if before != now_state or old["name"] != c.name or old["tz"] != c.tz:
            merge.update_contacts.append(
                (old["id"], dict(relation=c.relation, name=c.name, tz=c.tz, status=status, do_not_call=dnc)))
            after[c.number] = ContactRecord(c.number, c.relation, c.name, c.tz, status, dnc, old["source"],
                                            old["added_at"])
        if before != now_state:
            merge.changes.append((contact_field(c.number), before, now_state))
    for number, old in current.items():
        # A marked number stays even when the bank's list drops it: removed, its mark would
        # be gone when a later list names the number again, and a refusal or a wrong number
        # would be dialled anew. Kept, it blocks as it did.
        marked = bool(old["do_not_call"]) or old["status"] == "invalid"
        if number not in incoming and old["source"] == "creditor" and not marked:
            merge.delete_contacts.append(old["id"])
            del after[number]
            merge.changes.append((contact_field(number),
                                  contact_state(old["relation"], old["status"], bool(old["do_not_call"]),
                                                old["source"]), None))
    merge.contacts = list(after.values())


# Repayments -----------------------------------------------------------------------
REPAYMENT_CLOSURE: dict[str, Any] = dict(
    status="settled", status_hold="repayment", follow_up_status="closed", next_action_date=None,
)
REPAYMENT_REASON = "settled by repayment"


def repayment_closes(settled: bool, status: str, status_hold: str | None) -> bool:
    """Whether a repayment row writes the closure (REPAYMENT_CLOSURE) on its case. Also
    when the bank's file already said settled: the repayment is what holds the closure
    against a later case file that says active again (a paid debtor is not called
    because the bank's next file is stale)."""
    return settled and (status != "settled" or status_hold != "repayment")
