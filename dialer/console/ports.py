"""What the web console needs from the rest of DialGate: one port, `ConsoleQueries`.

The console renders pages; it never touches the store or the vault directly. Every
method takes the signed-in `Principal` and MUST apply its role and creditor scope
itself (defence in depth: the router checks roles too, but a data call never returns
another creditor's rows). Ids that exist but belong to a creditor outside the scope
raise `NotFound`, exactly like ids that do not exist, so a probe learns nothing.

Errors the port may raise (everything else is a bug and becomes a 500)::

    ConsoleError
     ├── NotFound        unknown id, or an id outside the principal's creditor scope → 404
     ├── Forbidden       the role may not do this → 403
     └── Refused         a rule of the domain said no (e.g. dual control on purges) → 409

The value types below are what the templates render. They are plain frozen
dataclasses; numbers are already masked (`138****0001`) by the adapter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

# Roles that may use each console area. Admin is unscoped but does not listen to
# recordings (least privilege: the vault's retrieval roles are qa, compliance and
# supervisor) and does not approve purges (an admin is the operator who requests them).
AREA_ROLES: Mapping[str, frozenset[str]] = {
    "blocked": frozenset({"compliance", "supervisor", "admin"}),
    "decision": frozenset({"compliance", "supervisor", "qa", "admin"}),
    "case": frozenset({"compliance", "supervisor", "qa", "admin"}),
    "recordings": frozenset({"qa", "compliance", "supervisor"}),
    "register": frozenset({"compliance", "supervisor", "admin"}),
    "purge_approve": frozenset({"supervisor", "compliance"}),
    "worklist": frozenset({"supervisor", "admin"}),
}
CONSOLE_ROLES: frozenset[str] = frozenset().union(*AREA_ROLES.values())


class ConsoleError(Exception):
    """Base of the errors a `ConsoleQueries` implementation may raise."""

    def __init__(self, message: str, message_zh: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.message_zh = message_zh or message


class NotFound(ConsoleError):
    """Unknown id, or an id of a creditor outside the principal's scope."""


class Forbidden(ConsoleError):
    """The principal's role may not do this."""


class Refused(ConsoleError):
    """A domain rule refused the action (dual control, legal hold, state)."""


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    name: str
    role: str
    creditors: frozenset[str] = frozenset()

    def sees(self, creditor: str) -> bool:
        return self.role == "admin" or creditor in self.creditors

    def may(self, area: str) -> bool:
        return self.role in AREA_ROLES[area]


@dataclass(frozen=True, slots=True)
class BlockedDialFilter:
    """Filters of the blocked-dial view. Dates are whole local days in `tz`, inclusive."""

    date_from: date | None = None
    date_to: date | None = None
    creditor: str | None = None
    agent: str | None = None
    rule_id: str | None = None
    case_id: str | None = None
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))

    def bounds(self) -> tuple[datetime | None, datetime | None]:
        """Half-open [start, end) instants of the date range."""
        from datetime import time, timedelta

        start = datetime.combine(self.date_from, time(0), self.tz) if self.date_from else None
        end = (
            datetime.combine(self.date_to + timedelta(days=1), time(0), self.tz)
            if self.date_to
            else None
        )
        return start, end


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """One line of the decision log as the blocked-dial table shows it."""

    decision_id: str
    at: datetime
    creditor: str
    case_id: str
    agent_id: str
    number_masked: str
    channel: str
    allowed: bool
    rule_id: str
    reason: str
    reason_zh: str
    next_allowed_at: datetime | None
    policy_version: str
    # "dial" (click-to-dial or SIP) or "recheck" (the PBX asking again at ring time):
    # the review lists both, as the JSON API does (`dialer.model.REVIEWED_KINDS`).
    kind: str = "dial"


@dataclass(frozen=True, slots=True)
class Page:
    items: tuple[Any, ...]
    next_cursor: str | None = None
    total: int | None = None


@dataclass(frozen=True, slots=True)
class BlockedSummary:
    """Counts of the filtered blocked dials, for the charts."""

    by_day_rule: tuple[tuple[date, str, int], ...]
    by_agent_rule: tuple[tuple[str, str, int], ...]


