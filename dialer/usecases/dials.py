"""Decide-and-reserve (`RequestDial`), dial checks (`CheckDial`) and the recheck before a
click-to-dial's debtor leg: each gathers its inputs from the `DialLedger` once, decides
with the pure policy, and applies the result once."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from dialer import attempt_state, metrics
from dialer.dial_resolution import consumable, resolve_case
from dialer.errors import (
    Forbidden, NoSuchAttempt, NoSuchCase, RequestDecided, RequestReused, StoreUnavailable, UnprocessableEntity,
)
from dialer.ids import new_id
from dialer.masking import mask_number
from dialer.model import AttemptRecord, CaseRecord, DecisionRecord, Principal
from dialer.ports import DialInputs, DialLedger, DialOutcome, DialQuery, DialReplay, shared_key
from dialer.usecases.base import _NO_FAULTS, GateBase, NonePbx, _within
from dialer.usecases.commands import (
    CHANNELS, CHECK_ROLES, DIAL_ROLES, WHAT_IF_ROLES, CheckDial, DialResult, RequestDial, _narrow, require_role,
)
from dialer.usecases.presenters import _decision_event, _decision_from_record
from policy import NO_AGENT, AgentSnapshot, Decision, DialRequest, Policy, evaluate

AGENT_NOT_ASSIGNED = "agent.not_assigned"

log = structlog.get_logger("dialgate.gate")

# An INVITE client transaction gives up 64*T1 after it began (RFC 3261 Timer B): a
# retransmission, or a proxy's retry at another gate, comes within it. The same INVITE
# later is no retry, and a PBX given its 302 again would place a call nobody decided.
INVITE_RETRY_WINDOW = timedelta(seconds=32)


class DialUseCases(GateBase):
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
        if cmd.channel in ("api", "mqtt"):  # a PBX that places calls may refuse now (503)
            self.pbx.admit()
        # The recorder's "yes" is trusted for a while (see _faults): no coroutine for it then.
        faults = _NO_FAULTS if self._recorder_ok_until > asyncio.get_running_loop().time() else await self._faults()
        default_region = self.policies.default.default_region
        e164 = self._normalise(cmd.number, default_region)
        number = e164 or cmd.number.strip()
        case_id = cmd.case_id
        identity, digest = _request_identity(cmd)
        lookback, bound = self._window()
        query = DialQuery(
            number=number, agent_id=cmd.agent_id, at=now, since=now - lookback, case_id=case_id,
            creditors=_narrow(cmd.actor, cmd.creditor), history_limit=bound,
            consume=cmd.match_pending, attempt_id=cmd.attempt_id if cmd.match_pending else None,
            request=identity,
        )
        try:
            # Without a case id the ledger takes the case's locks once it knows the case. The
            # agent's lock orders the decision with a change to the agent's user (disabled, a
            # creditor revoked), whose row the unit reads.
            keys = (*((shared_key(f"agent:{cmd.agent_id}"),) if cmd.agent_id else ()),
                    *((f"case:{case_id}", f"number:{number}") if case_id else ()))
            async with self.store.ledger(keys) as ledger:
                inputs = await ledger.gather(query)
                if inputs.replay is not None:
                    if _late_invite(inputs.replay, digest, cmd, now):
                        return await self._refuse_late_invite(ledger, inputs.replay, cmd, now, decision_id, number)
                    return _for_caller(cmd.actor, _replayed(inputs.replay, digest, cmd))
                case = resolve_case(query, inputs)
                pol = self.policies.for_creditor(case.creditor)
                if pol.default_region != default_region:
                    renumbered = self._normalise(cmd.number, pol.default_region) or cmd.number.strip()
                    if renumbered != number:  # read again for the number as the case's creditor writes it
                        number = renumbered
                        query = query._replace(number=number, case_id=case.case_id,
                                        creditors=frozenset({case.creditor}))
                        inputs = await ledger.gather(query)
                        case = resolve_case(query, inputs)
                # The read may have waited (for the case's locks, for the writer): the decision
                # is made at the time its inputs are in hand, not allowed on an older one.
                now = max(now, self._now())
                agent = self._agent(inputs.agent, cmd.actor, cmd.agent_id, case)
                if inputs.pending_record is not None and consumable(query, case, inputs.pending):
                    result = await self._consume(
                        ledger, cmd, query, case, agent, inputs, now, decision_id, faults, pol, identity, digest
                    )
                else:
                    result = await self._decide_and_reserve(
                        ledger, cmd, case, agent, number, now, decision_id, faults, pol, inputs, identity, digest
                    )
        except RequestDecided:
            # Another instance decided this request meanwhile (this unit rolled back): its answer.
            try:
                async with self.store.ledger() as ledger:
                    inputs = await ledger.gather(query)
                if inputs.replay is not None:
                    return _for_caller(cmd.actor, _replayed(inputs.replay, digest, cmd))
                raise StoreUnavailable("a request identity was taken but its answer cannot be read")
            except StoreUnavailable as exc:
                result = await self._fail_closed(cmd, now, decision_id, number, exc)
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
            # the record's own mask of `number` when the record is this decision's
            number=result.record.number_masked if result.record.decision_id == decision_id else mask_number(number),
            attempt_id=result.attempt.attempt_id if result.attempt else None,
            reused=result.reused,
        )
        if (result.allowed and result.attempt is not None and not result.reused and cmd.channel in ("api", "mqtt")
                and type(self.pbx) is not NonePbx):  # "none" places nothing: no task per dial for it
            self._spawn(self._originate(result.attempt), name=f"originate-{result.attempt.attempt_id}")
        return _for_caller(cmd.actor, result)

    async def _decide_and_reserve(
        self, ledger: DialLedger, cmd: RequestDial, case: CaseRecord, agent: AgentSnapshot,
        number: str, now: datetime, decision_id: str, faults: frozenset[str], pol: Policy, inputs: DialInputs,
        identity: str | None = None, digest: str = "",
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
            event_payload=_decision_event(record, attempt), case_pk=case.pk, request=identity, request_digest=digest,
        ))
        return DialResult(decision.allowed, decision, record, attempt)

    async def _consume(
        self, ledger: DialLedger, cmd: RequestDial, query: DialQuery, case: CaseRecord, agent: AgentSnapshot,
        inputs: DialInputs, now: datetime, decision_id: str, faults: frozenset[str], pol: Policy,
        identity: str | None = None, digest: str = "",
    ) -> DialResult:
        """The SIP gate's dial of a click-to-dial authorisation: it becomes "dialing" and
        answers with the decision that authorised it (counted once). The rules are asked
        again first, as the click-to-dial's own recheck does: the debtor is dialled only
        now, and a stop, a closed window or a recorder gone since the click forbids it; and
        the INVITE's caller line must be registered, as for any SIP dial."""
        pending, record = inputs.pending, inputs.pending_record
        assert pending is not None and record is not None
        # The case's history and appointments: the consuming read skipped them.
        now_inputs = await ledger.gather(query._replace(consume=False, attempt_id=pending.attempt_id, request=None))
        current = now_inputs.case if now_inputs.case is not None else case
        # The INVITE places the call on its own line: checked as any SIP dial's is.
        lines = (cmd.lines_by_creditor.get(current.creditor) if cmd.lines_by_creditor is not None
                 else cmd.registered_lines)
        decision = self._decide_again(pending, current, agent, faults, pol, now_inputs, now, query.since,
                                      placed_by=(cmd.channel, cmd.caller_line, lines))
        if not decision.allowed:
            blocked = self._record(
                decision_id=decision_id, kind="dial", now=now, decision=decision, actor=cmd.actor,
                agent_id=agent.agent_id, channel=cmd.channel, creditor=current.creditor, case_id=current.case_id,
                number=pending.number, attempt_id=pending.attempt_id, case_history_seq=current.history_seq,
            )
            blocked = await ledger.apply(DialOutcome(
                record=blocked, event_type="dial.blocked", event_payload=_decision_event(blocked, None),
                case_pk=current.pk, request=identity, request_digest=digest,
            ))
            return DialResult(False, decision, blocked, None)
        dialing, payload = attempt_state.dialing(pending, channel=cmd.channel, at=now)
        await ledger.apply(DialOutcome(
            record=record, consumed=dialing, event_type=attempt_state.EVENT, case_pk=case.pk, at=now,
            event_payload=payload, request=identity, request_digest=digest,
        ))
        return DialResult(True, _decision_from_record(record), record, dialing, reused=True)

    def _decide_again(
        self, attempt: AttemptRecord, case: CaseRecord, agent: AgentSnapshot, faults: frozenset[str], pol: Policy,
        inputs: DialInputs, now: datetime, read_since: datetime,
        placed_by: tuple[str, str | None, frozenset[str] | None] | None = None,
    ) -> Decision:
        """The decision for an authorised attempt now, as the click was decided (its
        channel: the line is the service's own) unless `placed_by` (channel, caller line,
        registered lines) names the dial that places it, its own reservation left out of
        the history so it does not count against itself."""
        since = now - pol.lookback
        history = list(_within(inputs.history, since, read_since))
        own = next((i for i, h in enumerate(history) if h.kind == "attempt" and h.number == attempt.number
                    and h.case_id == case.case_id and abs((h.at - attempt.at).total_seconds()) < 0.001), None)
        if own is not None:
            del history[own]
        channel, caller_line, lines = placed_by if placed_by is not None else (attempt.channel, None, None)
        request = DialRequest(case=case.snapshot(), number=attempt.number, agent=agent, channel=channel,
                              faults=faults, appointments=_within(inputs.appointments, since, read_since),
                              caller_line=caller_line, registered_lines=lines)
        return evaluate(request, history, pol, now)

    async def _refuse_late_invite(
        self, ledger: DialLedger, replay: DialReplay, cmd: RequestDial, now: datetime, decision_id: str, number: str,
    ) -> DialResult:
        """603 for an allowed INVITE arriving again after its transaction's lifetime, on
        the record among the blocked dials; its first answer and attempt stand."""
        first = replay.record
        late = int((now - replay.stored_at).total_seconds())
        if late >= 0:
            when_en, when_zh = f"{late} s after it was allowed", f"在放行 {late} 秒后"
        else:
            when_en = f"with the clock {-late} s before the time it was allowed (the clock stepped back)"
            when_zh = f"（时钟比放行时早 {-late} 秒，已被回拨）"
        decision = self._refused_outright(
            "sip.invite_replayed",
            f"the same INVITE (Call-ID, From tag, CSeq) came again {when_en} as decision"
            f" {first.decision_id}: a 302 is not given twice",
            f"同一 INVITE {when_zh}再次到达（决定 {first.decision_id}），不再重复放行",
            now,
        )
        record = self._record(
            decision_id=decision_id, kind="dial", now=now, decision=decision, actor=cmd.actor,
            agent_id=cmd.agent_id or first.agent_id, channel=cmd.channel, creditor=first.creditor,
            case_id=first.case_id, number=number, attempt_id=replay.attempt.attempt_id if replay.attempt else None,
        )
        record = await ledger.apply(DialOutcome(record=record))
        log.warning("dial.replay_refused", decision_id=decision_id, first_decision_id=first.decision_id,
                    channel=cmd.channel, case_id=first.case_id)
        return DialResult(False, decision, record, None)

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
            creditor=_chain_creditor(cmd),
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
            agent_id=cmd.agent_id or "-", channel=cmd.channel, creditor=_chain_creditor(cmd),
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
                    creditors=scope, history_limit=bound,
                )
                inputs = await ledger.gather(query)
                case = resolve_case(query, inputs)
                pol = self.policies.for_creditor(case.creditor)
                if pol.default_region != default_region:
                    renumbered = self._normalise(cmd.number, pol.default_region) or cmd.number.strip()
                    if renumbered != number:
                        number = renumbered
                        query = query._replace(number=number)
                        inputs = await ledger.gather(query)
                        case = resolve_case(query, inputs)
                if cmd.actor.role in ("collector", "supervisor") and cmd.agent_id != cmd.actor.name:
                    raise Forbidden(f"{cmd.actor.role} {cmd.actor.name} may check only their own dials",
                                    details={"agent_id": cmd.agent_id})
                agent = self._agent(inputs.agent, cmd.actor, cmd.agent_id, case)
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
                agent_id=cmd.agent_id, channel=cmd.channel, creditor=_chain_creditor(cmd),
                case_id=cmd.case_id, number=cmd.number, attempt_id=None,
            )
        return _for_caller(cmd.actor, DialResult(decision.allowed, decision, record, None))

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
            now = max(now, self._now())  # as a dial's: the time the inputs are in hand
            user = inputs.agent  # None: disabled since the click, or gone; the debtor is not dialled
            agent = AgentSnapshot(
                agent_id=attempt.agent_id,
                role=user.role if user else NO_AGENT,
                creditors=user.creditors if user else frozenset(),
            )
            decision = self._decide_again(attempt, case, agent, faults, pol, inputs, now, query.since)
            await ledger.apply(DialOutcome(record=self._record(
                decision_id=new_id(), kind="recheck", now=now, decision=decision, actor=actor,
                agent_id=attempt.agent_id, channel=attempt.channel, creditor=case.creditor,
                case_id=case.case_id, number=attempt.number, attempt_id=attempt_id,
                case_history_seq=case.history_seq,
            )))
        return decision


