"""Builders for policy unit tests: a case with five contacts, requests, history events."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from policy import (
    AgentSnapshot,
    Appointment,
    CaseSnapshot,
    ContactSnapshot,
    Decision,
    DialRequest,
    HistoryEvent,
    Policy,
    evaluate,
    load_policy,
)

SH = ZoneInfo("Asia/Shanghai")
NY = ZoneInfo("America/New_York")
UTC = ZoneInfo("UTC")

DEBTOR = "+8613800000001"
GUARANTOR = "+8613900000002"
FAMILY = "+8613700000003"
WORK = "+862161234567"
FRIEND = "+8615000000004"
US_RELATIVE = "+12125550100"  # Manhattan: America/New_York

RELATION_OF = {
    DEBTOR: "self",
    GUARANTOR: "guarantor",
    FAMILY: "family",
    WORK: "work",
    FRIEND: "third_party",
    US_RELATIVE: "family",
}


def sh(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=SH)


def default_policy(creditor: str = "bank-a") -> Policy:
    return load_policy({}).for_creditor(creditor)


def policy_from(table: dict[str, Any], creditor: str = "bank-a") -> Policy:
    return load_policy(table).for_creditor(creditor)


def make_case(case_id: str = "C-1", **overrides: Any) -> CaseSnapshot:
    fields: dict[str, Any] = dict(
        case_id=case_id,
        creditor="bank-a",
        status="active",
        commission_start=date(2026, 1, 1),
        commission_end=date(2026, 12, 31),
        flags=frozenset(),
        assigned_agent="a1",
        contacts=tuple(ContactSnapshot(n, r) for n, r in RELATION_OF.items()),
    )
    fields.update(overrides)
    return CaseSnapshot(**fields)


def collector(agent_id: str = "a1", creditors: frozenset[str] = frozenset({"bank-a"})) -> AgentSnapshot:
    return AgentSnapshot(agent_id, "collector", creditors)


def make_request(number: str = DEBTOR, case: CaseSnapshot | None = None, **overrides: Any) -> DialRequest:
    fields: dict[str, Any] = dict(case=case or make_case(), number=number, agent=collector())
    fields.update(overrides)
    return DialRequest(**fields)


def event(
    at: datetime, number: str = DEBTOR, kind: str = "attempt", case_id: str = "C-1", relation: str | None = None
) -> HistoryEvent:
    return HistoryEvent(at, case_id, number, relation or RELATION_OF.get(number, "third_party"), kind)


def attempts_at(*times: datetime, number: str = DEBTOR, case_id: str = "C-1") -> list[HistoryEvent]:
    return [event(t, number, case_id=case_id) for t in times]


def decide(
    request: DialRequest | None = None,
    history: list[HistoryEvent] | tuple[HistoryEvent, ...] = (),
    policy: Policy | None = None,
    now: datetime | None = None,
) -> Decision:
    return evaluate(
        request or make_request(), list(history), policy or default_policy(), now or sh(2026, 11, 24, 10, 0)
    )


def check(decision: Decision, rule_id: str):  # noqa: ANN201
    matches = [c for c in decision.checks if c.rule_id == rule_id]
    assert len(matches) == 1, f"{rule_id} appears {len(matches)} times"
    return matches[0]


def appointment(at: datetime, number: str = DEBTOR) -> Appointment:
    return Appointment(number, at)


ONE_SECOND = timedelta(seconds=1)