@dataclass(frozen=True, slots=True)
class FilterOptions:
    creditors: tuple[str, ...]
    agents: tuple[str, ...]
    rule_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CheckView:
    rule_id: str
    passed: bool
    detail: str
    detail_zh: str = ""


@dataclass(frozen=True, slots=True)
class DecisionDetail:
    row: DecisionRow
    user: str
    checks: tuple[CheckView, ...]
    inputs_used: Mapping[str, Any]
    evaluated_at: datetime
    attempt_id: str | None = None
    record_hash: str | None = None


@dataclass(frozen=True, slots=True)
class ContactView:
    number_masked: str
    relation: str
    name: str | None = None
    status: str = "valid"
    do_not_call: bool = False
    source: str | None = None


@dataclass(frozen=True, slots=True)
class OutcomeView:
    disposition: str
    result: str | None
    note: str | None
    recorded_at: datetime | None = None
    callback_at: datetime | None = None
    promise_amount: str | None = None
    promise_date: date | None = None


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """A dial decision on the case: an allowed attempt (with its outcome) or a block."""

    at: datetime
    decision_id: str | None
    attempt_id: str | None
    agent_id: str
    number_masked: str
    allowed: bool
    rule_id: str
    reason: str
    reason_zh: str
    outcome: OutcomeView | None = None
    recording_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CaseEvent:
    """A change of the case's state (status, flag, follow-up) from the audit log."""

    at: datetime
    actor: str
    what: str  # details, e.g. "disposition=connected_self, result=promise_to_pay"
    action: str = ""  # the data-change log's action id, e.g. "outcome.logged" (labelled by the catalog)


@dataclass(frozen=True, slots=True)
class HistoryView:
    """One entry of the case's hash-chained history (numbers already masked)."""

    seq: int
    at: datetime
    actor: str
    role: str
    source: str  # import | repayment | outcome | api | sip | system
    source_ref: str | None
    source_row: int | None
    field: str
    old: str  # shown as text, "—" for none
    new: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class WorklistItem:
    """A case due today or overdue, or a new case with its first-call deadline."""

    case_id: str
    creditor: str
    assigned_agent: str | None
    status: str
    next_action_date: str | None
    days_overdue: int
    first_call_deadline: str | None = None  # new cases only
    first_call_missed: bool = False


@dataclass(frozen=True, slots=True)
class LegalHoldView:
    reason: str
    by: str
    at: datetime


@dataclass(frozen=True, slots=True)
class CaseView:
    creditor: str
    case_id: str
    debtor_name: str
    status: str
    follow_up: str | None
    next_action_date: date | None
    flags: tuple[str, ...]
    legal_hold: LegalHoldView | None
    commission_start: date | None
    commission_end: date | None
    assigned_agent: str | None
    amount_due: str | None
    overdue_days: int | None
    contacts: tuple[ContactView, ...]
    timeline: tuple[TimelineEntry, ...]
    events: tuple[CaseEvent, ...] = ()
    history: tuple[HistoryView, ...] = ()  # newest first


@dataclass(frozen=True, slots=True)
class RecordingFilter:
    agent: str | None = None
    number: str | None = None  # digits the masked or full number contains
    date_from: date | None = None
    date_to: date | None = None
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))


@dataclass(frozen=True, slots=True)
class RecordingView:
    recording_id: str
    creditor: str
    case_id: str | None
    attempt_id: str | None
    agent_id: str | None
    number_masked: str | None
    started_at: datetime
    duration_s: float
    content_type: str
    size: int
    sha256: str
    retain_until: date | None
    legal_hold: bool = False
    state: str = "stored"


@dataclass(frozen=True, slots=True)
class AccessLogEntry:
    at: datetime
    user: str
    reason: str
    byte_range: str
    client: str | None = None


@dataclass(frozen=True, slots=True)
class AudioSlice:
    """Decrypted bytes [start, end] (inclusive) of a recording of `total_size` bytes."""

    content_type: str
    total_size: int
    start: int
    end: int
    body: AsyncIterator[bytes]