def _request_identity(cmd: RequestDial) -> tuple[str | None, str]:
    """The stored identity of the command's request (its key scoped to the user and the
    channel, hashed: one user's key never reaches another's answer, and no Call-ID or
    client key is kept as given) and the digest of what it asks."""
    if cmd.request_key is None:
        return None, ""
    scoped = "\x1f".join((cmd.actor.name, cmd.channel, cmd.request_key))
    asked = json.dumps([cmd.case_id, cmd.number, cmd.agent_id, cmd.channel, cmd.creditor, cmd.match_pending,
                        cmd.attempt_id, cmd.caller_line], ensure_ascii=False)
    return hashlib.sha256(scoped.encode()).hexdigest(), hashlib.sha256(asked.encode()).hexdigest()


def _chain_creditor(cmd: RequestDial | CheckDial) -> str:
    """The creditor whose log gets a decision made before the case was known: the one
    named, if the caller may act for it; else "-" (admins' view). Otherwise a user of one
    creditor could write refusals into another's log by naming it."""
    return cmd.creditor if cmd.creditor and cmd.actor.can_see(cmd.creditor) else "-"


def _late_invite(replay: DialReplay, digest: str, cmd: RequestDial, now: datetime) -> bool:
    """Whether a SIP request's stored allow is past the time any retry of it comes. A
    stored allow later than now by more than that: the clock stepped back, so the time
    since is unknown and it counts as late (a 302 given twice places a second call)."""
    return (cmd.channel == "sip" and replay.record.allowed and replay.digest == digest
            and abs(now - replay.stored_at) > INVITE_RETRY_WINDOW)


