"""Replay recorded traffic under another policy: `dialgate simulate --from-log`.

Gather, decide purely, report. A `ReplaySource` (adapters/db/replay_source.py) reads
the logged dial decisions of a period with what the store still knows about them;
`replay` decides each one again, in time order, with the policy being tried; `compare`
lists the decisions that change. No I/O here.

What is rebuilt, and from where:

* **The dialed number**: the attempt row for a dial that went out (the log keeps
  numbers masked); for a blocked dial, the case contact whose masked form matches.
  A blocked number that matches no contact (an unknown number) cannot be recovered:
  the logged answer is kept (``contact.not_authorized``).
* **The case as it was**: the logged checks say whether the case was closed or paused,
  which flags were set, whether the collector was assigned, whether the number was
  invalid or do-not-call, and whether the line was registered. These hard facts are
  replayed as logged; commission dates, contact relations and zones come from the
  case as stored now, and only contacts added before the dial count.
* **The history**: the attempts the *tried* policy lets through, as they go; a call
  that really connected counts as connected. A dial blocked in the log but allowed
  now never happened, so whether it would have connected is unknown: it counts as
  unanswered.
* **Agreed callback times**: the appointments created before the dial.
* Refusals logged before the policy ran (``case.not_found``, ``agent.unknown`` ...),
  checks (``kind = check``) and re-checks are not dials: refusals are kept as logged,
  the others are skipped. A SIP dial that consumed a click-to-dial authorisation
  repeats that dial's answer and adds no attempt.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from dialer.masking import mask_number
from policy import (
    AgentSnapshot,
    Appointment,
    CaseSnapshot,
    ContactSnapshot,
    DialRequest,
    HistoryEvent,
    PolicyBook,
    evaluate,
)
from policy.model import CASE_FLAGS

__all__ = [
    "LoggedDial",
    "StoredCase",
    "ReplayData",
    "ReplaySource",
    "Replayed",
    "replay",
    "summarise",
    "UNRECOVERABLE",
]

# Rule ids the policy engine decides; anything else in the log was refused before it ran.
_POLICY_PREFIXES = ("system.", "agent.not_assigned", "case.", "contact.", "line.", "window.", "cap.", "allow",
                    "appointment.")
_PRE_POLICY = ("case.not_found", "case.ambiguous")
UNRECOVERABLE = "the dialed number matches no contact of the case (the log keeps numbers masked)"


@dataclass(frozen=True, slots=True)
class StoredContact:
    number: str
    relation: str
    tz: str | None
    added_at: datetime | None


@dataclass(frozen=True, slots=True)
class StoredCase:
    creditor: str
    case_id: str
    status: str
    commission_start: date | None
    commission_end: date | None
    assigned_agent: str | None
    contacts: tuple[StoredContact, ...]
    appointments: tuple[tuple[str, datetime, datetime], ...] = ()  # (number, at, created_at)


@dataclass(frozen=True, slots=True)
class LoggedDial:
    """One `dial` record of the decision log with what the store knows about it."""

    decision_id: str
    at: datetime
    creditor: str
    case_id: str
    agent_id: str
    number_masked: str
    allowed: bool
    rule_id: str
    failed: frozenset[str]  # rule ids of the logged checks that failed
    attempt_id: str | None = None
    number: str | None = None  # from the attempt row, when the dial went out
    relation: str | None = None
    connected: bool = False


@dataclass
class ReplayData:
    dials: list[LoggedDial]
    cases: dict[tuple[str, str], StoredCase]
    notes: list[str] = field(default_factory=list)


class ReplaySource(Protocol):
    async def load(self, since: datetime, until: datetime, creditors: frozenset[str] | None) -> ReplayData:
        """Logged dial decisions with ``since <= at < until``, in time order."""
        ...


@dataclass(frozen=True, slots=True)
class Replayed:
    dial: LoggedDial
    allowed: bool
    rule_id: str
    next_allowed_at: datetime | None
    note: str | None = None  # why the logged answer was kept

    @property
    def changed(self) -> bool:
        return self.allowed != self.dial.allowed or self.rule_id != self.dial.rule_id

    def to_dict(self) -> dict[str, Any]:
        d = self.dial
        return {
            "decision_id": d.decision_id,
            "at": d.at.isoformat(),
            "creditor": d.creditor,
            "case_id": d.case_id,
            "agent_id": d.agent_id,
            "number": d.number_masked,
            "logged_allowed": d.allowed,
            "logged_rule_id": d.rule_id,
            "allowed": self.allowed,
            "rule_id": self.rule_id,
            "change": _change(d.allowed, self.allowed),
            "next_allowed_at": self.next_allowed_at.isoformat() if self.next_allowed_at else None,
            "note": self.note,
        }


def _change(before: bool, after: bool) -> str:
    if before == after:
        return "allowed (rule changed)" if after else "blocked (rule changed)"
    return "allowed → blocked" if before else "blocked → allowed"


class _History:
    """Replayed attempts indexed by number and by case, appended in time order."""

    def __init__(self) -> None:
        self.by_number: dict[str, list[tuple[datetime, int, HistoryEvent]]] = {}
        self.by_case: dict[tuple[str, str], list[tuple[datetime, int, HistoryEvent]]] = {}
        self.serial = 0

    def add(self, creditor: str, event: HistoryEvent) -> None:
        self.serial += 1
        row = (event.at, self.serial, event)
        self.by_number.setdefault(event.number, []).append(row)
        self.by_case.setdefault((creditor, event.case_id), []).append(row)

    def relevant(self, creditor: str, case_id: str, number: str, since: datetime) -> list[HistoryEvent]:
        out: list[HistoryEvent] = []
        seen: set[int] = set()
        for rows in (self.by_number.get(number), self.by_case.get((creditor, case_id))):
            if not rows:
                continue
            for _, serial, event in rows[bisect.bisect_left(rows, (since, -1)):]:
                if serial not in seen:
                    seen.add(serial)
                    out.append(event)
        return out


def _contact(case: StoredCase, dial: LoggedDial) -> StoredContact | None:
    if dial.number is not None:
        return next((c for c in case.contacts if c.number == dial.number), None)
    matches = [c for c in case.contacts if mask_number(c.number) == dial.number_masked]
    numbers = {c.number for c in matches}
    return matches[0] if len(numbers) == 1 else None


def _request(case: StoredCase, dial: LoggedDial, contact: StoredContact, number: str) -> DialRequest:
    failed = dial.failed
    if "case.closed" in failed:
        status = case.status if case.status in ("settled", "withdrawn", "returned") else "settled"
    elif "case.paused" in failed:
        status = "paused"
    else:
        status = "active"
    contacts = []
    for c in case.contacts:
        if c.added_at is not None and c.added_at > dial.at:
            continue  # not yet a contact of the case then (the number is still known from it)
        mine = c.number == number
        contacts.append(ContactSnapshot(
            c.number, c.relation,
            status="invalid" if mine and "contact.invalid_number" in failed else "valid",
            do_not_call=mine and "contact.do_not_call" in failed,
            tz=c.tz,
        ))
    snapshot = CaseSnapshot(
        case_id=case.case_id,
        creditor=case.creditor,
        status=status,
        commission_start=case.commission_start,
        commission_end=case.commission_end,
        flags=frozenset(f for f in CASE_FLAGS if f"case.{f}" in failed),
        assigned_agent=None if "agent.not_assigned" in failed else dial.agent_id,
        contacts=tuple(contacts),
    )
    line_ok = "line.not_registered" not in failed
    faults = frozenset(r.split(".", 1)[1] for r in failed if r.startswith("system."))
    appointments = tuple(
        Appointment(n, at) for n, at, created in case.appointments if n == number and created <= dial.at
    )
    return DialRequest(
        case=snapshot,
        number=number,
        agent=AgentSnapshot(dial.agent_id, "collector", frozenset({case.creditor})),
        # The line is a hard fact of the logged call: replayed as it was decided.
        channel="sip",
        faults=faults,
        appointments=appointments,
        caller_line="logged-line",
        registered_lines=frozenset({"logged-line"}) if line_ok else frozenset(),
    )


def replay(
    data: ReplayData,
    book: PolicyBook,
    progress: Callable[[int], None] | None = None,
) -> list[Replayed]:
    """Decide every logged dial again under `book`, in time order."""
    history = _History()
    by_attempt: dict[str, Replayed] = {}
    out: list[Replayed] = []
    for i, dial in enumerate(data.dials):
        if progress is not None and i % 1000 == 0:
            progress(i)
        out.append(_one(dial, data, book, history, by_attempt))
    if progress is not None:
        progress(len(data.dials))
    return out


def _one(
    dial: LoggedDial, data: ReplayData, book: PolicyBook, history: _History, by_attempt: dict[str, Replayed]
) -> Replayed:
    if dial.attempt_id is not None and dial.attempt_id in by_attempt:
        first = by_attempt[dial.attempt_id]
        return Replayed(dial, first.allowed, first.rule_id, first.next_allowed_at,
                        note="consumed the authorisation of an earlier dial: its answer repeated")
    if not dial.rule_id.startswith(_POLICY_PREFIXES) or dial.rule_id in _PRE_POLICY:
        return Replayed(dial, dial.allowed, dial.rule_id, None, note="refused before the policy ran: kept as logged")
    case = data.cases.get((dial.creditor, dial.case_id))
    contact = _contact(case, dial) if case is not None else None
    if case is None or contact is None:
        why = "the case is no longer in the store" if case is None else UNRECOVERABLE
        return Replayed(dial, dial.allowed, dial.rule_id, None, note=f"kept as logged: {why}")
    number = dial.number or contact.number
    pol = book.for_creditor(dial.creditor)
    request = _request(case, dial, contact, number)
    events = history.relevant(dial.creditor, dial.case_id, number, dial.at - pol.lookback)
    decision = evaluate(request, events, pol, dial.at)
    result = Replayed(dial, decision.allowed, decision.rule_id, decision.next_allowed_at)
    if decision.allowed:
        relation = dial.relation or contact.relation
        history.add(dial.creditor, HistoryEvent(dial.at, dial.case_id, number, relation, "attempt"))
        if dial.connected:
            history.add(dial.creditor, HistoryEvent(dial.at, dial.case_id, number, relation, "connected"))
    if dial.attempt_id is not None:
        by_attempt[dial.attempt_id] = result
    return result


@dataclass
class Summary:
    total: int
    changed: int
    allowed_to_blocked: int
    blocked_to_allowed: int
    rule_changed: int
    kept_as_logged: int
    by_rule: dict[tuple[str, str], int]
    by_creditor: dict[str, dict[str, int]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "changed": self.changed,
            "allowed_to_blocked": self.allowed_to_blocked,
            "blocked_to_allowed": self.blocked_to_allowed,
            "rule_changed": self.rule_changed,
            "kept_as_logged": self.kept_as_logged,
            "by_rule": [{"logged_rule_id": a, "rule_id": b, "count": n} for (a, b), n in sorted(self.by_rule.items())],
            "by_creditor": self.by_creditor,
        }


def summarise(results: Sequence[Replayed]) -> Summary:
    by_rule: dict[tuple[str, str], int] = {}
    by_creditor: dict[str, dict[str, int]] = {}
    a2b = b2a = rule = kept = 0
    for r in results:
        if r.note is not None and r.note.startswith(("kept", "refused")):
            kept += 1
        if not r.changed:
            continue
        d = r.dial
        key = (d.rule_id, r.rule_id)
        by_rule[key] = by_rule.get(key, 0) + 1
        per = by_creditor.setdefault(d.creditor, {"allowed_to_blocked": 0, "blocked_to_allowed": 0, "rule_changed": 0})
        if d.allowed and not r.allowed:
            a2b += 1
            per["allowed_to_blocked"] += 1
        elif not d.allowed and r.allowed:
            b2a += 1
            per["blocked_to_allowed"] += 1
        else:
            rule += 1
            per["rule_changed"] += 1
    return Summary(len(results), a2b + b2a + rule, a2b, b2a, rule, kept, by_rule, by_creditor)


def scenario_lines(data: ReplayData, results: Iterable[Replayed] | None = None) -> Iterable[dict[str, Any]]:
    """The rebuilt traffic in the `dialgate simulate --scenario` format (dialer/SIMULATE.md)."""
    cases = []
    for case in data.cases.values():
        cases.append({
            "case_id": case.case_id, "creditor": case.creditor, "debtor_name": "-",
            "commission_start": case.commission_start.isoformat() if case.commission_start else None,
            "commission_end": case.commission_end.isoformat() if case.commission_end else None,
            "assigned_agent": case.assigned_agent,
            "contacts": [{"number": c.number, "relation": c.relation, **({"tz": c.tz} if c.tz else {})}
                         for c in case.contacts],
        })
    yield {"op": "cases", "cases": cases}
    for dial in data.dials:
        dialed = data.cases.get((dial.creditor, dial.case_id))
        contact = _contact(dialed, dial) if dialed is not None else None
        number = dial.number or (contact.number if contact else dial.number_masked)
        yield {"op": "dial", "ref": dial.decision_id, "at": dial.at.isoformat(), "creditor": dial.creditor,
               "case_id": dial.case_id, "number": number, "agent_id": dial.agent_id}
        if dial.connected:
            yield {"op": "outcome", "ref": dial.decision_id, "at": dial.at.isoformat(),
                   "disposition": "connected_self" if (dial.relation or "self") == "self" else "connected_third_party"}


def masked_failed(checks: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """The failed rule ids of a logged record's checks."""
    return frozenset(c["rule_id"] for c in checks if not c.get("passed", True))
