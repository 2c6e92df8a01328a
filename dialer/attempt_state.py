"""The one writer of attempt state and of `attempt.state` events.

    authorised ──► dialing ──► completed     the PBX placed it; the outcome is logged
        │
        ├────────► expired                   the PBX never placed it in time (it counts)
        └────────► released                  click-to-dial never reached the debtor
                                             (it stops counting)

Beside the state, `connected` records that the debtor answered (the "connected calls"
caps count it). Every move writes the attempt row and its `attempt.state` outbox event
in one unit of work, so whoever sees the event sees the row.

The functions taking a `uow` run inside a use case's own transaction (dialer/usecases/:
an outcome, the expiry sweep); a dial consuming a reservation hands `dialing`'s move to
the dial ledger, which writes it with the decision. `AttemptStates` opens one
write per call for the PBX adapters: the service's own user agent (call progress, the
debtor answered, the attempt released) and PBX events arriving on the bus.

Errors (`AttemptStates.apply_call_event`, the transaction is rolled back):

    NoSuchAttempt   no attempt with that id, or none learnt for that SIP Call-ID
                    (details name `attempt_id` or `call_id`)
    Forbidden       the event names another creditor than the attempt's
    Conflict        the SIP Call-ID was learnt for another attempt
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from dialer.errors import Conflict, Forbidden, NoSuchAttempt
from dialer.masking import mask_path
from dialer.model import AttemptRecord, CallProgress
from dialer.ports import CaseStore, Clock, UnitOfWork

EVENT = "attempt.state"

log = structlog.get_logger("dialgate.attempts")


@dataclass(frozen=True, slots=True)
class CallEvent:
    """Call progress a PBX reported about an attempt (`dialgate/v1/pbx/<pbx_id>/events`).

    The attempt is named by `attempt_id`, or by the SIP `call_id` once an event naming
    both has taught which attempt the call belongs to."""

    pbx_id: str
    kind: str  # answered | hangup | recording_ready
    occurred_at: datetime
    call_id: str | None = None
    attempt_id: str | None = None
    cause: str | None = None  # hangup: SIP/Q.850 cause as the PBX sent it
    duration_s: float | None = None  # hangup: talk time
    recording: str | None = None  # recording_ready: the PBX's path or URL
    creditor: str | None = None  # when the PBX knows it; must be the attempt's


async def _announce(uow: UnitOfWork, attempt: AttemptRecord, at: datetime, payload: dict[str, Any]) -> None:
    await uow.outbox.add(
        EVENT, creditor=attempt.creditor, case_pk=attempt.case_pk, case_id=attempt.case_id, occurred_at=at,
        payload=payload,
    )


def dialing(attempt: AttemptRecord, *, channel: str, at: datetime) -> tuple[AttemptRecord, dict[str, Any]]:
    """The move to "dialing" as data: the attempt after it and its event's payload. The
    dial ledger applies it in the same write as the decision that consumes the
    reservation (`DialOutcome.consumed`). The attempt's time becomes `at`, when the call
    is placed (never earlier than the click): the caps' windows count a call from when the
    debtor's phone rang, up to the validity after the click."""
    return replace(attempt, state="dialing", at=max(attempt.at, at)), {
        "attempt_id": attempt.attempt_id, "state": "dialing", "channel": channel,
        "decision_id": attempt.decision_id, "agent_id": attempt.agent_id,
    }


async def mark_dialing(uow: UnitOfWork, attempt: AttemptRecord, *, channel: str, at: datetime) -> AttemptRecord:
    """A reservation is used: the PBX places the call (`channel`: who asked for it)."""
    moved, payload = dialing(attempt, channel=channel, at=at)
    await uow.attempts.set_state(attempt.attempt_id, "dialing", at=moved.at)
    await _announce(uow, attempt, at, payload)
    return moved