def _for_caller(actor: Principal, result: DialResult) -> DialResult:
    """The answer a collector gets for a case not assigned to them: the refusal alone.
    Its other checks would tell them what the case view hides from them (the case's
    state and flags, which numbers are its contacts and how often they were called);
    the decision record keeps them all for the blocked-dial review."""
    if actor.role != "collector" or result.allowed:  # allowed: every check passed, the agent's too
        return result
    refusal = next((c for c in result.decision.checks if c.rule_id == AGENT_NOT_ASSIGNED and not c.passed), None)
    if refusal is None:
        return result
    decision = replace(
        result.decision, allowed=False, rule_id=refusal.rule_id, reason=f"{refusal.rule_id}: {refusal.detail}",
        reason_zh=refusal.detail_zh, next_allowed_at=None, checks=(refusal,), inputs_used={},
    )
    return replace(result, allowed=False, decision=decision)


def _replayed(replay: DialReplay, digest: str, cmd: RequestDial) -> DialResult:
    """The answer given the first time the request's identity was decided: the same
    decision and attempt, counted once. The same key asking something else is refused."""
    if replay.digest != digest:
        # where the key came from: a dial command's field, else the HTTP header
        where, name = ("field", "idempotency_key") if cmd.channel == "mqtt" else ("header", "Idempotency-Key")
        raise RequestReused(
            f"{name} was already used for a different request; use a new key for a new dial"
            " (该幂等键已用于另一请求，新的拨号请使用新的键)",
            details={where: name, "channel": cmd.channel},
        )
    record = replay.record
    log.info("dial.replayed", decision_id=record.decision_id, channel=cmd.channel, allowed=record.allowed,
             attempt_id=replay.attempt.attempt_id if replay.attempt else None)
    decision = _decision_from_record(record)
    if "case_history_seq" in decision.inputs_used:  # the record's own addition, not what the policy used
        decision = replace(decision, inputs_used={k: v for k, v in decision.inputs_used.items() if k != "case_history_seq"})
    return DialResult(record.allowed, decision, record, replay.attempt, replayed=True)
