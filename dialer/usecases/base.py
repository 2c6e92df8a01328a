"""What every use case shares: the gate's dependencies and the helpers that build a
decision record, refuse outright, and ask the recorder."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

from dialer.dial_resolution import resolve_named
from dialer.errors import Forbidden, NoSuchCase, UnprocessableEntity
from dialer.masking import mask_number
from dialer.model import DECISION_KINDS, AttemptRecord, CaseRecord, DecisionRecord, Principal
from dialer.ports import CaseStore, Clock, Pbx, RecordingStore, UnitOfWork
from dialer.usecases.commands import _narrow, history_bound
from dialer.usecases.presenters import _masked_inputs
from policy import NO_AGENT, AgentSnapshot, Check, Decision, NumberFormatError, PolicyBook, normalize_number

_NO_FAULTS: frozenset[str] = frozenset()


class NonePbx:
    """PBX adapter `none`: the attempt is authorised and waits for the PBX to ask."""

    def admit(self) -> None:
        return None  # nothing is placed here: the PBX's own INVITE is gated

    async def originate(self, attempt: AttemptRecord) -> None:
        return None


class AlwaysRecording:
    """Recording-store placeholder until the vault plugs in: reports available."""

    async def available(self) -> bool:
        return True


class GateBase:
    """The dependencies (the `Gate` dataclass's fields) and shared helpers."""

    store: CaseStore
    clock: Clock
    policies: PolicyBook
    pbx: Pbx
    recordings: RecordingStore
    attempt_validity: timedelta
    originate_timeout_s: float
    recorder_check_ttl_s: float
    _background: set[asyncio.Task[Any]]
    _recorder_ok_until: float
    _window_of: PolicyBook | None
    _window_cache: tuple[timedelta, int]

    # -- helpers ---------------------------------------------------------------------
    def _now(self) -> datetime:
        """The clock's time in UTC: everything the service stores and answers is UTC."""
        return self.clock.now().astimezone(timezone.utc)

    def _normalise(self, raw: str, region: str) -> str | None:
        try:
            return normalize_number(raw, region)
        except NumberFormatError:
            return None

    async def _resolve_case(
        self, uow: UnitOfWork, actor: Principal, case_id: str, creditor: str | None
    ) -> CaseRecord:
        """The case a request naming `case_id` (and maybe its creditor) means."""
        scope = _narrow(actor, creditor)
        found = await uow.cases.find(case_id, scope) if scope is None or scope else []
        return resolve_named(case_id, found)

    def _window(self) -> tuple[timedelta, int]:
        """The longest look-back and history bound of any creditor's policy: what a dial
        reads before it knows its case (then narrowed to the case's policy)."""
        book = self.policies
        if self._window_of is not book:
            pols = [book.default, *book.creditors.values()]
            self._window_cache = (max(p.lookback for p in pols), max(history_bound(p) for p in pols))
            self._window_of = book
        return self._window_cache

    @staticmethod
    def _agent(found: Principal | None, actor: Principal, agent_id: str, case: CaseRecord) -> AgentSnapshot:
        """Who the policy checks: a collector or supervisor dials as themselves; others
        name an agent, who must exist and be visible to them. `found`: the agent's user
        as the decision's unit read it, so a user disabled or a creditor revoked after
        the request was authenticated is the user the decision sees."""
        if actor.role in ("collector", "supervisor"):
            if agent_id != actor.name:
                raise Forbidden(
                    f"{actor.role} {actor.name} may dial only as themselves, not as {agent_id!r}",
                    details={"agent_id": agent_id},
                )
            if found is None or found.role != actor.role:  # disabled (or gone) since the request was authenticated
                return AgentSnapshot(agent_id=actor.name, role=NO_AGENT, creditors=frozenset())
            if case.creditor not in found.creditors:
                # revoked since: the case is out of the caller's scope, as a fresh request finds it
                raise NoSuchCase(f"no case {case.case_id!r}", details={"case_id": case.case_id})
            return AgentSnapshot(agent_id=actor.name, role=actor.role, creditors=found.creditors)
        user = found
        if user is not None and not actor.unscoped and not (user.creditors & actor.creditors):
            user = None  # another creditor's user: answered as unknown, so names cannot be probed
        if user is None:
            raise UnprocessableEntity(f"no agent {agent_id!r}", details={"field": "agent_id", "agent_id": agent_id})
        return AgentSnapshot(agent_id=user.name, role=user.role, creditors=user.creditors)

    def _record(
        self,
        *,
        decision_id: str,
        kind: str,
        now: datetime,
        decision: Decision,
        actor: Principal,
        agent_id: str,
        channel: str,
        creditor: str,
        case_id: str,
        number: str,
        attempt_id: str | None,
        case_history_seq: int | None = None,
    ) -> DecisionRecord:
        """`case_history_seq`: the position in the case's history the decision was made
        on, so why a call was allowed can be answered from the records alone."""
        if kind not in DECISION_KINDS:  # the review lists kinds by name (REVIEWED_KINDS)
            raise ValueError(f"unknown decision kind {kind!r}")
        inputs = _masked_inputs(decision.inputs_used)
        if case_history_seq is not None:
            inputs["case_history_seq"] = case_history_seq
        return DecisionRecord(
            decision_id=decision_id,
            kind=kind,
            at=now,
            evaluated_at=decision.evaluated_at,
            user=actor.name,
            agent_id=agent_id,
            channel=channel,
            creditor=creditor,
            case_id=case_id,
            number_masked=mask_number(number),
            attempt_id=attempt_id,
            allowed=decision.allowed,
            rule_id=decision.rule_id,
            reason=decision.reason,
            reason_zh=decision.reason_zh,
            next_allowed_at=decision.next_allowed_at,
            policy_version=decision.policy_version,
            checks=tuple([  # a list first: no generator resumed per check
                {"rule_id": c.rule_id, "passed": c.passed, "detail": c.detail, "detail_zh": c.detail_zh}
                for c in decision.checks
            ]),
            inputs_used=inputs,
        )

    def _refused_outright(self, rule_id: str, detail: str, detail_zh: str, now: datetime) -> Decision:
        """A block decided without the policy (the store is down; the SIP gate cannot
        tell the case or agent): one failed check, nothing to wait for."""
        return Decision(
            allowed=False,
            rule_id=rule_id,
            reason=f"{rule_id}: {detail}",
            reason_zh=detail_zh,
            next_allowed_at=None,
            checks=(Check(rule_id, False, detail, detail_zh),),
            policy_version=self.policies.version,
            evaluated_at=now,
        )

    def _store_unavailable(self, now: datetime) -> Decision:
        return self._refused_outright(
            "system.store_unavailable", "the case store is unavailable: failing closed",
            "案件库不可用，拒绝拨打（故障即拒绝）", now,
        )

    async def _faults(self) -> frozenset[str]:
        """`recording_unavailable` unless the recorder says it can record. A "yes" is
        trusted for `recorder_check_ttl_s` (the vault's check is a thread hop with a
        statvfs; per decision it cost more than the policy); a "no" is never cached,
        so the gate reopens as soon as the recorder is back."""
        loop = asyncio.get_running_loop()
        if self._recorder_ok_until > loop.time():
            return frozenset()
        try:
            async with asyncio.timeout(2.0):  # no extra task per decision, unlike wait_for
                ok = await self.recordings.available()
        except Exception:  # noqa: BLE001 - any failure of the recorder means "not recording"
            ok = False
        if not ok:
            self._recorder_ok_until = 0.0
            return frozenset({"recording_unavailable"})
        self._recorder_ok_until = loop.time() + self.recorder_check_ttl_s
        return frozenset()


def _within(events: tuple[Any, ...], since: datetime, read_since: datetime) -> tuple[Any, ...]:
    """`events` (history or appointments) at or after `since`: the ledger read from
    `read_since`, the longest look-back of any policy; the case's may look back less."""
    if since <= read_since:
        return events
    return tuple(e for e in events if e.at >= since)
