"""The SIP gate plugged into the gate service: the authorizer port over ``RequestDial``.

:class:`GateSipAuthorizer` answers the listener's question with the same use case as
``POST /v1/dials`` (channel ``sip``, ``match_pending=True``), so SIP decisions land in
the decision log and ``GET /v1/blocked-dials`` like API ones, and a click-to-dial
authorisation is consumed instead of counted again.

The INVITE becomes a command and the answer a SIP answer; nothing here reads the
store. Which case the INVITE means is the use case's rule (``dialer.dial_resolution``),
from ``X-Case-ID`` (the PBX's), ``X-DialGate-Attempt`` (a click-to-dial
authorisation), or the agent and the number:

1. ``X-Case-ID`` from the PBX;
2. the agent's pending click-to-dial attempt: by ``X-DialGate-Attempt``, else the
   oldest still-valid authorised attempt of that agent for that number;
3. the one active case assigned to that agent that holds the number.

Nothing found, or several candidates, is a refusal (603) with rule id ``case.not_found``
or ``case.ambiguous``; an INVITE without a known agent is refused with
``agent.unknown``. Those refusals never reach the policy, but the PBX did try to
place the call, so each is written to the decision log as a blocked dial
(``Gate.record_refusal``: the creditor whose registered line placed it, else chain
"-", which admins review) and logged as ``sip.refused`` with the number masked.

The gate acts as the internal identity ``sip-gate`` (unscoped: the PBX carries every
creditor's calls); the agent named by the INVITE is who the policy checks.

:func:`open_sip_gate` is the composition root's extension: it starts the UDP/TCP
listener when ``[sip] listen`` is set, and does nothing otherwise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, AsyncIterator

import structlog
from adapters.sip.config import SipConfig, SipConfigError, load_sip_config
from adapters.sip.edge import SipEdgeError, SipEdgeProcess
from adapters.sip.gate import SipDialAnswer, SipDialInput, mask_number
from adapters.sip.server import SipServer
from dialer.errors import AmbiguousCase, ApiError, ConfigError, Forbidden, NoSuchCase, UnprocessableEntity
from dialer.model import Principal
from dialer.usecases import DialResult, Gate, RequestDial
from policy.text import Text

log = structlog.get_logger("dialgate.sip")

SIP_ACTOR = Principal(user_id=0, name="sip-gate", role="admin", creditors=frozenset())

_REFUSALS: dict[str, Text] = {
    "agent.unknown": Text(
        "No agent for this call: the PBX must send X-Agent-ID or the extension must be mapped in [sip.extensions]",
        "无法识别坐席：PBX 须发送 X-Agent-ID，或在 [sip.extensions] 中配置分机对应的坐席",
    ),
    "case.not_found": Text(
        "No active case assigned to this agent holds this number",
        "没有分配给该坐席且包含该号码的在催案件",
    ),
    "case.ambiguous": Text(
        "Several cases match this call; the PBX must send X-Case-ID",
        "该呼叫匹配到多个案件，PBX 须发送 X-Case-ID",
    ),
    "request.forbidden": Text(
        "The gate refused the request for this agent",
        "网关拒绝了该坐席的请求",
    ),
}


def refusal(rule_id: str, detail: str = "") -> SipDialAnswer:
    text = _REFUSALS[rule_id]
    reason = f"{text.en} ({detail})" if detail else text.en
    return SipDialAnswer(allowed=False, rule_id=rule_id, reason=reason, reason_zh=text.zh)




class GateSipAuthorizer:
    """``SipDialAuthorizer`` over the service's ``Gate.request_dial`` (channel ``sip``)."""

    def __init__(self, gate: Gate, config: SipConfig, actor: Principal = SIP_ACTOR) -> None:
        self._gate = gate
        self._config = config
        self._actor = actor

    async def authorize(self, invite: SipDialInput) -> SipDialAnswer:
        # The call id rides on every log line of this decision: the use case's one
        # `dial.decided` line (allowed, rule, case, agent, masked number, attempt and
        # decision id) then ties the PBX's call to the decision log, so the listener
        # needs no second info line per INVITE of its own (`sip.decision` is debug).
        tokens = structlog.contextvars.bind_contextvars(call_id=invite.call_id)
        try:
            found = await self._command(invite)
            if isinstance(found, SipDialAnswer):
                answer = found
            else:
                # awaited here, not in a helper: each of the decision's suspensions
                # resumes through every coroutine frame above it
                try:
                    result = await self._gate.request_dial(found)
                except NoSuchCase:
                    answer = self._refused("case.not_found", invite)
                except AmbiguousCase:
                    answer = self._refused("case.ambiguous", invite)
                except (Forbidden, UnprocessableEntity) as exc:
                    unknown = isinstance(exc, UnprocessableEntity) and exc.details.get("field") == "agent_id"
                    answer = self._refused("agent.unknown" if unknown else "request.forbidden", invite, exc.detail)
                except ApiError as exc:
                    answer = self._refused("request.forbidden", invite, exc.detail)
                else:
                    answer = self._answer(result)
            if not answer.allowed and answer.decision_id is None:
                answer = await self._log_refusal(invite, answer)
            return answer
        finally:
            structlog.contextvars.reset_contextvars(**tokens)

    async def _log_refusal(self, invite: SipDialInput, answer: SipDialAnswer) -> SipDialAnswer:
        """A refusal made before the policy (no case, several, unknown agent) goes to the
        decision log like any blocked dial, under the creditor whose registered line
        placed the call when exactly one has it. The 603 goes out even if the log
        write fails (the refusal stands; the failure is logged)."""
        holders = [c for c, lines in self._config.registered_lines.items() if invite.caller_line in lines]
        cmd = RequestDial(
            actor=self._actor,
            case_id=invite.case_id or "",
            number=invite.number,
            agent_id=invite.agent_id or "",
            channel="sip",
            creditor=holders[0] if len(holders) == 1 else None,
        )
        try:
            record = await self._gate.record_refusal(cmd, answer.rule_id, answer.reason, answer.reason_zh)
        except Exception as exc:  # noqa: BLE001 - the call is refused either way
            log.error("sip.refusal_unlogged", rule_id=answer.rule_id, call_id=invite.call_id, error=str(exc))
            return answer
        return dataclasses.replace(answer, decision_id=record.decision_id)

    async def _command(self, invite: SipDialInput) -> RequestDial | SipDialAnswer:
        """The RequestDial for the INVITE, or the refusal when it names no agent. The case
        is resolved inside the decision's write (`dialer.dial_resolution`)."""
        if not invite.agent_id:
            return self._refused("agent.unknown", invite)
        return RequestDial(
            actor=self._actor,
            case_id=invite.case_id or "",
            number=invite.number,
            agent_id=invite.agent_id,
            channel="sip",
            match_pending=True,
            attempt_id=invite.attempt_id,
            caller_line=invite.caller_line,
            lines_by_creditor=self._config.registered_lines,
            request_key=invite.request_key,
        )

    def _answer(self, result: DialResult) -> SipDialAnswer:
        decision = result.decision
        retry_after = None
        if not result.allowed and decision.next_allowed_at is not None:
            seconds = (decision.next_allowed_at - self._gate.clock.now()).total_seconds()
            retry_after = max(0, math.ceil(seconds))
        return SipDialAnswer(
            allowed=result.allowed,
            rule_id=decision.rule_id,
            reason=decision.reason,
            reason_zh=decision.reason_zh,
            attempt_id=result.attempt.attempt_id if result.attempt else None,
            retry_after=retry_after,
            decision_id=result.decision_id,
            number=result.attempt.number if result.attempt else None,
        )

    @staticmethod
    def _refused(rule_id: str, invite: SipDialInput, detail: str = "") -> SipDialAnswer:
        log.info(
            "sip.refused",
            rule_id=rule_id,
            call_id=invite.call_id,
            number=mask_number(invite.number),
            agent_id=invite.agent_id,
            case_id=invite.case_id,
        )
        return refusal(rule_id, detail)


