"""The application's records: what the store holds and the use cases pass around.

The policy core's value types (`policy.model`) are what a decision is asked about; these
are what the service keeps. `CaseRecord.snapshot()` is the one bridge between the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from policy.model import CaseSnapshot, ContactSnapshot

# Roles that see full phone numbers: the ones that dial or maintain numbers. Supervisors
# dial too (escalations). QA and compliance review and see masked numbers only.
FULL_NUMBER_ROLES: frozenset[str] = frozenset({"collector", "supervisor", "data", "pbx", "admin"})

ATTEMPT_STATES: tuple[str, ...] = (
    "authorised",  # reserved by the gate, waiting for the PBX to place it
    "dialing",  # the PBX took it (SIP gate matched it, or a SIP-originated dial)
    "completed",  # the outcome is logged
    "expired",  # the PBX never placed it within the validity window
    "released",  # click-to-dial never reached the debtor: it stops counting
)

DISPOSITIONS: tuple[str, ...] = (
    "no_answer",
    "busy",
    "unreachable",
    "rejected",
    "invalid_number",
    "connected_self",
    "connected_third_party",
)
RESULTS: tuple[str, ...] = (
    "promise_to_pay",
    "instalment",
    "callback",
    "dispute",
    "complaint_risk",
    "third_party_refuses_contact",
    "reported_deceased",
    "reported_incarcerated",
    "fraud_claim",
    "none",
)

# Follow-up statuses (seed 000's table), shown in Chinese to collectors.
FOLLOW_UP_STATUSES: dict[str, str] = {
    "new": "新案待首催",
    "waiting": "待跟进",
    "reachable": "可联跟进",
    "new_lead": "最新线索",
    "callback": "约定回电",
    "promise": "承诺还款",
    "instalment": "分期还款",
    "dispute": "争议",
    "complaint_risk": "投诉倾向",
    "deceased_incarcerated_fraud": "死亡/判刑/伪冒",
    "lost_contact": "失联",
    "paused": "暂停催收",
    "closed": "结案",
    # Set by the collector in the 催记, within the rules' bounds (dialer.usecases).
    "urgent": "紧急",
    "night": "夜间催收",
    "custom": "自定义",
}
CHOSEN_STATUSES: tuple[str, ...] = ("urgent", "night", "custom")


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user. A collector's or supervisor's name is its agent id."""

    user_id: int
    name: str
    role: str
    creditors: frozenset[str]

    @property
    def unscoped(self) -> bool:
        return self.role == "admin"

    def can_see(self, creditor: str) -> bool:
        return self.unscoped or creditor in self.creditors

    @property
    def sees_full_numbers(self) -> bool:
        return self.role in FULL_NUMBER_ROLES

    def scope(self) -> frozenset[str] | None:
        """Creditors visible to this user; None means all (admin)."""
        return None if self.unscoped else self.creditors


@dataclass(frozen=True, slots=True)
class ContactRecord:
    number: str  # E.164
    relation: str
    name: str | None = None
    tz: str | None = None
    status: str = "valid"
    do_not_call: bool = False
    source: str = "creditor"  # creditor | info_repair | …
    added_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CaseRecord:
    pk: int
    creditor: str
    case_id: str
    debtor_name: str
    status: str
    commission_start: date | None
    commission_end: date | None
    assigned_agent: str | None
    flags: frozenset[str]
    amount_due: str | None
    overdue_days: int | None
    follow_up_status: str
    next_action_date: date | None
    event_seq: int
    contacts: tuple[ContactRecord, ...] = ()
    updated_at: datetime | None = None
    # Provenance: `flags` is the union of the bank's own flags (replaced by each case
    # file) and the agency's (kept until lifted explicitly).
    creditor_flags: frozenset[str] = frozenset()
    agency_flags: frozenset[str] = frozenset()
    status_hold: str | None = None  # repayment | pause | withdraw: a file cannot lift it
    history_seq: int = 0  # the head of the case's history chain

    def snapshot(self) -> CaseSnapshot:
        return CaseSnapshot(
            case_id=self.case_id,
            creditor=self.creditor,
            status=self.status,
            commission_start=self.commission_start,
            commission_end=self.commission_end,
            flags=self.flags,
            assigned_agent=self.assigned_agent,
            contacts=tuple(
                ContactSnapshot(
                    number=c.number,
                    relation=c.relation,
                    status=c.status,
                    do_not_call=c.do_not_call,
                    tz=c.tz,
                )
                for c in self.contacts
            ),
        )

    def contact(self, number: str) -> ContactRecord | None:
        for c in self.contacts:
            if c.number == number:
                return c
        return None


