"""The commands the use cases run, their results, and who may run them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Mapping

from dialer.errors import Forbidden
from dialer.model import AttemptRecord, DecisionRecord, Principal
from dialer.usecases.presenters import plain_json
from policy import Decision, Policy

CHANNELS = ("api", "sip", "mqtt", "simulate")
DIAL_ROLES = frozenset({"collector", "supervisor", "pbx", "admin"})
CHECK_ROLES = frozenset({"collector", "supervisor", "compliance", "pbx", "admin"})
WHAT_IF_ROLES = frozenset({"compliance", "admin"})
OUTCOME_ROLES = frozenset({"collector", "supervisor", "pbx", "admin"})
DATA_ROLES = frozenset({"data", "admin"})
# Not the PBX: it places calls and uploads their audio, and needs no debtor name, note or
# promise to do either.
CASE_READ_ROLES = frozenset({"collector", "supervisor", "qa", "compliance", "data", "admin"})
LOOKUP_ROLES = frozenset({"collector", "supervisor", "qa", "compliance", "data", "admin", "pbx"})
REVIEW_ROLES = frozenset({"compliance", "supervisor", "admin"})


def require_role(actor: Principal, roles: frozenset[str], what: str) -> None:
    if actor.role not in roles:
        raise Forbidden(
            f"role {actor.role!r} may not {what}",
            details={"role": actor.role, "allowed_roles": sorted(roles)},
        )


# ---------------------------------------------------------------------------------
# Commands and results
# ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RequestDial:
    """Decide and reserve a dial now.

    The SIP gate sets `match_pending`: an authorisation the click-to-dial already
    reserved (by `attempt_id`, else by agent and number within its validity window)
    is consumed instead of deciding and counting again.

    The case is resolved inside the decision's write (`dialer.dial_resolution`): an
    empty `case_id` (the SIP gate's usual INVITE) means the agent's pending
    authorisation for the number, else the one active case assigned to the agent that
    holds it (`NoSuchCase` / `AmbiguousCase` otherwise). The caller line is then
    checked against `lines_by_creditor[case.creditor]`.
    """

    actor: Principal
    case_id: str
    number: str
    agent_id: str
    channel: str = "api"
    creditor: str | None = None
    match_pending: bool = False
    attempt_id: str | None = None
    caller_line: str | None = None
    registered_lines: frozenset[str] | None = None
    lines_by_creditor: Mapping[str, frozenset[str]] | None = None
    # The request's own identity (an INVITE's transaction, an Idempotency-Key): the same
    # key from the same user is answered as the first time, not decided again.
    request_key: str | None = None


@dataclass(frozen=True, slots=True)
class CheckDial:
    """Decide without reserving; `at` is a what-if time (compliance and admin only)."""

    actor: Principal
    case_id: str
    number: str
    agent_id: str
    at: datetime | None = None
    creditor: str | None = None
    channel: str = "api"


@dataclass(frozen=True, slots=True)
class PromiseInput:
    amount: str
    date: date


@dataclass(frozen=True, slots=True)
class LogOutcome:
    actor: Principal
    attempt_id: str
    disposition: str
    result: str = "none"
    note: str = ""
    callback_at: datetime | None = None
    promise: PromiseInput | None = None
    next_action_date: date | None = None  # within the rules' bounds (`chosen_follow_up`)
    status: str | None = None  # one of CHOSEN_STATUSES
    authorised_agent: bool = False  # the third party reached may promise for the holder


def history_bound(pol: Policy) -> int:
    """How many of the newest attempts per (relation, answered) group a decision under
    `pol` can need: its largest cap or appointment limit (more are never counted)."""
    return max([cap.limit for cap in pol.caps] + [pol.appointment.max_attempts, 1])


@dataclass(frozen=True, slots=True)
class DialResult:
    allowed: bool
    decision: Decision
    record: DecisionRecord
    attempt: AttemptRecord | None = None
    reused: bool = False  # a pending authorisation was consumed (SIP gate)
    replayed: bool = False  # the answer stored for the request's identity, given again

    @property
    def decision_id(self) -> str:
        return self.record.decision_id

    def decision_json(self) -> dict[str, Any]:
        d = self.decision.to_dict(plain_json)
        d["decision_id"] = self.record.decision_id
        return d


def _narrow(actor: Principal, creditor: str | None) -> frozenset[str] | None:
    scope = actor.scope()
    if creditor is None:
        return scope
    if scope is not None and creditor not in scope:
        return frozenset()  # another creditor's data is invisible, not forbidden
    return frozenset({creditor})
