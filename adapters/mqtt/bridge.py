"""The MQTT bus wired to the gate service: the extension `open_mqtt(services)`.

Started by the composition root (dialer/bootstrap.py `extensions`) when `[mqtt] url` is set:

- Out: the relay publishes the service's `outbox` table (SqlAlchemyOutboxSource). It is
  woken after every committed write transaction of the store, plus a slow poll. It also
  deletes rows published more than `[mqtt] published_retention_days` ago.
- In, `dialgate/v1/commands/dial`: the user's token is checked with the service's
  Authenticator, the body validated as `POST /v1/dials`'s, and the same RequestDial use
  case runs with channel "mqtt". The reply carries the HTTP answer: 201 and the same
  body as the API, or 403 with the `dial-blocked` problem (a blocked dial is an answer,
  not a dead letter). Bad token, wrong creditor, unknown case, malformed body: dead
  letter plus an error reply.
- In, `dialgate/v1/pbx/<pbx_id>/events`: matched to an attempt by `attempt_id`, or by
  SIP Call-ID through the call map this bridge keeps (`mqtt_pbx_calls`): the first
  event of a call that names both teaches it. `answered` marks the attempt connected
  (it then counts for the "connected calls" caps) and dialing if it was only
  authorised; `hangup` with a talk time > 0 also marks it connected; every event is
  written as an `attempt.state` event with the PBX's details, in one transaction.

`services.mqtt` is set to the bus for /readyz and the console's health strip.

In a worker pool (`dialgate serve --workers N`) the bus runs in the primary only, which
also listens on the pool's wake socket (adapters/mqtt/waker.py); the extension
`open_mqtt_waker`, entered by every worker, makes a secondary's commits wake it. On
PostgreSQL the bus runs in the leader of every instance on the database
(dialer/leadership.py) and the wake travels as NOTIFY (adapters/db/outbox_notify.py).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from pydantic import ValidationError

from adapters.db.outbox_source import SqlAlchemyOutboxSource
from adapters.mqtt.bus import MqttEventBus
from adapters.mqtt.config import MqttConfig, load_mqtt_config
from adapters.mqtt.errors import (
    MalformedMessage,
    MessageRejected,
    MqttConfigError,
    UnauthorisedMessage,
    UnmatchedMessage,
)
from dialer.masking import mask_path
from adapters.mqtt.ports import DialCommand, DialReply, PbxEvent
from adapters.mqtt.waker import RelayWaker, RelayWakeListener, wake_socket_path

log = structlog.get_logger("dialgate.mqtt.bridge")

metadata = sa.MetaData()
# SIP Call-ID → attempt, learnt from PBX events that carry both (this adapter's table on
# the service's database, built by migration 0301_mqtt; a test compares the two).
pbx_calls = sa.Table(
    "mqtt_pbx_calls",
    metadata,
    sa.Column("call_id", sa.String(256), primary_key=True),
    sa.Column("attempt_id", sa.String(64), nullable=False, index=True),
    sa.Column("pbx_id", sa.String(128), nullable=False),
    sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
)


class GateDialHandler:
    """Dial commands → the RequestDial use case, exactly as `POST /v1/dials`."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def handle_dial(self, command: DialCommand) -> DialReply:
        from dialer.errors import ApiError, DialBlocked, NoSuchCase, Unauthenticated
        from dialer.http.dials import DialBody
        from dialer.usecases import RequestDial

        try:
            actor = await self.services.auth.authenticate(f"Bearer {command.token}")
        except Unauthenticated as exc:
            raise UnauthorisedMessage(
                f"token refused: {exc.detail}", "令牌被拒绝：未知或已吊销的令牌"
            ) from exc
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
            result = await self.services.gate.request_dial(
                RequestDial(
                    actor=actor,
                    case_id=body.case_id,
                    number=body.number,
                    agent_id=body.agent_id,
                    channel="mqtt",
                    creditor=body.creditor,
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
            return DialReply(403, problem)
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
        )


class GatePbxHandler:
    """PBX call events → attempt state, connected flag and an `attempt.state` event."""

    def __init__(self, services: Any) -> None:
        self.services = services

    def _now(self) -> datetime:
        return self.services.clock.now().astimezone(UTC)

    async def handle_pbx_event(self, event: PbxEvent) -> None:
        store = self.services.store
        async with store.write() as uow:
            attempt_id = event.attempt_id
            if attempt_id is None:
                row = (
                    await uow.conn.execute(
                        sa.select(pbx_calls.c.attempt_id).where(pbx_calls.c.call_id == event.call_id)
                    )
                ).first()
                if row is None:
                    raise UnmatchedMessage(
                        "no attempt known for this SIP Call-ID (send attempt_id with the "
                        "call's first event)",
                        "没有与该 SIP Call-ID 对应的拨号记录（请在该通话的首个事件中附带 attempt_id）",
                        details={"call_id": event.call_id},
                    )
                attempt_id = row.attempt_id
            attempt = await uow.attempts.get(attempt_id)
            if attempt is None:
                raise UnmatchedMessage(
                    "no such attempt", "没有该拨号记录", details={"attempt_id": attempt_id}
                )
            if event.creditor is not None and event.creditor != attempt.creditor:
                raise UnauthorisedMessage(
                    "the event's creditor is not the attempt's",
                    "事件的委托方与拨号记录的委托方不符",
                    reason="wrong-creditor",
                    details={"attempt_id": attempt_id, "creditor": event.creditor},
                )
            if event.call_id is not None and event.attempt_id is not None:
                await self._learn_call(uow, event, attempt_id)

            state = "dialing" if attempt.state == "authorised" else attempt.state
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
                payload["recording"] = mask_path(event.recording_path or event.recording_url or "")
            await uow.outbox.add(
                "attempt.state",
                creditor=attempt.creditor,
                case_pk=attempt.case_pk,
                case_id=attempt.case_id,
                occurred_at=self._now(),
                payload=payload,
            )

    async def _learn_call(self, uow: Any, event: PbxEvent, attempt_id: str) -> None:
        known = (
            await uow.conn.execute(
                sa.select(pbx_calls.c.attempt_id).where(pbx_calls.c.call_id == event.call_id)
            )
        ).first()
        if known is None:
            await uow.conn.execute(
                sa.insert(pbx_calls).values(
                    call_id=event.call_id,
                    attempt_id=attempt_id,
                    pbx_id=event.pbx_id,
                    first_seen=self._now(),
                )
            )
        elif known.attempt_id != attempt_id:
            raise MalformedMessage(
                "this Call-ID already belongs to another attempt",
                "该 Call-ID 已属于另一个拨号记录",
                reason="call-id-conflict",
                details={"call_id": event.call_id},
            )


def _notify_after_commits(store: Any, notify: Callable[[], None]) -> Callable[[], None]:
    """Wake the relay after each committed write transaction of the store.

    Wraps the store instance's `write` (the composition root owns that object): the
    notify runs only after the `async with` exited cleanly, i.e. after COMMIT, so the
    relay never looks before the rows are visible. Returns the undo.
    """
    original = store.write

    @asynccontextmanager
    async def write(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async with original(*args, **kwargs) as uow:
            yield uow
        notify()

    store.write = write

    def restore() -> None:
        store.write = original

    return restore


@asynccontextmanager
async def open_mqtt(services: Any) -> AsyncIterator[MqttEventBus | None]:
    """Extension (dialer/bootstrap.py): the MQTT bus when `[mqtt] url` is set."""
    config = _mqtt_config(services)
    if config is None:
        yield None
        return
    store = services.store
    source = SqlAlchemyOutboxSource(
        store,
        now=lambda: services.clock.now().astimezone(UTC),
        write=store.write,
        retention=timedelta(days=config.published_retention_days),
    )
    bus = MqttEventBus(
        config,
        source,
        GateDialHandler(services),
        GatePbxHandler(services),
        now=lambda: services.clock.now().astimezone(UTC),
    )
    restore = _notify_after_commits(store, bus.notify)
    services.mqtt = bus
    try:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(bus)
            if getattr(store, "is_postgres", False):
                # Other instances' commits wake this relay too (open_mqtt_waker).
                from adapters.db.leader import asyncpg_dsn
                from adapters.db.outbox_notify import PgOutboxListener

                await stack.enter_async_context(PgOutboxListener(asyncpg_dsn(store.url), bus.notify))
            pool_lock = _pool_lock()
            if pool_lock and getattr(services, "role", "primary") == "primary":
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
        restore()
        services.mqtt = None
        await source.aclose()  # a claim the relay did not get to mark goes back to the outbox


@asynccontextmanager
async def open_mqtt_waker(services: Any) -> AsyncIterator[RelayWaker | None]:
    """Extension factory entered by every worker: in a secondary worker of a pool
    (dialer/workers.py) with `[mqtt] url` set, each committed write of its store wakes
    the primary's relay through the pool's wake socket. Nothing elsewhere (the primary
    wakes its relay itself, in `open_mqtt`)."""
    if getattr(services.store, "is_postgres", False) and _mqtt_config(services) is not None:
        # Any instance on the database, while it does not run the bus itself.
        from adapters.db.leader import asyncpg_dsn
        from adapters.db.outbox_notify import PgOutboxWaker

        async with PgOutboxWaker(asyncpg_dsn(services.store.url)) as pg_waker:
            def wake() -> None:
                if services.mqtt is None:
                    pg_waker.wake_soon()

            restore = _notify_after_commits(services.store, wake)
            try:
                yield pg_waker
            finally:
                restore()
        return
    pool_lock = _pool_lock()
    if getattr(services, "role", "primary") != "secondary" or not pool_lock or _mqtt_config(services) is None:
        yield None
        return
    with RelayWaker(wake_socket_path(pool_lock)) as waker:
        restore = _notify_after_commits(services.store, waker.wake_soon)
        try:
            yield waker
        finally:
            restore()


def _pool_lock() -> str | None:
    """The pool's primary lock file when this process is a worker of `dialgate serve
    --workers N` (the wake socket lives beside it), else None."""
    from dialer.workers import LOCK_ENV

    return os.environ.get(LOCK_ENV) or None


def _mqtt_config(services: Any) -> MqttConfig | None:
    from dialer.errors import ConfigError

    try:
        return load_mqtt_config(services.config.section("mqtt"), os.environ)
    except MqttConfigError as exc:
        raise ConfigError(f"{services.config.source}: {exc}") from exc


__all__ = ["GateDialHandler", "GatePbxHandler", "MessageRejected", "open_mqtt", "open_mqtt_waker"]