@dataclass(frozen=True, slots=True)
class CaseInput:
    """A validated case from an import (numbers already E.164)."""

    creditor: str
    case_id: str
    debtor_name: str
    status: str
    commission_start: date | None
    commission_end: date | None
    assigned_agent: str | None
    flags: frozenset[str]
    amount_due: str | None
    overdue_days: int | None
    contacts: tuple[ContactRecord, ...]
    # An explicit reopening, with its reason: the only way a file lifts a status held by
    # a repayment closure or by a pause or withdrawal made through the API.
    reopen: str | None = None


# Where a change to a case comes from; every history entry names one.
CHANGE_SOURCES: tuple[str, ...] = ("import", "repayment", "outcome", "api", "sip", "system")


@dataclass(frozen=True, slots=True)
class ChangeSource:
    """Who changed a case, from what: `kind` one of CHANGE_SOURCES; `ref` the import
    id, the attempt id of an outcome, the API call (`POST /v1/cases/C-1/pause`) or the
    SIP Call-ID; `row` the file's row for an import."""

    kind: str
    actor: str
    role: str
    ref: str | None = None
    row: int | None = None
    reason: str | None = None

    def at_row(self, row: int) -> "ChangeSource":
        return ChangeSource(self.kind, self.actor, self.role, self.ref, row, self.reason)


# An import whose caller names no source: the file and row are unknown.
UNKNOWN_IMPORT = ChangeSource(kind="import", actor="import", role="data")


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One change on a case's record, as stored and hash-chained (per case)."""

    creditor: str
    case_id: str
    seq: int
    at: datetime
    actor: str
    role: str
    source: str
    source_ref: str | None
    source_row: int | None
    field: str
    old: Any
    new: Any
    reason: str | None
    prev_hash: str = ""
    hash: str = ""

    def body(self) -> dict[str, Any]:
        """The canonical content the hash covers."""
        return history_body(self.creditor, self.case_id, self.seq, _iso(self.at), self.actor, self.role,
                            self.source, self.source_ref, self.source_row, self.field, self.old, self.new,
                            self.reason, self.prev_hash)

    def to_api(self) -> dict[str, Any]:
        body = self.body()
        body["hash"] = self.hash
        return body


def history_body(
    creditor: str, case_id: str, seq: int, at: str | None, actor: str, role: str, source: str,
    source_ref: str | None, source_row: int | None, field: str, old: Any, new: Any, reason: str | None,
    prev_hash: str,
) -> dict[str, Any]:
    """`HistoryEntry.body` from its values (`at` as ISO text): the one shape of a history
    link's content, which an import's batch builds without an entry object per change."""
    return {
        "creditor": creditor, "case_id": case_id, "seq": seq, "at": at, "actor": actor, "role": role,
        "source": source, "source_ref": source_ref, "source_row": source_row, "field": field, "old": old,
        "new": new, "reason": reason, "prev_hash": prev_hash,
    }


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    attempt_id: str
    case_pk: int
    creditor: str
    case_id: str
    number: str
    relation: str
    agent_id: str
    channel: str
    state: str
    at: datetime
    valid_until: datetime
    decision_id: str
    connected: bool = False


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    attempt_id: str
    disposition: str
    result: str
    note: str
    callback_at: datetime | None
    promise_amount: str | None
    promise_date: date | None
    logged_by: str
    logged_at: datetime
    request_digest: str


