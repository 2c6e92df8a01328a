"""Value types of the dial policy core: what a decision is asked about and what it answers.

This module is the contract between `policy/` and everything that calls it (the gate
service, the SIP gate, click-to-dial, `dialgate simulate`). It holds plain frozen
dataclasses only: no I/O, no clock reads, no imports from outside the standard library.

All datetimes are timezone-aware. Phone numbers are E.164 strings (``+8613800000001``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Callable, Literal, Mapping

Relation = Literal["self", "guarantor", "family", "work", "third_party"]
# A creditor's id as cases carry it (imports refuse any other): a policy section under
# another spelling would never apply. `\Z`, not `$`: `$` also matches before a final
# newline, and "bank-a\n" would be a second creditor.
CREDITOR_ID = re.compile(r"^[a-z0-9][a-z0-9._\-]{0,63}\Z")

RELATIONS: tuple[str, ...] = ("self", "guarantor", "family", "work", "third_party")

CaseStatus = Literal["active", "paused", "settled", "withdrawn", "returned"]
CASE_STATUSES: tuple[str, ...] = ("active", "paused", "settled", "withdrawn", "returned")
CLOSED_STATUSES: frozenset[str] = frozenset({"settled", "withdrawn", "returned"})

# Case flags in the precedence order of their rules (`case.<flag>` rule ids, except
# fraud_claim → case.fraud_claim, complaint_risk → case.complaint_risk ...: the rule id
# is always "case." + flag).
CASE_FLAGS: tuple[str, ...] = (
    "litigation",
    "deceased",
    "incarcerated",
    "fraud_claim",
    "dispute",
    "complaint_risk",
    "do_not_collect",
)

Role = Literal["collector", "supervisor", "qa", "compliance", "data", "pbx", "admin"]
ROLES: tuple[str, ...] = ("collector", "supervisor", "qa", "compliance", "data", "pbx", "admin")
# The role of an agent whose user is disabled or gone by the time a dial is decided again.
NO_AGENT = "none"

Channel = Literal["api", "sip", "mqtt", "simulate"]

# Faults the caller reports when a dependency is down; each fails the decision closed
# with rule id "system.<fault>".
SYSTEM_FAULTS: tuple[str, ...] = ("store_unavailable", "recording_unavailable")

EventKind = Literal["attempt", "connected"]


@dataclass(frozen=True, slots=True)
class ContactSnapshot:
    """One number the creditor supplied (or staff verified) for a case."""

    number: str  # E.164
    relation: str  # one of RELATIONS
    status: str = "valid"  # "valid" | "invalid"
    do_not_call: bool = False
    tz: str | None = None  # IANA zone, overrides the number's own zone


@dataclass(frozen=True, slots=True)
class CaseSnapshot:
    case_id: str
    creditor: str
    status: str  # one of CASE_STATUSES
    commission_start: date | None
    commission_end: date | None  # inclusive, whole days in the policy time zone
    flags: frozenset[str] = frozenset()
    assigned_agent: str | None = None
    contacts: tuple[ContactSnapshot, ...] = ()

    def contact(self, number: str) -> ContactSnapshot | None:
        for c in self.contacts:
            if c.number == number:
                return c
        return None


@dataclass(frozen=True, slots=True)
class AgentSnapshot:
    """The person (or the PBX acting for them) asking to dial."""

    agent_id: str
    role: str  # one of ROLES, or NO_AGENT
    creditors: frozenset[str] = frozenset()  # creditor scope; admin is unscoped


@dataclass(frozen=True, slots=True)
class Appointment:
    """A time the debtor or a third party agreed to be called back (与客户约定)."""

    number: str  # E.164 of the contact the appointment is for
    at: datetime


@dataclass(frozen=True, slots=True)
class DialRequest:
    case: CaseSnapshot
    number: str  # dialed number, E.164 (or the raw string when it could not be normalised)
    agent: AgentSnapshot
    channel: str = "api"
    faults: frozenset[str] = frozenset()  # subset of SYSTEM_FAULTS
    appointments: tuple[Appointment, ...] = ()
    # SIP channel only: the caller line the PBX presented, and the creditor's registered
    # lines. `registered_lines=None` means the creditor has no list: a "sip" dial is then
    # blocked unless the policy allows unregistered lines; other channels go through the
    # service's own PBX account, a registered line.
    caller_line: str | None = None
    registered_lines: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """A past dial attempt or connected call relevant to a request.

    The caller passes the events of the same number and of the same case inside the
    policy's look-back window (`Policy.lookback`); older or unrelated events may be
    passed too and are ignored.
    """

    at: datetime
    case_id: str
    number: str
    relation: str
    kind: str = "attempt"  # "attempt" | "connected"


@dataclass(frozen=True, slots=True)
class Check:
    rule_id: str
    passed: bool
    detail: str
    detail_zh: str = ""
    # True when the rule itself failed but an appointment (与客户约定) exempted the call
    # from it (only window.outside_hours and caps can be exempted).
    exempted: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    rule_id: str  # deciding rule, "allow" or "appointment.exception" when allowed
    reason: str  # English
    reason_zh: str  # Chinese
    next_allowed_at: datetime | None
    checks: tuple[Check, ...]
    policy_version: str
    evaluated_at: datetime
    inputs_used: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self, inputs_json: Callable[[Any], Any] | None = None) -> dict[str, Any]:
        """As JSON values. `inputs_json` converts `inputs_used` (default: `jsonable`); an
        application may pass a faster one that returns the same values."""
        return {
            "allowed": self.allowed,
            "rule_id": self.rule_id,
            "reason": self.reason,
            "reason_zh": self.reason_zh,
            "next_allowed_at": self.next_allowed_at.isoformat() if self.next_allowed_at else None,
            "checks": [
                {
                    "rule_id": c.rule_id,
                    "passed": c.passed,
                    "detail": c.detail,
                    "detail_zh": c.detail_zh,
                    "exempted": c.exempted,
                }
                for c in self.checks
            ],
            "policy_version": self.policy_version,
            "evaluated_at": self.evaluated_at.isoformat(),
            "inputs_used": (inputs_json or jsonable)(self.inputs_used),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def jsonable(value: Any) -> Any:
    """`value` as JSON values: mappings as dicts with string keys, sequences and sets as
    lists, dates and times as ISO 8601 text; anything else as it is."""
    # Exact-type checks first: this runs for every decision answered, and an
    # isinstance against typing.Mapping is an ABC check (the slow path).
    kind = type(value)
    if kind is str or kind is int or kind is bool or kind is float or value is None:
        return value
    if kind is dict or isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if kind is list or kind is tuple or isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value
