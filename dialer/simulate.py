"""`dialgate simulate`: replay a JSONL scenario through the same use cases as the API.

In-memory SQLite, a clock set to each line's `at`, and the collectors named by the
cases' `assigned_agent` created on the fly. Prints one JSON line per `dial` / `check`:
``{"ref","op","at","allowed","rule_id","next_allowed_at","decision_id"}``.
Every dial and check gets its answer line: a dial the gate refuses before the policy
runs is a blocked result too — `case.not_found` (no such case, or another creditor's
case the collector cannot see), `case.ambiguous`, `agent.not_assigned` (a collector
with no case in the scenario, or a role that may not dial), with ``decision_id`` null.
Only a malformed line stops the run, with its line number and the reason
(`ScenarioError`). An `outcome` whose dial was blocked (under the policy being tried)
is skipped. The format: dialer/SIMULATE.md.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, datetime, timezone
from typing import Any, Callable, Iterable

from dialer.bootstrap import open_services
from dialer.auth import hash_token, new_token
from dialer.clock import FixedClock
from dialer.config import Config
from dialer.errors import AmbiguousCase, ApiError, DialGateError, Forbidden, NoSuchCase
from dialer.imports import parse_cases_payload
from dialer.model import Principal
from dialer.usecases import CheckDial, LogOutcome, PromiseInput, RequestDial

OPS = ("cases", "dial", "check", "outcome", "repayment")
# Refusals raised before the policy runs, as the rule id of the blocked answer line.
REFUSALS: tuple[tuple[type[ApiError], str], ...] = (
    (NoSuchCase, "case.not_found"),
    (AmbiguousCase, "case.ambiguous"),
    (Forbidden, "agent.not_assigned"),
)
SYSTEM = Principal(user_id=0, name="simulate", role="admin", creditors=frozenset())


class ScenarioError(DialGateError):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


def _at(doc: dict[str, Any], line: int, field: str = "at") -> datetime:
    raw = doc.get(field)
    if not isinstance(raw, str):
        raise ScenarioError(line, f"{field}: required ISO date-time with offset")
    try:
        at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ScenarioError(line, f"{field}: not an ISO date-time: {raw!r}") from None
    if at.tzinfo is None:
        raise ScenarioError(line, f"{field}: needs a UTC offset, e.g. +08:00")
    return at


def _str(doc: dict[str, Any], field: str, line: int) -> str:
    v = doc.get(field)
    if not isinstance(v, str) or not v:
        raise ScenarioError(line, f"{field}: required string")
    return v


async def run(config: Config, lines: Iterable[str], emit: Callable[[dict[str, Any]], None]) -> dict[str, int]:
    """Run the scenario; returns counters. Raises ScenarioError on a malformed line."""
    from dialer.config import build_config

    cfg = build_config(
        {"policy": config.policy_table} if config.policy_table else {},
        overrides={"store": {"url": "sqlite+aiosqlite://", "migrate_on_start": True}},
    )
    clock = FixedClock(datetime(2000, 1, 1, tzinfo=timezone.utc))
    counts = {"dial": 0, "check": 0, "outcome": 0, "skipped_outcomes": 0, "cases": 0, "repayment": 0}
    attempts: dict[str, str | None] = {}
    agents: dict[str, Principal] = {}
    async with open_services(cfg, clock) as svc:
        gate = svc.gate
        last: datetime | None = None
        for n, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            try:
                doc = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ScenarioError(n, f"not JSON: {exc.msg} at column {exc.colno}") from None
            if not isinstance(doc, dict):
                raise ScenarioError(n, "expected a JSON object")
            op = doc.get("op")
            if op not in OPS:
                raise ScenarioError(n, f"op: expected one of {', '.join(OPS)}")
            if op != "cases" or "at" in doc:
                at = _at(doc, n)
                if last is not None and at < last:
                    raise ScenarioError(n, f"at {doc['at']} is earlier than the previous line: lines must be in time order")
                last = at
                clock.set(at)
            try:
                if op == "cases":
                    cases = parse_cases_payload({"cases": doc.get("cases")}, svc.region_of)
                    await gate.import_cases(SYSTEM, cases)
                    async with svc.store.write() as uow:
                        for c in cases:
                            if c.assigned_agent and c.assigned_agent not in agents:
                                p = await uow.users.by_name(c.assigned_agent)
                                if p is None:
                                    p = await uow.users.add(c.assigned_agent, "collector", frozenset({c.creditor}),
                                                            hash_token(new_token()), clock.now())
                                agents[c.assigned_agent] = p
                            elif c.assigned_agent and c.creditor not in agents[c.assigned_agent].creditors:
                                p = agents[c.assigned_agent]
                                await uow.users.grant(p.name, c.creditor)
                                agents[c.assigned_agent] = replace(p, creditors=p.creditors | {c.creditor})
                    counts["cases"] += len(cases)
                elif op in ("dial", "check"):
                    ref = _str(doc, "ref", n)
                    agent_id = _str(doc, "agent_id", n)
                    case_id, number = _str(doc, "case_id", n), _str(doc, "number", n)
                    actor = agents.get(agent_id)
                    counts[op] += 1
                    refused = None
                    if actor is None:
                        refused = "agent.not_assigned"
                    else:
                        try:
                            if op == "dial":
                                res = await gate.request_dial(RequestDial(
                                    actor=actor, case_id=case_id, number=number,
                                    agent_id=agent_id, channel="simulate", creditor=doc.get("creditor")))
                            else:
                                res = await gate.check_dial(CheckDial(
                                    actor=actor, case_id=case_id, number=number,
                                    agent_id=agent_id, creditor=doc.get("creditor"), channel="simulate"))
                        except tuple(t for t, _ in REFUSALS) as exc:
                            refused = next(rule for t, rule in REFUSALS if isinstance(exc, t))
                    if refused is not None:
                        if op == "dial":
                            attempts[ref] = None
                        counts["refused"] = counts.get("refused", 0) + 1
                        emit({"ref": ref, "op": op, "at": doc["at"], "allowed": False, "rule_id": refused,
                              "next_allowed_at": None, "decision_id": None})
                        continue
                    if op == "dial":
                        attempts[ref] = res.attempt.attempt_id if res.attempt else None
                    emit({
                        "ref": ref, "op": op, "at": doc["at"], "allowed": res.allowed,
                        "rule_id": res.decision.rule_id,
                        # In the line's own offset, as the scenario wrote its times.
                        "next_allowed_at": res.decision.next_allowed_at.astimezone(at.tzinfo).isoformat()
                        if res.decision.next_allowed_at else None,
                        "decision_id": res.decision_id,
                    })
                elif op == "outcome":
                    ref = _str(doc, "ref", n)
                    if ref not in attempts:
                        raise ScenarioError(n, f"ref {ref!r}: no earlier dial with this ref")
                    attempt_id = attempts[ref]
                    if attempt_id is None:
                        counts["skipped_outcomes"] += 1
                        continue
                    promise = None
                    if doc.get("promise") is not None:
                        p = doc["promise"]
                        if not isinstance(p, dict) or "amount" not in p or "date" not in p:
                            raise ScenarioError(n, "promise: expected {amount, date}")
                        try:
                            promise = PromiseInput(amount=str(p["amount"]), date=date.fromisoformat(p["date"]))
                        except (ValueError, TypeError):
                            raise ScenarioError(n, "promise.date: expected YYYY-MM-DD") from None
                    await gate.log_outcome(LogOutcome(
                        actor=SYSTEM, attempt_id=attempt_id, disposition=_str(doc, "disposition", n),
                        result=doc.get("result") or "none", note=doc.get("note") or "(simulated)",
                        callback_at=_at(doc, n, "callback_at") if doc.get("callback_at") else None,
                        promise=promise))
                    counts["outcome"] += 1
                elif op == "repayment":
                    await gate.import_repayments(SYSTEM, [{
                        "creditor": _str(doc, "creditor", n), "case_id": _str(doc, "case_id", n),
                        "amount": None, "paid_on": None, "settled": bool(doc.get("settled", True))}])
                    counts["repayment"] += 1
            except ScenarioError:
                raise
            except ApiError as exc:
                extra = f" {exc.details}" if exc.details else ""
                raise ScenarioError(n, f"{exc.detail}{extra}") from None
    return counts