# What a decision-log entry records: a dial (click-to-dial or SIP), a what-if dial check,
# or the PBX's recheck of an authorised dial. The blocked-dial review lists every kind
# but the what-if check, by name (an IN list lets SQLite seek its review index).
DECISION_KINDS: tuple[str, ...] = ("dial", "check", "recheck")
REVIEWED_KINDS: tuple[str, ...] = tuple(k for k in DECISION_KINDS if k != "check")


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One entry of the decision log (OPA-style), as stored and hash-chained.

    Numbers are kept masked here: the log is append-only and outlives the creditor's
    commission, while the creditor's data must be returned without copies. The attempt
    row (operational data) holds the full number.
    """

    decision_id: str
    kind: str  # one of DECISION_KINDS
    at: datetime  # when the gate decided (server clock)
    evaluated_at: datetime  # the time evaluated (what-if checks differ)
    user: str
    agent_id: str
    channel: str
    creditor: str
    case_id: str
    number_masked: str
    attempt_id: str | None
    allowed: bool
    rule_id: str
    reason: str
    reason_zh: str
    next_allowed_at: datetime | None
    policy_version: str
    checks: tuple[dict[str, Any], ...]
    inputs_used: dict[str, Any] = field(default_factory=dict)
    # filled by the log when appended
    chain: str = ""
    seq: int = 0
    prev_hash: str = ""
    hash: str = ""

    def body(self) -> dict[str, Any]:
        """The canonical content the hash covers (everything but the hash itself)."""
        return {
            "decision_id": self.decision_id,
            "kind": self.kind,
            "at": _iso(self.at),
            "evaluated_at": _iso(self.evaluated_at),
            "user": self.user,
            "agent_id": self.agent_id,
            "channel": self.channel,
            "creditor": self.creditor,
            "case_id": self.case_id,
            "number": self.number_masked,
            "attempt_id": self.attempt_id,
            "allowed": self.allowed,
            "rule_id": self.rule_id,
            "reason": self.reason,
            "reason_zh": self.reason_zh,
            "next_allowed_at": _iso(self.next_allowed_at),
            "policy_version": self.policy_version,
            "checks": list(self.checks),
            "inputs_used": self.inputs_used,
            "chain": self.chain,
            "seq": self.seq,
            "prev_hash": self.prev_hash,
        }

    def to_api(self) -> dict[str, Any]:
        body = self.body()
        body["hash"] = self.hash
        return body


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    id: int
    event_id: str
    type: str
    creditor: str
    case_id: str | None
    case_seq: int | None
    occurred_at: datetime
    payload: dict[str, Any]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


IMPORT_KINDS: tuple[str, ...] = ("cases", "repayments")
IMPORT_STATES: tuple[str, ...] = (
    "validating",  # the file is being read and checked; nothing is applied yet
    "applying",  # valid: its rows are staged and applied in batches
    "done",  # every row applied
    "refused",  # invalid: nothing applied; `errors` lists every row/field error
    "failed",  # could not be applied (store error); `rows_done` rows are applied
)


@dataclass(frozen=True, slots=True)
class ImportJob:
    """An import of one file. Rows 1..`rows_done` (in staging order) are applied."""

    import_id: str
    kind: str
    state: str
    actor: str
    creditors: tuple[str, ...]  # the actor's scope when submitted (empty: every creditor)
    rows_total: int
    rows_done: int
    created_at: datetime
    updated_at: datetime
    file_name: str | None = None
    encoding: str | None = None
    summary: dict[str, int] = field(default_factory=dict)  # created / updated / recorded / closed
    errors: tuple[dict[str, Any], ...] = ()
    finished_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "import_id": self.import_id,
            "kind": self.kind,
            "state": self.state,
            "actor": self.actor,
            "file_name": self.file_name,
            "encoding": self.encoding,
            "rows_total": self.rows_total,
            "rows_done": self.rows_done,
            "summary": dict(self.summary),
            "errors": list(self.errors),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


@dataclass(frozen=True, slots=True)
class CallProgress:
    """One call state of a click-to-dial attempt placed by the service's own user agent
    (originating, agent_ringing, …, ended), as `GET /v1/attempts/{id}` shows it."""

    attempt_id: str
    state: str
    at: datetime
    cause: str | None = None
    rule_id: str | None = None
    detail: str | None = None
    recording_id: str | None = None
