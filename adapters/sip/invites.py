"""The INVITE path of the SIP listener: overload shedding, one decision task per INVITE,
100 Trying, the time-out (503 ``system.no_decision``) and the answer (302/603), as
:class:`InviteDecisions`, a part of :class:`~adapters.sip.server.SipServer`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from adapters.sip.gate import (
    DecisionUnavailable,
    SipDialAnswer,
    SipDialInput,
    answer_headers,
    ascii_quoted,
    dial_input_from_invite,
    fail_closed_answer,
    is_e164,
    mask_number,
)
from adapters.sip.listener_state import OVERLOAD_LOG_EVERY, Decision, ListenerState
from adapters.sip.message import SipMessage, SipParseError, Transport
from adapters.sip.responses import NO_DECISION_HEADERS, build_response, tag_for
from adapters.sip.transaction import Reply, transaction_key

log = structlog.get_logger("dialgate.sip")

_PROVISIONAL_AFTER = 0.2  # RFC 3261 17.2.1: send 100 Trying if the TU needs longer


class InviteDecisions(ListenerState):
    """Decides each new INVITE once, fail closed, never past the time-out."""

    def _invite(self, msg: SipMessage, transport: Transport, reply: Reply, source: tuple[Any, ...]) -> None:
        self.stats.invites += 1
        key = transaction_key(msg)
        txn = self.transactions.get(key)
        if txn is not None:
            self.stats.retransmissions += 1
            self.transactions.retransmission(txn, reply)
            return
        cseq_number, _ = msg.cseq
        to_tag = msg.to.tag or tag_for(msg.call_id, msg.from_.tag or "", str(cseq_number), "dialgate")
        txn = self.transactions.create(key, msg, to_tag, transport == "tcp", reply)
        if self._pending >= self._max_pending or self._queued > self._shed_after or self._backlogged():
            # Overload: answer at once instead of queueing decisions that would time out
            # anyway. 503 + Retry-After (RFC 3261 21.5.4); the call is not placed.
            self.stats.overloaded += 1
            self._shed_unlogged += 1
            now = time.monotonic()
            if now - self._shed_logged_at >= OVERLOAD_LOG_EVERY:
                # at most one line a second: under overload a JSON line per shed INVITE
                # is CPU the decisions in flight need
                log.warning("sip.overloaded", pending=self._pending, shed=self._shed_unlogged, call_id=msg.call_id)
                self._shed_logged_at, self._shed_unlogged = now, 0
            self.transactions.complete(
                txn,
                build_response(msg, 503, source, to_tag, extra=[
                    ("Retry-After", "1"),
                    ("Reason", 'SIP;cause=503;text="system.overloaded"'),
                    ("Warning", '399 dialgate "Too many decisions in flight; the call is not placed"'),
                ]),
            )
            return
        self._pending += 1
        try:
            dial = dial_input_from_invite(msg, self._config.extensions)
        except Exception as exc:  # noqa: BLE001 - a SipParseError is the expected case
            self._pending -= 1
            if isinstance(exc, SipParseError):
                extra = [("Warning", f'399 dialgate "{ascii_quoted(exc.reason)}"')]
                self.transactions.complete(txn, build_response(msg, exc.status, source, to_tag, extra=extra))
                return
            self.stats.authorizer_failures += 1
            log.warning("sip.authorizer_failed", error=type(exc).__name__, detail=str(exc)[:200], call_id=msg.call_id)
            self._answer(Decision(msg, txn, source, None, time.perf_counter()), fail_closed_answer())
            return
        # One task per INVITE, which answers as soon as the authorizer returns; the 100
        # Trying and the time-out are one timer handle in turn: no wrapping task awaiting
        # asyncio.wait() and no done-callback, each of which costs the INVITE more CPU or
        # one more turn of the loop.
        loop = asyncio.get_running_loop()
        d = Decision(msg, txn, source, dial, time.perf_counter())
        task = loop.create_task(self._decide(d, dial))
        self._oldest.append(d)
        d.task = task
        if self._timeout > _PROVISIONAL_AFTER:
            d.timer = loop.call_later(_PROVISIONAL_AFTER, self._trying, d)
        else:
            d.timer = loop.call_later(self._timeout, self._timed_out, d)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _backlogged(self) -> bool:
        """True when the oldest decision still within its time-out has waited longer
        than ``shed_after``: the decisions are not keeping up (a store that stalls with
        few decisions in flight). A decision past its time-out (``late``) no longer
        counts here: one wedged decision must not refuse every call after it (the
        time-out answers those). A saturated event loop, whose backlog waits in the
        socket's buffer where no decision has started, is seen by the kernel's
        receive times instead (``_queued``; without them an overloaded inline gate
        queues for seconds, into INVITE retransmissions). The count
        (``max_pending_decisions``) bounds memory and what a stalled store can pile up;
        it is not the latency control: a small cap sheds calls whenever the latency
        briefly rises under a steady high rate, so it is set well above what a healthy
        gate keeps in flight."""
        oldest = self._oldest
        while oldest and (oldest[0].late or oldest[0].task is None or oldest[0].task.done()):
            oldest.popleft()
        return bool(oldest) and time.perf_counter() - oldest[0].started > self._shed_after

    def _trying(self, d: "Decision") -> None:
        """RFC 3261 17.2.1: 100 Trying when the decision takes longer than 200 ms; then
        the same timer waits for the time-out."""
        d.timer = asyncio.get_running_loop().call_later(self._timeout - _PROVISIONAL_AFTER, self._timed_out, d)
        if not d.txn.final:
            resp = build_response(d.msg, 100, d.source, None)
            for r in d.txn.replies:
                r(resp)

    def _timed_out(self, d: "Decision") -> None:
        """The time-out answers the PBX; it does not cancel the decision, which may be
        inside a store transaction (cancelling one half-way is worse than a late result
        nobody waits for). The decision stays pending until it ends; its late result is
        logged and dropped."""
        task = d.task
        if task is None or task.done():
            return  # finished; its done-callback is about to answer
        d.late = True
        d.timer = None
        self.stalled = True
        self.stats.authorizer_failures += 1
        log.warning("sip.authorizer_failed", error="TimeoutError", detail=f"no decision within {self._timeout:g} s",
                    call_id=d.msg.call_id)
        self._no_decision(d)

    async def _decide(self, d: "Decision", dial: SipDialInput) -> None:
        """The INVITE's task: ask the authorizer, then answer (fail closed on any error)."""
        try:
            answer: Any = await self._authorizer.authorize(dial)
        except asyncio.CancelledError:  # the listener is closing
            self._pending -= 1
            if d.timer is not None:
                d.timer.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the authorizer fails closed
            self._decided(d, None, exc)
        else:
            self._decided(d, answer, None)

    def _decided(self, d: "Decision", answer: Any, exc: BaseException | None) -> None:
        self._pending -= 1
        if d.timer is not None:
            d.timer.cancel()
        if not isinstance(exc, DecisionUnavailable):
            self.stalled = False  # the deciding side answered (late or not): it is alive
        if d.late:
            log.warning(
                "sip.late_decision",
                call_id=d.msg.call_id,
                error=type(exc).__name__ if exc else None,
                allowed=getattr(answer, "allowed", None),
                attempt=getattr(answer, "attempt_id", None),
                note="answered 503 system.no_decision already",
            )
            return
        if exc is None and not isinstance(answer, SipDialAnswer):
            exc = TypeError(f"authorizer returned {type(answer).__name__}, not SipDialAnswer")
        if exc is not None:
            self.stats.authorizer_failures += 1
            log.warning("sip.authorizer_failed", error=type(exc).__name__, detail=str(exc)[:200], call_id=d.msg.call_id)
            if isinstance(exc, DecisionUnavailable):
                self._no_decision(d)
                return
            answer = fail_closed_answer()
        self._answer(d, answer)

    def _no_decision(self, d: "Decision") -> None:
        """503: nothing was decided (a time-out, or the deciding process is unreachable),
        so the call is not placed here and a dispatcher may ask another gate. A 603
        would be final, and a block is what it must mean."""
        txn = d.txn
        if txn.cancelled or txn.final:
            return
        self.transactions.complete(txn, build_response(d.msg, 503, d.source, txn.to_tag, extra=NO_DECISION_HEADERS))

    def _answer(self, d: "Decision", answer: SipDialAnswer) -> None:
        self.stats.decisions += 1
        dial = d.dial
        # debug: in the service, the use case logs each decision once at info (with the
        # call id bound by GateSipAuthorizer); a second line per INVITE is CPU wasted
        log.debug(
            "sip.decision",
            call_id=d.msg.call_id,
            number=mask_number(dial.number) if dial else "",
            agent=dial.agent_id if dial else None,
            case=dial.case_id if dial else None,
            allowed=answer.allowed,
            rule=answer.rule_id,
            attempt=answer.attempt_id,
            ms=round((time.perf_counter() - d.started) * 1000, 2),
        )
        txn = d.txn
        if txn.cancelled or txn.final:
            return  # CANCEL already answered the INVITE with 487
        contact = None
        if answer.allowed:
            # The PBX dials exactly the number decided on: the answer's own number (the
            # service's E.164), else the edge's normalisation of a clean dial string.
            routed = answer.number if answer.number is not None else (dial.number if dial else None)
            if not is_e164(routed):
                log.error("sip.unroutable_decision", call_id=d.msg.call_id, attempt=answer.attempt_id,
                          number=mask_number(routed))
                answer = fail_closed_answer()
            else:
                contact = self._config.contact_for(routed)  # type: ignore[arg-type]
        status, _, extra = answer_headers(answer, contact)
        self.transactions.complete(txn, build_response(d.msg, status, d.source, txn.to_tag, extra=extra))


__all__ = ["InviteDecisions"]