@dataclass(frozen=True, slots=True)
class DestructionEntry:
    seq: int
    recording_id: str
    creditor: str
    case_id: str | None
    sha256: str
    retain_until: date | None
    operator: str
    approver: str
    destroyed_at: datetime
    method: str
    entry_hash: str = ""


@dataclass(frozen=True, slots=True)
class PurgeView:
    purge_id: str
    requested_by: str
    requested_at: datetime
    state: str  # "pending" | "approved" | "done" | "refused"
    recording_ids: tuple[str, ...]
    creditors: tuple[str, ...] = ()
    approved_by: str | None = None


@dataclass(frozen=True, slots=True)
class HealthItem:
    component: str  # "store" | "vault" | "sip" | "mqtt" | "audit_chain" | "holidays"
    status: str  # "ok" | "degraded" | "down" | "off" | "checking"
    detail: str = ""


HEALTH_COMPONENTS: tuple[str, ...] = ("store", "vault", "sip", "mqtt", "leader", "audit_chain", "holidays")


@runtime_checkable
class ConsoleQueries(Protocol):
    """Everything the console reads or does. Implemented over the service's store and
    the recordings vault (phase 2) and in memory for tests (`memory.InMemoryConsoleQueries`).
    """

    async def authenticate(self, token: str) -> Principal | None:
        """The user a bearer token belongs to, or None."""

    async def principal(self, user_id: str) -> Principal | None:
        """The user behind a session, re-read on every request so revocations apply."""

    async def sign_out(self, sid: str, until: float) -> None:
        """End session `sid` on the server: a copy of its cookie no longer signs in.
        `until` (epoch seconds): when the cookie expires anyway."""

    async def signed_out(self, sid: str, user_id: str | None = None, issued_at: int = 0) -> bool:
        """Whether session `sid` was signed out, or ended with all of `user_id`'s sessions
        issued before a token rotation or a disable (`issued_at`: epoch seconds)."""

    async def filter_options(self, who: Principal) -> FilterOptions: ...

    async def blocked_dials(
        self, who: Principal, flt: BlockedDialFilter, cursor: str | None, limit: int
    ) -> Page:
        """Blocked decisions newest first, keyset-paged; `Page.items` are `DecisionRow`s."""

    def export_blocked_dials(self, who: Principal, flt: BlockedDialFilter) -> AsyncIterator[DecisionRow]:
        """Every blocked decision matching `flt`, in the table's order (for CSV)."""

    async def blocked_summary(self, who: Principal, flt: BlockedDialFilter) -> BlockedSummary: ...

    async def decision(self, who: Principal, decision_id: str) -> DecisionDetail: ...

    async def case(self, who: Principal, creditor: str, case_id: str) -> CaseView: ...

    async def worklist(self, who: Principal) -> list[WorklistItem]:
        """The supervisor's worklist: the creditors' cases due today, most urgent first."""
        ...

    async def case_recordings(
        self, who: Principal, creditor: str, case_id: str, flt: RecordingFilter
    ) -> Sequence[RecordingView]: ...

    async def recording(self, who: Principal, recording_id: str) -> RecordingView: ...

    async def access_log(self, who: Principal, recording_id: str) -> Sequence[AccessLogEntry]: ...

    async def read_audio(
        self,
        who: Principal,
        recording_id: str,
        *,
        reason: str,
        start: int | None,
        end: int | None,
        client: str | None,
    ) -> AudioSlice:
        """Open decrypted audio bytes [start, end] (None: from 0 / to the end) and append
        one entry (user, time, reason, byte range, client) to the recording's access log."""

    async def destruction_register(self, who: Principal, cursor: str | None, limit: int) -> Page: ...

    async def pending_purges(self, who: Principal) -> Sequence[PurgeView]: ...

    async def approve_purge(self, who: Principal, purge_id: str) -> PurgeView:
        """Approve as `who`; the vault refuses (`Refused`) when `who` requested it."""

    async def health(self) -> Sequence[HealthItem]: ...