async def mark_completed(uow: UnitOfWork, attempt: AttemptRecord, *, connected: bool, at: datetime) -> None:
    """The call's outcome is logged. It may mark the call connected, never unmark it: a
    call the PBX reported answered counts for the "connected calls" caps whatever the
    collector logs (the update leaves the stored flag alone, so a PBX event committed
    meanwhile stands too)."""
    await uow.attempts.set_state(attempt.attempt_id, "completed", connected=True if connected else None)
    await _announce(uow, attempt, at, {
        "attempt_id": attempt.attempt_id, "state": "completed", "connected": connected or attempt.connected,
        "decision_id": attempt.decision_id, "agent_id": attempt.agent_id,
    })


_AUTHORISED = frozenset({"authorised"})


async def mark_expired(uow: UnitOfWork, attempt: AttemptRecord, *, at: datetime) -> bool:
    """An authorisation the PBX never used within its validity (it still counts). Only an
    attempt still authorised as stored now: one the SIP gate consumed since the sweep read
    it is being dialled, and "expired" would let the user agent release it. Whether it moved."""
    if not await uow.attempts.set_state(attempt.attempt_id, "expired", only_from=_AUTHORISED):
        return False
    await _announce(uow, attempt, at, {
        "attempt_id": attempt.attempt_id, "state": "expired", "decision_id": attempt.decision_id,
        "agent_id": attempt.agent_id,
    })
    return True


# What a PBX call event contradicts: it says the call was placed.
_NOT_PLACED = frozenset({"authorised", "released", "expired"})
# What the user agent may release: a reservation nobody has used. Once the SIP gate has
# consumed it ("dialing") the PBX was sent to the debtor, whoever's INVITE it was.
_RELEASABLE = frozenset({"authorised", "expired"})


async def _user_agent_update(
    uow: UnitOfWork, attempt: AttemptRecord, state: str | None, *, connected: bool | None, at: datetime
) -> None:
    """The service's user agent moved the call on: `state` None keeps the stored one."""
    current = await uow.attempts.get(attempt.attempt_id)
    if current is None:
        return
    # The agent's own phone may have dialled the clicked number while the user agent rang
    # the agent: releasing then would stop a placed call from counting. The update checks
    # the state again, as stored when it runs: the SIP gate may consume the reservation
    # after the read above.
    if state == "released":
        moved = current.state in _RELEASABLE and await uow.attempts.set_state(
            attempt.attempt_id, state, connected=connected, only_from=_RELEASABLE
        )
        if not moved:
            log.warning("attempt.release_refused", attempt_id=attempt.attempt_id, state=current.state)
            return
    else:
        state = current.state
        await uow.attempts.set_state(attempt.attempt_id, state, connected=connected)
    await _announce(uow, attempt, at, {
        "attempt_id": attempt.attempt_id, "state": state, "channel": attempt.channel, "connected": connected,
        "agent_id": attempt.agent_id, "decision_id": attempt.decision_id,
    })


def dial_locks(attempt: AttemptRecord) -> tuple[str, ...]:
    """The locks a dial of the attempt's case or number holds while it decides: a call
    marked connected changes what the caps on connected calls count, so it commits
    before such a dial reads or after it is decided (dialer.usecases.dials)."""
    return (f"case:{attempt.case_id}", f"number:{attempt.number}")