@contextlib.asynccontextmanager
async def open_sip_gate(services: Any) -> AsyncIterator[SipServer | SipEdgeProcess | None]:
    """Extension for ``dialer.app``: serve SIP while the service runs if ``[sip] listen`` is set
    (in this process, or with ``[sip] edge = "process"`` in a child that asks this one)."""
    raw = services.config.section("sip")
    if "listen" not in raw:
        yield None
        return
    try:
        config = load_sip_config(raw)
    except SipConfigError as exc:
        raise ConfigError(f"{services.config.source}: {exc}") from exc
    authorizer = GateSipAuthorizer(services.gate, config)
    gate: SipServer | SipEdgeProcess
    if config.edge == "process":
        gate = SipEdgeProcess(authorizer, raw, log_level=services.config.log.level, log_json=services.config.log.json)
        health: SipGateHealth | SipEdgeHealth = SipEdgeHealth(gate)
    else:
        gate = SipServer(authorizer, config)
        health = SipGateHealth(gate)
    try:
        await gate.start()
    except SipEdgeError as exc:
        raise ConfigError(f"{services.config.source}: [sip] {exc}") from exc
    try:
        log.info("sip.gate_started", listen=config.listen, route=config.route, edge=config.edge)
        services.sip = health
        yield gate
    finally:
        services.sip = None
        await gate.close()


class SipGateHealth:
    """What `services.sip` holds while the listener runs: /readyz and the console's
    health strip ask it. It exists only between start and close, so: listening."""

    def __init__(self, server: SipServer) -> None:
        self.server = server

    def health(self) -> tuple[str, str]:
        return "ok", (
            f"listening on {self.server.host}:{self.server.port} (UDP, TCP); "
            f"{self.server.pending_decisions} decisions pending"
        )


class SipEdgeHealth:
    """`services.sip` with ``[sip] edge = "process"``: the child listens while it runs
    and holds its link; between a crash and its restart the gate is down."""

    def __init__(self, edge: SipEdgeProcess) -> None:
        self.edge = edge

    def health(self) -> tuple[str, str]:
        if not self.edge.listening:
            return "down", f"SIP edge process restarting (last exit code {self.edge.last_exit})"
        return "ok", (
            f"listening on {self.edge.host}:{self.edge.port} (UDP, TCP) in edge process {self.edge.pid}; "
            f"{self.edge.pending_decisions} decisions pending"
        )
