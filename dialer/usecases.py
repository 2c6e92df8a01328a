"""The use cases: one entry point (`Gate`) for the HTTP API, `dialgate simulate`, the
SIP gate and the MQTT command handler.

Each use case gathers its inputs inside one store transaction, asks the pure policy
core, and applies the result — attempt, decision-log record and outbox events written
in that same transaction, so an allowed answer exists only once all of it is committed.

Commands are imperative dataclasses (`RequestDial`, `CheckDial`, `LogOutcome`, …);
`Gate.request_dial(cmd)` etc. run them. Refusals by policy are values (`DialResult`
with `allowed=False`); exceptions are for requests that cannot be served (404, 403,
422…), and nothing is written when one is raised.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Mapping, Sequence
from zoneinfo import ZoneInfo

import structlog

from dialer import metrics
from dialer.errors import (
    AmbiguousCase,
    Conflict,
    Forbidden,
    InvalidImport,
    NoSuchAttempt,
    NoSuchCase,
    OutcomeConflict,
    StoreUnavailable,
    UnprocessableEntity,
)
from dialer.ids import new_id
from dialer.masking import mask_number, mask_optional, mask_text, redact_on_input
from dialer.model import (
    CHOSEN_STATUSES,
    DECISION_KINDS,
    DISPOSITIONS,
    FOLLOW_UP_STATUSES,
    RESULTS,
    AttemptRecord,
    CaseInput,
    CaseRecord,
    ChangeSource,
    ContactRecord,
    DecisionRecord,
    OutcomeRecord,
    Principal,
)
from dialer.dial_resolution import consumable, resolve_case, resolve_named
from dialer.ports import CaseStore, Clock, DialInputs, DialLedger, DialOutcome, DialQuery, Pbx, RecordingStore, UnitOfWork
from policy import (
    AgentSnapshot,
    Check,
    Decision,
    DialRequest,
    NumberFormatError,
    Policy,
    PolicyBook,
    evaluate,
    normalize_number,
)
from policy.holidays import HolidayCalendar, default_calendar

log = structlog.get_logger("dialgate.gate")

CHANNELS = ("api", "sip", "mqtt", "simulate")
DIAL_ROLES = frozenset({"collector", "supervisor", "pbx", "admin"})
CHECK_ROLES = frozenset({"collector", "supervisor", "compliance", "pbx", "admin"})
WHAT_IF_ROLES = frozenset({"compliance", "admin"})
OUTCOME_ROLES = frozenset({"collector", "supervisor", "pbx", "admin"})
DATA_ROLES = frozenset({"data", "admin"})
CASE_READ_ROLES = frozenset({"collector", "supervisor", "qa", "compliance", "data", "admin", "pbx"})
LOOKUP_ROLES = frozenset({"collector", "supervisor", "qa", "compliance", "data", "admin", "pbx"})
REVIEW_ROLES = frozenset({"compliance", "supervisor", "admin"})

RESULT_FLAGS = {
    "dispute": "dispute",
    "complaint_risk": "complaint_risk",
    "reported_deceased": "deceased",
    "reported_incarcerated": "incarcerated",
    "fraud_claim": "fraud_claim",
}


# Results that stop calls and must reach a supervisor at once (seed 001: 立即通报业务主管).
ALERTS: dict[str, tuple[str, str]] = {
    "complaint_risk": ("complaint risk: calls stopped, supervisor to follow up", "投诉倾向：已停止拨打，请主管跟进"),
    "dispute": ("dispute: calls stopped, supervisor first, then the creditor is consulted",
                "争议：已停止拨打，请业务主管立即处理并与委托方核实"),
}
NIGHT_END = time(20, 30)  # 夜间催收 must finish by 20:30 (seed 000)
CUSTOM_MAX_DAYS = 30  # a custom date without a commission end: at most a month ahead


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

    @property
    def decision_id(self) -> str:
        return self.record.decision_id

    def decision_json(self) -> dict[str, Any]:
        d = self.decision.to_dict()
        d["decision_id"] = self.record.decision_id
        return d


# ---------------------------------------------------------------------------------
# The gate
# ---------------------------------------------------------------------------------
class NonePbx:
    """PBX adapter `none`: the attempt is authorised and waits for the PBX to ask."""

    async def originate(self, attempt: AttemptRecord) -> None:
        return None


class AlwaysRecording:
    """Recording-store placeholder until the vault plugs in: reports available."""

    async def available(self) -> bool:
        return True


@dataclass
class Gate:
    store: CaseStore
    clock: Clock
    policies: PolicyBook
    pbx: Pbx = field(default_factory=NonePbx)
    recordings: RecordingStore = field(default_factory=AlwaysRecording)
    attempt_validity: timedelta = timedelta(seconds=120)
    originate_timeout_s: float = 5.0
    recorder_check_ttl_s: float = 1.0
    _background: set[asyncio.Task[Any]] = field(default_factory=set)
    _recorder_ok_until: float = 0.0
    _window_of: PolicyBook | None = None
    _window_cache: tuple[timedelta, int] = (timedelta(0), 1)

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
    def _agent(found: Principal | None, actor: Principal, agent_id: str) -> AgentSnapshot:
        """Who the policy checks: a collector or supervisor dials as themselves; others
        name an agent, who must exist and be visible to them."""
        if actor.role in ("collector", "supervisor"):
            if agent_id != actor.name:
                raise Forbidden(
                    f"{actor.role} {actor.name} may dial only as themselves, not as {agent_id!r}",
                    details={"agent_id": agent_id},
                )
            return AgentSnapshot(agent_id=actor.name, role=actor.role, creditors=actor.creditors)
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
            checks=tuple(
                {"rule_id": c.rule_id, "passed": c.passed, "detail": c.detail, "detail_zh": c.detail_zh}
                for c in decision.checks
            ),
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

    # -- RequestDial -----------------------------------------------------------------
    async def request_dial(self, cmd: RequestDial) -> DialResult:
        """Decide-and-reserve. Blocked decisions are results; 4xx-type problems raise."""
        require_role(cmd.actor, DIAL_ROLES, "dial")
        if cmd.channel not in CHANNELS:
            raise UnprocessableEntity(f"unknown channel {cmd.channel!r}", details={"field": "channel"})
        started = asyncio.get_running_loop().time()
        now = self._now()
        decision_id = new_id()
        structlog.contextvars.bind_contextvars(decision_id=decision_id)
        admit = getattr(self.pbx, "admit", None)  # a PBX that places calls may refuse now (503)
        if admit is not None and cmd.channel in ("api", "mqtt"):
            admit()
        # The recorder's "yes" is trusted for a while (see _faults): no coroutine for it then.
        faults = _NO_FAULTS if self._recorder_ok_until > asyncio.get_running_loop().time() else await self._faults()
        default_region = self.policies.default.default_region
        e164 = self._normalise(cmd.number, default_region)
        number = e164 or cmd.number.strip()
        case_id = cmd.case_id
        try:
            # Without a case id the ledger takes the locks once it knows the case.
            keys = (f"case:{case_id}", f"number:{number}") if case_id else ()
            async with self.store.ledger(keys) as ledger:
                lookback, bound = self._window()
                query = DialQuery(
                    number=number, agent_id=cmd.agent_id, at=now, since=now - lookback, case_id=case_id,
                    creditors=_narrow(cmd.actor, cmd.creditor), history_limit=bound,
                    agent=cmd.actor.role not in ("collector", "supervisor"),
                    consume=cmd.match_pending, attempt_id=cmd.attempt_id if cmd.match_pending else None,
                )
                inputs = await ledger.gather(query)
                case = resolve_case(query, inputs)
                pol = self.policies.for_creditor(case.creditor)
                if pol.default_region != default_region:
                    renumbered = self._normalise(cmd.number, pol.default_region) or cmd.number.strip()
                    if renumbered != number:  # read again for the number as the case's creditor writes it
                        number = renumbered
                        query = replace(query, number=number, case_id=case.case_id,
                                        creditors=frozenset({case.creditor}))
                        inputs = await ledger.gather(query)
                        case = resolve_case(query, inputs)
                agent = self._agent(inputs.agent, cmd.actor, cmd.agent_id)
                if inputs.pending_record is not None and consumable(query, case, inputs.pending):
                    result = await self._consume(ledger, cmd, case, inputs, now)
                else:
                    result = await self._decide_and_reserve(
                        ledger, cmd, case, agent, number, now, decision_id, faults, pol, inputs
                    )
        except StoreUnavailable as exc:
            result = await self._fail_closed(cmd, now, decision_id, number, exc)
        metrics.observe_decision(result.allowed, result.decision.rule_id, cmd.channel, asyncio.get_running_loop().time() - started)
        log.info(
            "dial.decided",
            allowed=result.allowed,
            rule_id=result.decision.rule_id,
            channel=cmd.channel,
            case_id=result.record.case_id if cmd.case_id == "" else cmd.case_id,
            agent_id=cmd.agent_id,
            number=mask_number(number),
            attempt_id=result.attempt.attempt_id if result.attempt else None,
            reused=result.reused,
        )
        if (result.allowed and result.attempt is not None and not result.reused and cmd.channel in ("api", "mqtt")
                and type(self.pbx) is not NonePbx):  # "none" places nothing: no task per dial for it
            self._spawn(self._originate(result.attempt), name=f"originate-{result.attempt.attempt_id}")
        return result

    async def _decide_and_reserve(
        self, ledger: DialLedger, cmd: RequestDial, case: CaseRecord, agent: AgentSnapshot,
        number: str, now: datetime, decision_id: str, faults: frozenset[str], pol: Policy, inputs: DialInputs,
    ) -> DialResult:
        lines = cmd.lines_by_creditor.get(case.creditor) if cmd.lines_by_creditor is not None else cmd.registered_lines
        since, read_since = now - pol.lookback, now - self._window()[0]
        request = DialRequest(
            case=case.snapshot(),
            number=number,
            agent=agent,
            channel=cmd.channel,
            faults=faults,
            appointments=_within(inputs.appointments, since, read_since),
            caller_line=cmd.caller_line,
            registered_lines=lines,
        )
        decision = evaluate(request, _within(inputs.history, since, read_since), pol, now)
        attempt = None
        if decision.allowed:
            contact = case.contact(number)
            attempt = AttemptRecord(
                attempt_id=new_id(),
                case_pk=case.pk,
                creditor=case.creditor,
                case_id=case.case_id,
                number=number,
                relation=contact.relation if contact else "third_party",
                agent_id=agent.agent_id,
                channel=cmd.channel,
                # A SIP-originated dial is already being placed.
                state="dialing" if cmd.channel == "sip" else "authorised",
                at=now,
                valid_until=now + self.attempt_validity,
                decision_id=decision_id,
            )
        record = self._record(
            decision_id=decision_id,
            kind="dial",
            now=now,
            decision=decision,
            actor=cmd.actor,
            agent_id=agent.agent_id,
            channel=cmd.channel,
            creditor=case.creditor,
            case_id=case.case_id,
            number=number,
            attempt_id=attempt.attempt_id if attempt else None,
            case_history_seq=case.history_seq,
        )
        record = await ledger.apply(DialOutcome(
            record=record, attempt=attempt, event_type="dial.allowed" if decision.allowed else "dial.blocked",
            event_payload=_decision_event(record, attempt), case_pk=case.pk,
        ))
        return DialResult(decision.allowed, decision, record, attempt)

    async def _consume(
        self, ledger: DialLedger, cmd: RequestDial, case: CaseRecord, inputs: DialInputs, now: datetime
    ) -> DialResult:
        """The SIP gate's dial of a click-to-dial authorisation: it becomes "dialing" and
        answers with the decision that authorised it (counted once)."""
        pending, record = inputs.pending, inputs.pending_record
        assert pending is not None and record is not None
        dialing = replace(pending, state="dialing")
        await ledger.apply(DialOutcome(
            record=record, consumed=dialing, event_type="attempt.state", case_pk=case.pk, at=now,
            event_payload={"attempt_id": pending.attempt_id, "state": "dialing", "channel": cmd.channel,
                           "decision_id": pending.decision_id, "agent_id": pending.agent_id},
        ))
        return DialResult(True, _decision_from_record(record), record, dialing, reused=True)

    async def _fail_closed(
        self, cmd: RequestDial, now: datetime, decision_id: str, number: str, exc: Exception
    ) -> DialResult:
        decision = self._store_unavailable(now)
        record = self._record(
            decision_id=decision_id,
            kind="dial",
            now=now,
            decision=decision,
            actor=cmd.actor,
            agent_id=cmd.agent_id,
            channel=cmd.channel,
            creditor=cmd.creditor or "-",
            case_id=cmd.case_id,
            number=number,
            attempt_id=None,
        )
        log.error("store.unavailable", error=str(exc), case_id=cmd.case_id)
        try:  # still try to log the refusal; the store may be back already
            async with self.store.ledger() as ledger:
                record = await ledger.apply(DialOutcome(record=record))
        except Exception as log_exc:  # noqa: BLE001
            log.error("decision.unlogged", decision_id=decision_id, error=str(log_exc))
        return DialResult(False, decision, record, None)

    async def record_refusal(
        self, cmd: RequestDial, rule_id: str, reason: str, reason_zh: str
    ) -> DecisionRecord:
        """Log a dial refused before the policy could run (the SIP gate's 603 for an
        INVITE whose case or agent it cannot tell), so compliance sees it among the
        blocked dials like any other refusal. Nothing is reserved. The record goes to
        the creditor's chain when the caller knows the creditor, else to chain "-"
        (visible to admins). Raises `StoreUnavailable` when it cannot be written."""
        require_role(cmd.actor, DIAL_ROLES, "dial")
        started = asyncio.get_running_loop().time()
        now = self._now()
        number = self._normalise(cmd.number, self.policies.default.default_region) or cmd.number.strip()
        decision = self._refused_outright(rule_id, reason, reason_zh, now)
        record = self._record(
            decision_id=new_id(), kind="dial", now=now, decision=decision, actor=cmd.actor,
            agent_id=cmd.agent_id or "-", channel=cmd.channel, creditor=cmd.creditor or "-",
            case_id=cmd.case_id or "-", number=number, attempt_id=None,
        )
        async with self.store.ledger() as ledger:
            record = await ledger.apply(DialOutcome(record=record))
        metrics.observe_decision(False, rule_id, cmd.channel, asyncio.get_running_loop().time() - started)
        return record

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _originate(self, attempt: AttemptRecord) -> None:
        try:
            await asyncio.wait_for(self.pbx.originate(attempt), timeout=self.originate_timeout_s)
        except Exception as exc:  # noqa: BLE001 - the attempt stays authorised and expires
            log.warning("pbx.originate_failed", attempt_id=attempt.attempt_id, error=str(exc))

    async def drain(self) -> None:
        """Wait for background originate calls (shutdown, tests)."""
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # -- CheckDial -------------------------------------------------------------------
    async def check_dial(self, cmd: CheckDial) -> DialResult:
        require_role(cmd.actor, CHECK_ROLES, "check dials")
        if cmd.at is not None and cmd.actor.role not in WHAT_IF_ROLES:
            raise Forbidden("only compliance and admin may ask what-if times (`at`)", details={"field": "at"})
        now = self._now()
        at = cmd.at or now
        decision_id = new_id()
        structlog.contextvars.bind_contextvars(decision_id=decision_id)
        faults = await self._faults()
        try:
            async with self.store.ledger() as ledger:
                # The case first: its creditor's region says how the number is written.
                scope = _narrow(cmd.actor, cmd.creditor)
                lookback, bound = self._window()
                default_region = self.policies.default.default_region
                number = self._normalise(cmd.number, default_region) or cmd.number.strip()
                query = DialQuery(
                    number=number, agent_id=cmd.agent_id, at=at, since=at - lookback, case_id=cmd.case_id,
                    creditors=scope, history_limit=bound, agent=cmd.actor.role not in ("collector", "supervisor"),
                )
                inputs = await ledger.gather(query)
                case = resolve_case(query, inputs)
                pol = self.policies.for_creditor(case.creditor)
                if pol.default_region != default_region:
                    renumbered = self._normalise(cmd.number, pol.default_region) or cmd.number.strip()
                    if renumbered != number:
                        number = renumbered
                        query = replace(query, number=number)
                        inputs = await ledger.gather(query)
                        case = resolve_case(query, inputs)
                if cmd.actor.role in ("collector", "supervisor") and cmd.agent_id != cmd.actor.name:
                    raise Forbidden(f"{cmd.actor.role} {cmd.actor.name} may check only their own dials",
                                    details={"agent_id": cmd.agent_id})
                agent = self._agent(inputs.agent, cmd.actor, cmd.agent_id)
                history = _within(inputs.history, at - pol.lookback, query.since)
                if cmd.at is not None:  # a what-if answers as the gate would have then: later attempts did not exist yet
                    history = tuple(h for h in history if h.at < at)
                request = DialRequest(
                    case=case.snapshot(), number=number, agent=agent, channel=cmd.channel,
                    faults=faults, appointments=_within(inputs.appointments, at - pol.lookback, query.since),
                )
                decision = evaluate(request, history, pol, at)
                record = await ledger.apply(DialOutcome(record=self._record(
                    decision_id=decision_id, kind="check", now=now, decision=decision, actor=cmd.actor,
                    agent_id=agent.agent_id, channel=cmd.channel, creditor=case.creditor,
                    case_id=case.case_id, number=number, attempt_id=None,
                    case_history_seq=case.history_seq,
                )))
        except StoreUnavailable:
            decision = self._store_unavailable(now)
            record = self._record(
                decision_id=decision_id, kind="check", now=now, decision=decision, actor=cmd.actor,
                agent_id=cmd.agent_id, channel=cmd.channel, creditor=cmd.creditor or "-",
                case_id=cmd.case_id, number=cmd.number, attempt_id=None,
            )
        return DialResult(decision.allowed, decision, record, None)

    # -- LogOutcome ------------------------------------------------------------------
    async def log_outcome(self, cmd: LogOutcome) -> tuple[OutcomeRecord, bool, CaseRecord]:
        """Record a call's outcome (idempotent). Returns (outcome, created, case after)."""
        require_role(cmd.actor, OUTCOME_ROLES, "log call outcomes")
        _validate_outcome(cmd)
        now = self._now()
        digest = hashlib.sha256(
            "|".join(
                [
                    cmd.attempt_id,
                    cmd.disposition,
                    cmd.result,
                    cmd.note,
                    cmd.callback_at.astimezone(timezone.utc).isoformat() if cmd.callback_at else "",
                    f"{cmd.promise.amount}@{cmd.promise.date.isoformat()}" if cmd.promise else "",
                ]
                # Only when given, so digests of outcomes logged without them stay the same.
                + ([f"{cmd.next_action_date}|{cmd.status}|{cmd.authorised_agent}"]
                   if cmd.next_action_date or cmd.status or cmd.authorised_agent else [])
            ).encode()
        ).hexdigest()
        async with self.store.write((f"attempt:{cmd.attempt_id}",)) as uow:
            attempt = await uow.attempts.get(cmd.attempt_id)
            if (
                attempt is None
                or not cmd.actor.can_see(attempt.creditor)
                or (cmd.actor.role == "collector" and attempt.agent_id != cmd.actor.name)
            ):
                raise NoSuchAttempt(f"no attempt {cmd.attempt_id!r}", details={"attempt_id": cmd.attempt_id})
            existing = await uow.attempts.get_outcome(cmd.attempt_id)
            case = await uow.cases.get(attempt.creditor, attempt.case_id)
            assert case is not None
            if existing is not None:
                if existing.request_digest == digest:
                    return existing, False, case
                raise OutcomeConflict(
                    f"attempt {cmd.attempt_id} already has a different outcome",
                    details={"attempt_id": cmd.attempt_id, "disposition": existing.disposition, "result": existing.result},
                )
            pol = self.policies.for_creditor(case.creditor)
            zone = ZoneInfo(pol.timezone)
            connected = cmd.disposition.startswith("connected")
            _check_promise_within_commission(cmd, case, now.astimezone(zone).date())
            outcome = OutcomeRecord(
                attempt_id=cmd.attempt_id,
                disposition=cmd.disposition,
                result=cmd.result,
                # Card and ID numbers typed into a note are not kept (dialer/masking.py).
                note=redact_on_input(cmd.note) or "",
                callback_at=cmd.callback_at,
                promise_amount=cmd.promise.amount if cmd.promise else None,
                promise_date=cmd.promise.date if cmd.promise else None,
                logged_by=cmd.actor.name,
                logged_at=now,
                request_digest=digest,
            )
            await uow.attempts.add_outcome(case.pk, outcome)
            await uow.attempts.set_state(cmd.attempt_id, "completed", connected=connected)

            flags = set(case.flags)
            contacts = {c.number: c for c in case.contacts}
            changes: dict[str, Any] = {}
            source = ChangeSource(kind="outcome", actor=cmd.actor.name, role=cmd.actor.role, ref=cmd.attempt_id,
                                  reason=f"{cmd.disposition}/{cmd.result}")
            if cmd.disposition == "invalid_number":
                await uow.cases.update_contact(case.pk, attempt.number, now=now, source=source, status="invalid")
                if attempt.number in contacts:
                    contacts[attempt.number] = replace(contacts[attempt.number], status="invalid")
            if cmd.result == "third_party_refuses_contact":
                await uow.cases.update_contact(case.pk, attempt.number, now=now, source=source, do_not_call=True)
                if attempt.number in contacts:
                    contacts[attempt.number] = replace(contacts[attempt.number], do_not_call=True)
            if cmd.result == "callback" and cmd.callback_at is not None:
                await uow.cases.add_appointment(case.pk, attempt.number, cmd.callback_at, cmd.attempt_id)
            if cmd.result in RESULT_FLAGS:
                # The agency's flag: no later case file lifts it, only a person with a reason.
                flags.add(RESULT_FLAGS[cmd.result])
                changes["add_flags"] = (RESULT_FLAGS[cmd.result],)
            status, next_date = follow_up(
                cmd, connected, now.astimezone(zone).date(), zone,
                any(c.status == "valid" and not c.do_not_call for c in contacts.values()),
                self.policies.calendar,
            )
            if case.status == "paused":
                status, next_date = "paused", None
            elif case.status in ("settled", "withdrawn", "returned"):
                status, next_date = "closed", None
            if cmd.status is not None or cmd.next_action_date is not None:
                status, next_date = chosen_follow_up(
                    cmd, status, next_date, now.astimezone(zone), case, self.policies.calendar
                )
            changes["follow_up_status"] = status
            changes["next_action_date"] = next_date
            await uow.cases.update(case.pk, now, source=source, **changes)
            ev = dict(creditor=case.creditor, case_pk=case.pk, case_id=case.case_id, occurred_at=now)
            await uow.outbox.add(
                "attempt.state", **ev,
                payload={"attempt_id": cmd.attempt_id, "state": "completed", "connected": connected,
                         "decision_id": attempt.decision_id, "agent_id": attempt.agent_id},
            )
            await uow.outbox.add(
                "outcome.logged", **ev,
                payload={"attempt_id": cmd.attempt_id, "disposition": cmd.disposition, "result": cmd.result,
                         "agent_id": attempt.agent_id, "logged_by": cmd.actor.name,
                         "number": mask_number(attempt.number)},
            )
            await uow.outbox.add(
                "case.updated", **ev,
                payload={"follow_up_status": status, "next_action_date": next_date.isoformat() if next_date else None,
                         "flags": sorted(flags), "status": case.status},
            )
            if cmd.result in ALERTS:
                message, message_zh = ALERTS[cmd.result]
                await uow.outbox.add(
                    f"alert.{cmd.result}", **ev,
                    payload={"attempt_id": cmd.attempt_id, "agent_id": attempt.agent_id,
                             "number": mask_number(attempt.number), "message": message, "message_zh": message_zh},
                )
            await uow.audit.add(
                at=now, actor=cmd.actor.name, action="outcome.logged", creditor=case.creditor,
                case_id=case.case_id, details={"attempt_id": cmd.attempt_id, "disposition": cmd.disposition,
                                               "result": cmd.result},
            )
            after = await uow.cases.get(case.creditor, case.case_id)
            assert after is not None
        log.info("outcome.logged", attempt_id=cmd.attempt_id, disposition=cmd.disposition, result=cmd.result)
        return outcome, True, after

    # -- imports ---------------------------------------------------------------------
    async def import_cases(self, actor: Principal, cases: Sequence[CaseInput]) -> dict[str, Any]:
        """Upsert validated cases in one transaction (all or nothing)."""
        require_role(actor, DATA_ROLES, "import cases")
        outside = [
            {"row": i + 1, "field": "creditor", "error": f"creditor {c.creditor!r} is outside your scope"}
            for i, c in enumerate(cases)
            if not actor.can_see(c.creditor)
        ]
        if outside:
            raise InvalidImport(outside)
        now = self._now()
        created = updated = 0
        import_id = new_id()
        source = ChangeSource(kind="import", actor=actor.name, role=actor.role, ref=import_id)
        async with self.store.write(tuple(f"case:{c.case_id}" for c in cases)) as uow:
            for row, c in enumerate(cases, start=1):
                rec, is_new = await uow.cases.upsert(c, now, source=source.at_row(row))
                created += is_new
                updated += not is_new
                await uow.outbox.add(
                    "case.updated", creditor=rec.creditor, case_pk=rec.pk, case_id=rec.case_id, occurred_at=now,
                    payload={"status": rec.status, "flags": sorted(rec.flags), "imported": True,
                             "assigned_agent": rec.assigned_agent, "contacts": len(rec.contacts)},
                )
            await uow.audit.add(
                at=now, actor=actor.name, action="cases.imported", creditor=None, case_id=None,
                details={"import_id": import_id, "created": created, "updated": updated,
                         "case_ids": [c.case_id for c in cases][:1000]},
            )
        return {"import_id": import_id, "created": created, "updated": updated, "total": len(cases)}

    async def import_repayments(self, actor: Principal, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Record repayments; a settled one closes its case. Unknown cases refuse the file."""
        require_role(actor, DATA_ROLES, "import repayments")
        now = self._now()
        closed = 0
        import_id = new_id()
        async with self.store.write(tuple(f"case:{r['case_id']}" for r in rows)) as uow:
            errors = []
            found: list[CaseRecord] = []
            for i, r in enumerate(rows):
                case = await uow.cases.get(r["creditor"], r["case_id"]) if actor.can_see(r["creditor"]) else None
                if case is None:
                    errors.append({"row": i + 1, "field": "case_id", "error": f"no case {r['case_id']!r} for creditor {r['creditor']!r}"})
                else:
                    found.append(case)
            if errors:
                raise InvalidImport(errors)
            for row, (r, case) in enumerate(zip(rows, found), start=1):
                await uow.cases.record_repayment(
                    case.creditor, case.case_id, r.get("amount"), r.get("paid_on"), bool(r["settled"]), actor.name, now
                )
                # Also when the bank's file already said settled: the repayment is what
                # holds the closure against a later file that says active again.
                if r["settled"] and (case.status != "settled" or case.status_hold != "repayment"):
                    # Held against later case files: a paid debtor is not called again
                    # because the bank's next file still says "active".
                    await uow.cases.update(
                        case.pk, now, status="settled", status_hold="repayment", follow_up_status="closed",
                        next_action_date=None,
                        source=ChangeSource(kind="repayment", actor=actor.name, role=actor.role, ref=import_id,
                                            row=row, reason="settled by repayment"),
                    )
                    closed += case.status != "settled"
                    await uow.outbox.add(
                        "case.updated", creditor=case.creditor, case_pk=case.pk, case_id=case.case_id,
                        occurred_at=now, payload={"status": "settled", "reason": "repayment", "follow_up_status": "closed"},
                    )
            await uow.audit.add(
                at=now, actor=actor.name, action="repayments.imported", creditor=None, case_id=None,
                details={"import_id": import_id, "rows": len(rows), "closed": closed},
            )
        return {"recorded": len(rows), "closed": closed}

    async def add_contact(
        self, actor: Principal, case_id: str, contact: ContactRecord, creditor: str | None = None
    ) -> CaseRecord:
        require_role(actor, DATA_ROLES, "add contacts")
        now = self._now()
        async with self.store.write((f"case:{case_id}", f"number:{contact.number}")) as uow:
            case = await self._resolve_case(uow, actor, case_id, creditor)
            source = ChangeSource(kind="api", actor=actor.name, role=actor.role,
                                  ref=f"POST /v1/cases/{case.case_id}/contacts", reason=contact.source)
            if not await uow.cases.add_contact(case.pk, replace(contact, added_at=now), source=source):
                raise Conflict(
                    f"case {case_id} already has number {mask_number(contact.number)}",
                    details={"case_id": case_id, "number": mask_number(contact.number)},
                )
            if contact.source == "info_repair" and case.status == "active":
                # 最新线索: a number found by information repair is followed up by the next day.
                zone = ZoneInfo(self.policies.for_creditor(case.creditor).timezone)
                await uow.cases.update(case.pk, now, source=source, follow_up_status="new_lead",
                                       next_action_date=now.astimezone(zone).date() + timedelta(days=1))
            await uow.outbox.add(
                "case.updated", creditor=case.creditor, case_pk=case.pk, case_id=case.case_id, occurred_at=now,
                payload={"contact_added": mask_number(contact.number), "relation": contact.relation,
                         "source": contact.source},
            )
            await uow.audit.add(
                at=now, actor=actor.name, action="contact.added", creditor=case.creditor, case_id=case.case_id,
                details={"number": mask_number(contact.number), "relation": contact.relation, "source": contact.source},
            )
            after = await uow.cases.get(case.creditor, case.case_id)
            assert after is not None
            return after

    # -- queries ---------------------------------------------------------------------
    async def case_view(self, actor: Principal, case_id: str, creditor: str | None = None) -> dict[str, Any]:
        require_role(actor, CASE_READ_ROLES, "read cases")
        async with self.store.read() as uow:
            case = await self._resolve_case(uow, actor, case_id, creditor)
            if actor.role == "collector" and case.assigned_agent != actor.name:
                raise NoSuchCase(f"no case {case_id!r}", details={"case_id": case_id})
            attempts = await uow.attempts.for_case(case.pk)
            outcomes = {o.attempt_id: o for o in await uow.attempts.outcomes_for_case(case.pk)}
            decisions = await uow.decisions.get_many(a.decision_id for a in attempts)
        show = (lambda n: n) if actor.sees_full_numbers else mask_number
        text = _same if actor.sees_full_numbers else mask_optional
        return {
            **case_json(case, show, text),
            "attempts": [
                {
                    "attempt_id": a.attempt_id,
                    "at": a.at.isoformat(),
                    "number": show(a.number),
                    "relation": a.relation,
                    "agent_id": a.agent_id,
                    "channel": a.channel,
                    "state": a.state,
                    "connected": a.connected,
                    "decision": decisions[a.decision_id].to_api() if a.decision_id in decisions else None,
                    "outcome": outcome_json(outcomes[a.attempt_id], text) if a.attempt_id in outcomes else None,
                }
                for a in attempts
            ],
        }

    async def lookup(self, actor: Principal, raw_number: str) -> list[dict[str, Any]]:
        require_role(actor, LOOKUP_ROLES, "look up callers")
        number = normalize_number(raw_number, self.policies.default.default_region)
        async with self.store.read() as uow:
            cases = await uow.cases.by_number(number, actor.scope())
        if actor.role == "collector":  # only the cases they may open (their assigned ones)
            cases = [c for c in cases if c.assigned_agent == actor.name]
        show = (lambda n: n) if actor.sees_full_numbers else mask_number
        text = _same if actor.sees_full_numbers else mask_optional
        out = []
        for c in cases:
            contact = c.contact(number)
            out.append(
                {
                    "case_id": c.case_id,
                    "creditor": c.creditor,
                    "debtor_name": text(c.debtor_name),
                    "status": c.status,
                    "assigned_agent": c.assigned_agent,
                    "follow_up_status": c.follow_up_status,
                    "number": show(number),
                    "relation": contact.relation if contact else None,
                    "contact_name": text(contact.name) if contact else None,
                }
            )
        return out

    async def blocked_dials(
        self,
        actor: Principal,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        creditor: str | None = None,
        agent_id: str | None = None,
        rule_id: str | None = None,
        case_id: str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> tuple[list[DecisionRecord], int | None]:
        require_role(actor, REVIEW_ROLES, "review blocked dials")
        scope = _narrow(actor, creditor)
        async with self.store.read() as uow:
            rows, nxt = await uow.decisions.query(
                allowed=False, creditors=scope, since=since, until=until, agent_id=agent_id,
                rule_id=rule_id, case_id=case_id, after=after, limit=limit,
            )
        return [r for _, r in rows], nxt

    async def blocked_summary(
        self, actor: Principal, *, since: datetime | None, until: datetime | None, creditor: str | None
    ) -> dict[str, Any]:
        require_role(actor, REVIEW_ROLES, "review blocked dials")
        scope = _narrow(actor, creditor)
        async with self.store.read() as uow:
            return await uow.decisions.blocked_summary(
                creditors=scope, since=since, until=until, tz=self.policies.default.timezone
            )

    async def recheck_attempt(self, attempt_id: str, actor: Principal) -> Decision:
        """Decide again for a click-to-dial attempt just before its debtor leg is dialled
        (the agent has answered; a stop may have arrived meanwhile). The
        attempt's own reservation is left out of the history so it does not count
        against itself. Logged as a `recheck` decision."""
        now = self._now()
        faults = await self._faults()
        lookback, _ = self._window()
        async with self.store.ledger() as ledger:
            # Only the attempt is named: the ledger reads its number, agent and case.
            query = DialQuery(number="", agent_id="", at=now, since=now - lookback, attempt_id=attempt_id)
            inputs = await ledger.gather(query)
            attempt = inputs.pending
            if attempt is None:
                raise NoSuchAttempt(f"no attempt {attempt_id!r}", details={"attempt_id": attempt_id})
            case = inputs.case
            if case is None:
                raise NoSuchCase(f"no case {attempt.case_id!r}", details={"case_id": attempt.case_id})
            pol = self.policies.for_creditor(case.creditor)
            user = inputs.agent
            agent = AgentSnapshot(
                agent_id=attempt.agent_id,
                role=user.role if user else "collector",
                creditors=user.creditors if user else frozenset({case.creditor}),
            )
            history = list(_within(inputs.history, now - pol.lookback, query.since))
            own = next((i for i, h in enumerate(history) if h.kind == "attempt" and h.number == attempt.number
                        and h.case_id == case.case_id and abs((h.at - attempt.at).total_seconds()) < 0.001), None)
            if own is not None:
                del history[own]
            request = DialRequest(case=case.snapshot(), number=attempt.number, agent=agent, channel=attempt.channel,
                                  faults=faults, appointments=_within(inputs.appointments, now - pol.lookback, query.since))
            decision = evaluate(request, history, pol, now)
            await ledger.apply(DialOutcome(record=self._record(
                decision_id=new_id(), kind="recheck", now=now, decision=decision, actor=actor,
                agent_id=attempt.agent_id, channel=attempt.channel, creditor=case.creditor,
                case_id=case.case_id, number=attempt.number, attempt_id=attempt_id,
                case_history_seq=case.history_seq,
            )))
        return decision

    async def expire_attempts(self) -> int:
        """Mark authorised attempts the PBX never placed as expired (they still count)."""
        now = self._now()
        n = 0
        while True:
            # Small transactions: a click-to-dial waiting behind the write lock should not
            # wait for a thousand expiries at once.
            async with self.store.write() as uow:
                batch = await uow.attempts.expired(now, limit=50)
                for a in batch:
                    await uow.attempts.set_state(a.attempt_id, "expired")
                    await uow.outbox.add(
                        "attempt.state", creditor=a.creditor, case_pk=a.case_pk, case_id=a.case_id,
                        occurred_at=now,
                        payload={"attempt_id": a.attempt_id, "state": "expired", "decision_id": a.decision_id,
                                 "agent_id": a.agent_id},
                    )
            n += len(batch)
            if len(batch) < 50:
                return n
            await asyncio.sleep(0)


def _within(events: tuple[Any, ...], since: datetime, read_since: datetime) -> tuple[Any, ...]:
    """`events` (history or appointments) at or after `since`: the ledger read from
    `read_since`, the longest look-back of any policy; the case's may look back less."""
    if since <= read_since:
        return events
    return tuple(e for e in events if e.at >= since)


def _narrow(actor: Principal, creditor: str | None) -> frozenset[str] | None:
    scope = actor.scope()
    if creditor is None:
        return scope
    if scope is not None and creditor not in scope:
        return frozenset()  # another creditor's data is invisible, not forbidden
    return frozenset({creditor})


def _validate_outcome(cmd: LogOutcome) -> None:
    errors = []
    if cmd.disposition not in DISPOSITIONS:
        errors.append({"field": "disposition", "error": f"expected one of {', '.join(DISPOSITIONS)}"})
    if cmd.result not in RESULTS:
        errors.append({"field": "result", "error": f"expected one of {', '.join(RESULTS)}"})
    connected = cmd.disposition.startswith("connected")
    if cmd.result != "none" and not connected and cmd.disposition in DISPOSITIONS:
        errors.append({"field": "result", "error": "a result other than none needs a connected call"})
    if cmd.result == "callback" and cmd.callback_at is None:
        errors.append({"field": "callback_at", "error": "required when result is callback"})
    if cmd.result in ("promise_to_pay", "instalment") and cmd.promise is None:
        errors.append({"field": "promise", "error": "required (amount and date) for promise_to_pay and instalment"})
    if cmd.result == "third_party_refuses_contact" and cmd.disposition != "connected_third_party":
        errors.append({"field": "result", "error": "third_party_refuses_contact needs disposition connected_third_party"})
    if errors:
        raise UnprocessableEntity("invalid outcome", details={"errors": errors})


def _check_promise_within_commission(cmd: LogOutcome, case: CaseRecord, today: date) -> None:
    """A promise dated before today (the creditor's zone) is refused (422): its follow-up
    date would silently become today, not the day before the promise. A promise dated
    after the commission end is refused too, not recorded as a promise: the agency's
    mandate ends first, so nobody would follow it up; the creditor extends the
    commission first (POST /v1/cases/{id}/commission)."""
    if cmd.promise is not None and cmd.promise.date < today:
        raise UnprocessableEntity(
            "promise date in the past",
            details={"errors": [{
                "field": "promise.date",
                "error": f"{cmd.promise.date.isoformat()} is before today ({today.isoformat()} in the creditor's zone)",
                "error_zh": f"承诺日期早于今天（{today.isoformat()}）",
            }]},
        )
    if cmd.promise is None or case.commission_end is None or cmd.promise.date <= case.commission_end:
        return
    end = case.commission_end.isoformat()
    raise UnprocessableEntity(
        "promise date after the commission end",
        details={"errors": [{
            "field": "promise.date",
            "error": f"{cmd.promise.date.isoformat()} is after the commission end {end}: ask the creditor to "
                     f"extend the commission first",
            "error_zh": f"承诺日期晚于委托期结束日 {end}，请先申请延长委托期",
        }]},
    )


def chosen_follow_up(
    cmd: LogOutcome,
    status: str,
    next_date: date | None,
    local_now: datetime,
    case: CaseRecord,
    calendar: HolidayCalendar | None = None,
) -> tuple[str, date | None]:
    """The collector's own next action date and status (催记), within the rules' bounds:

    * no status: a date from today up to the rule's date — a follow-up may be brought
      forward, never pushed past what the status requires;
    * urgent (紧急): within 3 working days (default: the next working day);
    * night (夜间催收): today, and only before 20:30 local time;
    * custom (自定义): any day from today to the commission end (a month without one).

    A stop or an agreement (dispute, complaint risk, deceased…, promise, instalment,
    callback) and a paused or closed case keep their own status. Refusals are 422s that
    name the field, in English and Chinese."""
    today = local_now.date()
    errors: list[dict[str, str]] = []

    def err(field_: str, msg: str, msg_zh: str) -> None:
        errors.append({"field": field_, "error": msg, "error_zh": msg_zh})

    d = cmd.next_action_date
    end = case.commission_end
    if cmd.status is not None and cmd.status not in CHOSEN_STATUSES:
        err("status", f"expected one of {', '.join(CHOSEN_STATUSES)}", f"可选状态：{'、'.join(CHOSEN_STATUSES)}")
    elif next_date is None or status not in ("waiting", "reachable", "lost_contact"):
        if status in ("paused", "closed"):
            err("next_action_date" if cmd.status is None else "status",
                f"the case is {status}: no follow-up until it is reopened", f"案件{FOLLOW_UP_STATUSES[status]}，不安排跟进")
        else:
            err("status" if cmd.status else "next_action_date",
                f"result {cmd.result} sets its own follow-up ({status})",
                f"结果 {cmd.result} 已决定跟进状态（{FOLLOW_UP_STATUSES.get(status, status)}）")
    elif cmd.status is None:
        assert d is not None
        if not today <= d <= next_date:
            err("next_action_date", f"must be from {today} to {next_date} (the {status} rule's date)",
                f"须在 {today} 至 {next_date} 之间（{FOLLOW_UP_STATUSES[status]}规则）")
        status, next_date = status, d
    elif cmd.status == "urgent":
        latest = _add_workdays(today, 3, calendar)
        d = d or _add_workdays(today, 1, calendar)
        if not today <= d <= latest:
            err("next_action_date", f"urgent follow-up is within 3 working days: {today} to {latest}",
                f"紧急案件须在3个工作日内跟进：{today} 至 {latest}")
        status, next_date = "urgent", d
    elif cmd.status == "night":
        d = d or today
        if d != today:
            err("next_action_date", f"night collection is the same evening: {today}", f"夜间催收须为当晚：{today}")
        elif local_now.time() >= NIGHT_END:
            err("status", f"night collection must finish by {NIGHT_END:%H:%M}; it is {local_now:%H:%M}",
                f"夜间催收须在 {NIGHT_END:%H:%M} 前完成，现在是 {local_now:%H:%M}")
        status, next_date = "night", d
    else:  # custom
        latest = end or today + timedelta(days=CUSTOM_MAX_DAYS)
        if d is None:
            err("next_action_date", "required for a custom status", "自定义状态须填写下次跟进日期")
        elif not today <= d <= latest:
            err("next_action_date", f"must be from {today} to {latest}", f"须在 {today} 至 {latest} 之间")
        status, next_date = "custom", d
    if not errors and end is not None and next_date is not None and next_date > end:
        err("next_action_date", f"after the commission end {end}", f"晚于委托期结束日 {end}")
    if errors:
        raise UnprocessableEntity("next action outside the rules' bounds", details={"errors": errors})
    return status, next_date


def _add_workdays(day: date, n: int, calendar: HolidayCalendar | None) -> date:
    # The policy's PRC calendar: statutory days for any year, breaks and make-up days
    # where the State Council's arrangement is known.
    return (calendar or default_calendar()).add_workdays(day, n)


def follow_up(
    cmd: LogOutcome, connected: bool, today: date, zone: ZoneInfo, dialable_left: bool,
    calendar: HolidayCalendar | None = None,
) -> tuple[str, date | None]:
    """The case's follow-up status and next action date after an outcome (seed 000)."""
    r = cmd.result
    # Only the holder or an authorised agent can promise (seed 000): a relative's word is
    # a reachable contact, not 承诺还款.
    promiser = cmd.disposition == "connected_self" or cmd.authorised_agent
    if r in ("promise_to_pay", "instalment") and cmd.promise is not None and promiser:
        return ("promise" if r == "promise_to_pay" else "instalment"), max(today, cmd.promise.date - timedelta(days=1))
    if r == "callback" and cmd.callback_at is not None:
        return "callback", cmd.callback_at.astimezone(zone).date()
    if r == "dispute":
        return "dispute", today  # supervisor first, today
    if r == "complaint_risk":
        return "complaint_risk", today  # escalate within minutes
    if r in ("reported_deceased", "reported_incarcerated", "fraud_claim"):
        return "deceased_incarcerated_fraud", today + timedelta(days=2)
    if not dialable_left:
        return "lost_contact", _add_workdays(today, 6, calendar)
    if connected:
        return "reachable", _add_workdays(today, 3, calendar)
    return "waiting", today + timedelta(days=2)


def _same(value: Any) -> Any:
    return value


def case_json(case: CaseRecord, show: Any, text: Any = _same) -> dict[str, Any]:
    """`show` for the contacts' numbers, `text` for every free-text field: identity for
    roles with full-number rights, else the masks of dialer/masking.py."""
    return {
        "case_id": case.case_id,
        "creditor": case.creditor,
        "debtor_name": text(case.debtor_name),
        "status": case.status,
        "commission_start": case.commission_start.isoformat() if case.commission_start else None,
        "commission_end": case.commission_end.isoformat() if case.commission_end else None,
        "assigned_agent": case.assigned_agent,
        "flags": sorted(case.flags),
        "amount_due": case.amount_due,
        "overdue_days": case.overdue_days,
        "contacts": [
            {
                "number": show(c.number),
                "relation": c.relation,
                "name": text(c.name),
                "tz": c.tz,
                "status": c.status,
                "do_not_call": c.do_not_call,
                "source": c.source,
            }
            for c in case.contacts
        ],
        "next_action": {
            "status": case.follow_up_status,
            "status_zh": FOLLOW_UP_STATUSES.get(case.follow_up_status, case.follow_up_status),
            "date": case.next_action_date.isoformat() if case.next_action_date else None,
        },
    }


def outcome_json(o: OutcomeRecord, text: Any = _same) -> dict[str, Any]:
    return {
        "attempt_id": o.attempt_id,
        "disposition": o.disposition,
        "result": o.result,
        "note": text(o.note),
        "callback_at": o.callback_at.astimezone(timezone.utc).isoformat() if o.callback_at else None,
        "promise": {"amount": o.promise_amount, "date": o.promise_date.isoformat()} if o.promise_date else None,
        "logged_by": o.logged_by,
        "logged_at": o.logged_at.astimezone(timezone.utc).isoformat(),
    }


def _decision_event(record: DecisionRecord, attempt: AttemptRecord | None) -> dict[str, Any]:
    return {
        "decision_id": record.decision_id,
        "attempt_id": attempt.attempt_id if attempt else None,
        "state": attempt.state if attempt else None,
        "valid_until": attempt.valid_until.isoformat() if attempt else None,
        "agent_id": record.agent_id,
        "channel": record.channel,
        "number": record.number_masked,
        "rule_id": record.rule_id,
        "next_allowed_at": record.next_allowed_at.isoformat() if record.next_allowed_at else None,
        "policy_version": record.policy_version,
    }


def _decision_from_record(r: DecisionRecord) -> Decision:
    return Decision(
        allowed=r.allowed,
        rule_id=r.rule_id,
        reason=r.reason,
        reason_zh=r.reason_zh,
        next_allowed_at=r.next_allowed_at,
        checks=tuple(Check(c["rule_id"], c["passed"], c["detail"], c.get("detail_zh", "")) for c in r.checks),
        policy_version=r.policy_version,
        evaluated_at=r.evaluated_at,
        inputs_used=r.inputs_used,
    )


_JSON_LEAVES = frozenset({int, float, bool, type(None)})
_NO_FAULTS: frozenset[str] = frozenset()


def _masked_json(value: Any) -> Any:
    """`value` as JSON values (what `Decision.to_dict` does to `inputs_used`, without
    building the rest of the dict) with numbers masked in every string, in one walk
    (`mask_deep` over `to_dict`'s output, fused: this runs for every decision)."""
    kind = type(value)
    if kind is str:
        return mask_text(value)
    if kind in _JSON_LEAVES:  # most leaves: no isinstance against typing's ABCs (slow)
        return value
    if kind is dict or isinstance(value, Mapping):
        out = {}
        for k, v in value.items():  # leaves inline: one call per nested value only
            vk = type(v)
            if vk is str:
                out[k if type(k) is str else str(k)] = mask_text(v)
            elif vk in _JSON_LEAVES:
                out[k if type(k) is str else str(k)] = v
            else:
                out[k if type(k) is str else str(k)] = _masked_json(v)
        return out
    if kind is list or kind is tuple or isinstance(value, (list, tuple, set, frozenset)):
        return [_masked_json(v) for v in value]
    if isinstance(value, (datetime, date)):
        return mask_text(value.isoformat())
    return value


def _masked_inputs(inputs: Mapping[str, Any] | None) -> dict[str, Any]:
    return _masked_json(inputs or {})  # type: ignore[no-any-return]
