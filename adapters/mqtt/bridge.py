"""The MQTT bus wired to the gate service: the extension `open_mqtt(services)`.

Started by the composition root (dialer/bootstrap.py `extensions`) when `[mqtt] url` is set:

- Out: the relay publishes the service's outbox (the store's `outbox_source`). It is
  woken after every committed write transaction of the store (`on_commit`), plus a slow
  poll. It also deletes rows published more than `[mqtt] published_retention_days` ago.
- In, `dialgate/v1/commands/dial`: the user's token is checked with the service's
  Authenticator, the body validated as `POST /v1/dials`'s, and the same RequestDial use
  case runs with channel "mqtt". The reply carries the HTTP answer: 201 and the same
  body as the API, or 403 with the `dial-blocked` problem (a blocked dial is an answer,
  not a dead letter). Bad token, wrong creditor, unknown case, malformed body: dead
  letter plus an error reply. A command carrying `idempotency_key` that is resent or
  redelivered gets the first answer again (`replayed: true`), decided and counted once,
  as `POST /v1/dials` with its `Idempotency-Key` header.
- In, `dialgate/v1/pbx/<pbx_id>/events`: handed to the application's attempt state use
  case (dialer/attempt_state.py `AttemptStates.apply_call_event`), which matches the
  attempt by `attempt_id`, or by SIP Call-ID once the first event of a call that names
  both taught it. `answered` marks the attempt connected (it then counts for the
  "connected calls" caps) and dialing if it was only authorised (or released, or
  expired: the PBX says the call was placed); `hangup` with a talk
  time > 0 also marks it connected; every event is written as an `attempt.state` event
  with the PBX's details, in one transaction.

`services.mqtt` is set to the bus for /readyz and the console's health strip.

In a worker pool (`dialgate serve --workers N`) the bus runs in the primary only, which
also listens on the pool's wake socket (adapters/mqtt/waker.py); the extension
`open_mqtt_waker`, entered by every worker, makes a secondary's commits wake it. On
PostgreSQL the bus runs in the leader of every instance on the database
(dialer/leadership.py) and the wake travels as NOTIFY (the store's `commits_elsewhere`
and `announce_commits`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import ValidationError

from adapters.mqtt.bus import MqttEventBus
from adapters.mqtt.config import MqttConfig, load_mqtt_config
from adapters.mqtt.errors import (
    MalformedMessage,
    MessageRejected,
    MqttConfigError,
    UnauthorisedMessage,
    UnmatchedMessage,
)
from adapters.mqtt.ports import DialCommand, DialReply, PbxEvent, RelayStore
from adapters.mqtt.waker import RelayWaker, RelayWakeListener, wake_socket_path
from dialer.attempt_state import AttemptStates, CallEvent
from dialer.commands import DialBody
from dialer.errors import (
    PROBLEM_BASE,
    ApiError,
    ConfigError,
    Conflict,
    DialBlocked,
    Forbidden,
    NoSuchAttempt,
    NoSuchCase,
    StoreRefusedValue,
    StoreUnavailable,
    Unauthenticated,
)
from dialer.usecases import RequestDial

if TYPE_CHECKING:
    from dialer.auth import Authenticator
    from dialer.usecases import Gate

log = structlog.get_logger("dialgate.mqtt.bridge")


# The problem `POST /v1/dials` answers while the store is unreachable.
STORE_UNAVAILABLE = {
    "type": PROBLEM_BASE + "store-unavailable",
    "title": "Case store unavailable",
    "status": 503,
    "detail": "the case store is unavailable; nothing was changed",
}


def _refused_value(exc: StoreRefusedValue) -> MalformedMessage:
    """A value the store cannot hold (PostgreSQL refuses NUL in text): the message's
    fault, refused 400 as over HTTP."""
    rejected = MalformedMessage(
        "a value in the message is out of range; nothing was changed",
        "消息中的某个值超出范围，未作任何更改",
        reason="bad-request",
        details={"error": str(exc)},
    )
    rejected.status = 400
    return rejected


class GateDialHandler:
    """Dial commands → the RequestDial use case, exactly as `POST /v1/dials`."""

    def __init__(self, auth: Authenticator, gate: Gate) -> None:
        self.auth = auth
        self.gate = gate

    async def handle_dial(self, command: DialCommand) -> DialReply:
        try:
            actor = await self.auth.authenticate(f"Bearer {command.token}")
        except Unauthenticated as exc:
            raise UnauthorisedMessage(
                f"token refused: {exc.detail}", "令牌被拒绝：未知或已吊销的令牌"
            ) from exc
        except StoreUnavailable as exc:
            log.error("store.unavailable", error=str(exc), channel="mqtt")
            return DialReply(503, STORE_UNAVAILABLE)
        try:
            body = DialBody.model_validate(dict(command.request))
        except ValidationError as exc:
            errors = [
                {"field": ".".join(str(p) for p in e["loc"]), "error": e["msg"]} for e in exc.errors()
            ]
            raise MalformedMessage(
                "the dial command does not have the fields of POST /v1/dials",
                "拨号指令的字段与 POST /v1/dials 不符",
                details={"errors": errors},
            ) from exc
        if body.creditor is not None and not actor.can_see(body.creditor):
            raise UnauthorisedMessage(
                f"user {actor.name} is not cleared for creditor {body.creditor}",
                f"用户 {actor.name} 无权处理委托方 {body.creditor} 的案件",
                reason="wrong-creditor",
                details={"creditor": body.creditor},
            )
        try:
            result = await self.gate.request_dial(
                RequestDial(
                    actor=actor,
                    case_id=body.case_id,
                    number=body.number,
                    agent_id=body.agent_id,
                    channel="mqtt",
                    creditor=body.creditor,
                    request_key=command.idempotency_key,
                )
            )
        except NoSuchCase as exc:
            # Another creditor's case looks exactly like a missing one (as over HTTP).
            raise UnmatchedMessage(
                f"{exc.detail} among the creditors this user may work for",
                f"在该用户可处理的委托方中没有案件 {body.case_id}",
                reason="no-such-case",
                details={"case_id": body.case_id},
            ) from exc
        except StoreRefusedValue as exc:
            raise _refused_value(exc) from exc
        except StoreUnavailable as exc:
            # An outage, not the message's fault: answered as HTTP answers it, no dead letter.
            log.error("store.unavailable", error=str(exc), channel="mqtt")
            return DialReply(503, STORE_UNAVAILABLE)
        except ApiError as exc:
            if exc.status >= 500:
                # Not the message's fault (e.g. the PBX is not registered): answer with the
                # same problem as HTTP, no dead letter.
                return DialReply(exc.status, exc.to_problem())
            rejected = (UnauthorisedMessage if exc.status in (401, 403) else MalformedMessage)(
                exc.detail, f"请求被拒绝：{exc.title}", reason=exc.problem_id, details=exc.details
            )
            rejected.status = exc.status
            raise rejected from exc
        if not result.allowed:
            problem = DialBlocked(result.decision_json(), result.decision_id).to_problem()
            return DialReply(403, problem, replayed=result.replayed)
        attempt = result.attempt
        assert attempt is not None
        return DialReply(
            201,
            {
                "attempt_id": attempt.attempt_id,
                "state": attempt.state,
                "state_url": f"/v1/attempts/{attempt.attempt_id}",
                "valid_until": attempt.valid_until.isoformat(),
                "decision_id": result.decision_id,
                "decision": result.decision_json(),
            },
            replayed=result.replayed,
        )


class GatePbxHandler:
    """PBX call events → the application's attempt state use case (dialer/attempt_state.py);
    its refusals become dead letters with a bilingual reason."""

    def __init__(self, states: AttemptStates) -> None:
        self.states = states

    async def handle_pbx_event(self, event: PbxEvent) -> None:
        try:
            await self.states.apply_call_event(
                CallEvent(
                    pbx_id=event.pbx_id, kind=event.kind, occurred_at=event.occurred_at, call_id=event.call_id,
                    attempt_id=event.attempt_id, cause=event.cause, duration_s=event.duration_s,
                    recording=event.recording_path or event.recording_url, creditor=event.creditor,
                )
            )
        except NoSuchAttempt as exc:
            if "call_id" in exc.details:
                raise UnmatchedMessage(
                    "no attempt known for this SIP Call-ID (send attempt_id with the call's first event)",
                    "没有与该 SIP Call-ID 对应的拨号记录（请在该通话的首个事件中附带 attempt_id）",
                    details=exc.details,
                ) from exc
            raise UnmatchedMessage("no such attempt", "没有该拨号记录", details=exc.details) from exc
        except Forbidden as exc:
            raise UnauthorisedMessage(
                "the event's creditor is not the attempt's",
                "事件的委托方与拨号记录的委托方不符",
                reason="wrong-creditor",
                details=exc.details,
            ) from exc
        except StoreRefusedValue as exc:
            raise _refused_value(exc) from exc
        except Conflict as exc:
            raise MalformedMessage(
                "this Call-ID already belongs to another attempt",
                "该 Call-ID 已属于另一个拨号记录",
                reason="call-id-conflict",
                details=exc.details,
            ) from exc


@asynccontextmanager
async def open_mqtt(services: Any) -> AsyncIterator[MqttEventBus | None]:
    """Extension (dialer/bootstrap.py): the MQTT bus when `[mqtt] url` is set. The store is
    reached only as a `RelayStore` (dialer/outbox.py)."""
    config = _mqtt_config(services)
    if config is None:
        yield None
        return
    store: RelayStore = services.store
    source = store.outbox_source(
        now=lambda: services.clock.now().astimezone(UTC),
        retention=timedelta(days=config.published_retention_days),
    )
    bus = MqttEventBus(
        config,
        source,
        GateDialHandler(services.auth, services.gate),
        GatePbxHandler(AttemptStates(services.store, services.clock)),
        now=lambda: services.clock.now().astimezone(UTC),
    )
    # after COMMIT, never before: the relay must not look before the rows are visible
    forget = store.on_commit(bus.notify)
    services.mqtt = bus
    try:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(bus)
            # Other instances' commits wake this relay too (open_mqtt_waker).
            await stack.enter_async_context(store.commits_elsewhere(bus.notify))
            pool_lock = _pool_lock()
            if pool_lock and services.role == "primary":
                # The other workers' commits wake this relay too (open_mqtt_waker).
                path = wake_socket_path(pool_lock)
                try:
                    await stack.enter_async_context(RelayWakeListener(path, bus.notify))
                except OSError as exc:  # their events then wait for the poll: not worth failing for
                    log.warning("mqtt.wake_listener_failed", socket=str(path), error=str(exc),
                                poll_interval_s=config.poll_interval_s)
            log.info("mqtt.bus_started", broker=config.display_url, client_id=config.client_id)
            yield bus
    finally:
        forget()
        services.mqtt = None
        await source.aclose()  # a claim the relay did not get to mark goes back to the outbox


@asynccontextmanager
async def open_mqtt_waker(services: Any) -> AsyncIterator[Any]:
    """Extension factory entered by every worker: each committed write of this process
    wakes the relay that runs elsewhere. On PostgreSQL, any instance on the database
    while it does not run the bus itself (NOTIFY); in a secondary worker of a pool
    (dialer/workers.py), through the pool's wake socket. Only with `[mqtt] url` set;
    nothing elsewhere (the primary wakes its relay itself, in `open_mqtt`)."""
    store: RelayStore = services.store
    if store.is_postgres and _mqtt_config(services) is not None:
        async with store.announce_commits() as pg_waker:
            def wake() -> None:
                if services.mqtt is None:
                    pg_waker.wake_soon()

            forget = store.on_commit(wake)
            try:
                yield pg_waker
            finally:
                forget()
        return
    pool_lock = _pool_lock()
    if services.role != "secondary" or not pool_lock or _mqtt_config(services) is None:
        yield None
        return
    with RelayWaker(wake_socket_path(pool_lock)) as waker:
        forget = store.on_commit(waker.wake_soon)
        try:
            yield waker
        finally:
            forget()


def _pool_lock() -> str | None:
    """The pool's primary lock file when this process is a worker of `dialgate serve
    --workers N` (the wake socket lives beside it), else None."""
    from dialer.workers import LOCK_ENV

    return os.environ.get(LOCK_ENV) or None


def _mqtt_config(services: Any) -> MqttConfig | None:
    try:
        return load_mqtt_config(services.config.section("mqtt"), os.environ)
    except MqttConfigError as exc:
        raise ConfigError(f"{services.config.source}: {exc}") from exc


__all__ = ["GateDialHandler", "GatePbxHandler", "MessageRejected", "open_mqtt", "open_mqtt_waker"]