class AttemptStates:
    """The attempt moves the PBX adapters report, each in a write of its own."""

    def __init__(self, store: CaseStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def _now(self) -> datetime:
        return self.clock.now().astimezone(UTC)

    async def mark_connected(self, attempt: AttemptRecord) -> None:
        """The debtor answered a call the service's user agent placed."""
        async with self.store.write(dial_locks(attempt)) as uow:
            await _user_agent_update(uow, attempt, None, connected=True, at=self._now())

    async def record_progress(
        self, attempt: AttemptRecord, progress: CallProgress, *, release: bool = False, case_flags: bool = False
    ) -> None:
        """Keep a call state of a click-to-dial attempt. `release`: the call ended before
        the debtor's phone was dialled, so the attempt stops counting, in the same
        transaction as the `ended` state (whoever sees the end sees it not counting);
        one the SIP gate has consumed meanwhile, or that is completed, stays as it is.
        `case_flags`: keep the case's flags with it (a stop recorded during a connected
        call does not cut the call, but is shown on the attempt)."""
        async with self.store.write() as uow:
            if release:
                await _user_agent_update(uow, attempt, "released", connected=None, at=self._now())
            flags = None
            if case_flags:
                case = await uow.cases.get(attempt.creditor, attempt.case_id)
                flags = ",".join(sorted(case.flags)) if case is not None else None
            if progress.detail is not None:
                progress = replace(progress, detail=progress.detail[:500] or None)  # the column's bound
            await uow.attempts.add_progress(progress, flags)

    async def apply_call_event(self, event: CallEvent) -> None:
        """A PBX event: the attempt is being dialled (if it was only authorised, or
        released or expired), and connected once answered or hung up after talking; an `attempt.state` event
        carries the PBX's details. Raises as the module docstring says."""
        # The event may mark the call connected: the dial's locks. An attempt never changes
        # case or number, so it is read before the write.
        async with self.store.read() as r:
            known = event.attempt_id or await r.attempts.attempt_for_call(event.call_id or "")
            found = await r.attempts.get(known) if known else None
        async with self.store.write(dial_locks(found) if found is not None else ()) as uow:
            attempt_id = event.attempt_id
            if attempt_id is None:
                attempt_id = await uow.attempts.attempt_for_call(event.call_id or "")
                if attempt_id is None:
                    raise NoSuchAttempt("no attempt known for this SIP Call-ID", details={"call_id": event.call_id})
            attempt = await uow.attempts.get(attempt_id)
            if attempt is None:
                raise NoSuchAttempt("no such attempt", details={"attempt_id": attempt_id})
            if event.creditor is not None and event.creditor != attempt.creditor:
                raise Forbidden(
                    "the event's creditor is not the attempt's",
                    details={"attempt_id": attempt_id, "creditor": event.creditor},
                )
            if event.call_id is not None and event.attempt_id is not None:
                await self._learn_call(uow, event, attempt_id)

            # A call the PBX reports was placed, whatever the order its reports and ours
            # arrive in: a release the user agent wrote first (its debtor leg may have gone
            # out unseen) must not keep it from counting, nor "expired" leave it releasable.
            state = "dialing" if attempt.state in _NOT_PLACED else attempt.state
            connected: bool | None = None
            if event.kind == "answered" or (event.kind == "hangup" and (event.duration_s or 0) > 0):
                connected = True
            await uow.attempts.set_state(attempt_id, state, connected=connected)
            payload: dict[str, Any] = {
                "attempt_id": attempt_id,
                "state": state,
                "connected": bool(connected or attempt.connected),
                "channel": attempt.channel,
                "agent_id": attempt.agent_id,
                "decision_id": attempt.decision_id,
                "pbx_event": event.kind,
                "pbx_id": event.pbx_id,
                "pbx_at": event.occurred_at.astimezone(UTC).isoformat(),
            }
            if event.kind == "hangup":
                payload.update(cause=event.cause, duration_s=event.duration_s)
            if event.kind == "recording_ready":
                payload["recording"] = mask_path(event.recording or "")
            await _announce(uow, attempt, self._now(), payload)

    async def _learn_call(self, uow: UnitOfWork, event: CallEvent, attempt_id: str) -> None:
        assert event.call_id is not None
        known = await uow.attempts.attempt_for_call(event.call_id)
        if known is None:
            await uow.attempts.add_call(event.call_id, attempt_id, event.pbx_id, self._now())
        elif known != attempt_id:
            raise Conflict("this Call-ID already belongs to another attempt", details={"call_id": event.call_id})
