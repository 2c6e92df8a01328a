"""Inbound messages: dial commands and PBX call events, never fatal.

`InboundConsumer.handle(message)` is given every message the connection receives:

- `dialgate/v1/commands/dial`: a JSON object with the fields of `POST /v1/dials`, the
  user's `token`, and for MQTT v3.1.1 clients `reply_to` (+ optional `correlation_id`).
  MQTT v5 clients set the Response Topic and Correlation Data properties instead. The
  reply is `{"status": <http-like>, "body": {...}}` (plus `correlation_id` when it was
  given in the payload), or `{"status": 4xx, "error": {...}}`.
  Dial commands run concurrently (bounded); each gets its own reply.
- `dialgate/v1/pbx/<pbx_id>/events`: `{"event": "answered"|"hangup"|"recording_ready",
  "call_id"|"attempt_id", "at", ...}`, handled one at a time in arrival order so a
  hangup never overtakes its answer.

Whatever is malformed, unauthorised, unmatched or makes a handler fail goes to
`dialgate/v1/deadletter` with its reason (schemas/events/v1/deadletter.schema.json)
and is logged; the consumer keeps running. Tokens are never echoed and digits are
masked in the excerpt of the original payload.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.mqtt.errors import (
    BrokerUnavailable,
    MalformedMessage,
    MessageRejected,
    UnauthorisedMessage,
)
from dialer.commands import is_request_key
from dialer.masking import mask_text
from adapters.mqtt.ports import (
    DialCommand,
    DialCommandHandler,
    EventPublisher,
    PbxEvent,
    PbxEventHandler,
)
from adapters.mqtt.topics import (
    DEADLETTER,
    DIAL_COMMANDS,
    PBX_EVENTS_FILTER,
    pbx_id_of,
    reply_topic_problem,
)

log = structlog.get_logger("dialgate.mqtt.consumer")

_DIAL_CONTROL_KEYS = frozenset({"token", "reply_to", "correlation_id", "requested_at", "idempotency_key"})
_PBX_KINDS = ("answered", "hangup", "recording_ready")
_MAX_ID = 256
_EXCERPT = 1024
_SECRET_FIELD = re.compile(r'"(token|password|secret)"\s*:\s*"(?:[^"\\]|\\.)*"?')


def _utc_now() -> datetime:
    return datetime.now(UTC)


class InboundConsumer:
    def __init__(
        self,
        publisher: EventPublisher,
        dial_handler: DialCommandHandler | None,
        pbx_handler: PbxEventHandler | None,
        *,
        max_concurrent_dials: int = 32,
        dial_max_age_s: float = 120.0,
        now: Callable[[], datetime] | None = None,  # None: the UTC wall clock
    ) -> None:
        self._publisher = publisher
        self._dial_handler = dial_handler
        self._pbx_handler = pbx_handler
        self._dial_gate = asyncio.Semaphore(max_concurrent_dials)
        self._dial_max_age = timedelta(seconds=dial_max_age_s)
        self._tasks: set[asyncio.Task[None]] = set()
        self._now = now if now is not None else _utc_now
        self.handled = 0
        self.deadlettered = 0

    @property
    def subscriptions(self) -> tuple[str, ...]:
        return inbound_subscriptions(self._dial_handler, self._pbx_handler)

    async def handle(self, message: aiomqtt.Message) -> None:
        """Entry point for the connection; returns quickly, never raises."""
        topic = str(message.topic)
        message_id = str(uuid.uuid4())
        try:
            if topic == DIAL_COMMANDS and self._dial_handler is not None:
                # Wait for a slot here, so a flood of commands back-pressures the reader.
                await self._dial_gate.acquire()
                task = asyncio.create_task(
                    self._dial(message, message_id), name=f"mqtt-dial:{message_id}"
                )
                self._tasks.add(task)
                task.add_done_callback(self._dial_done)
                return
            pbx_id = pbx_id_of(topic)
            if pbx_id is not None and self._pbx_handler is not None:
                await self._pbx(message, pbx_id, message_id)
                return
            raise MalformedMessage(
                f"no handler for topic {topic}",
                f"主题 {topic} 没有处理程序",
                reason="unknown-topic",
            )
        except MessageRejected as exc:
            await self._deadletter(message, message_id, exc)
        except Exception as exc:  # never fatal
            log.exception("mqtt.consumer.failed", topic=topic, message_id=message_id)
            await self._deadletter(message, message_id, _internal(exc))

    def _dial_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._dial_gate.release()

    async def drain(self) -> None:
        """Wait for the dial commands in progress (tests, orderly shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self, grace_s: float = 5.0) -> None:
        """Let dial commands in progress finish (bounded), then cancel the rest."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace_s)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- dial commands ---------------------------------------------------------------

    async def _dial(self, message: aiomqtt.Message, message_id: str) -> None:
        route: _ReplyRoute | None = None
        try:
            try:
                doc = _json_object(message.payload)
            except MessageRejected:
                # A v5 client named its reply topic outside the payload: it hears why too.
                route = _properties_route(message)
                raise
            route = _reply_route(message, doc)
            token = doc.get("token")
            if not isinstance(token, str) or not token.strip():
                raise UnauthorisedMessage(
                    "dial command without a user token",
                    "拨号指令缺少用户令牌",
                    details={"field": "token"},
                )
            self._refuse_if_stale(doc)
            key = _idempotency_key(doc)
            request = {k: v for k, v in doc.items() if k not in _DIAL_CONTROL_KEYS}
            assert self._dial_handler is not None
            reply = await self._dial_handler.handle_dial(
                DialCommand(token=token, request=request, message_id=message_id, idempotency_key=key)
            )
            self.handled += 1
            log.info("mqtt.dial_command.handled", message_id=message_id, status=reply.status, replayed=reply.replayed)
            answer: dict[str, Any] = {"status": reply.status, "body": dict(reply.body)}
            if reply.replayed:
                answer["replayed"] = True
            await self._reply(route, answer)
        except MessageRejected as exc:
            await self._reply(route, _error_reply(exc))
            await self._deadletter(message, message_id, exc)
        except Exception as exc:
            log.exception("mqtt.dial_command.failed", message_id=message_id)
            rejected = _internal(exc)
            await self._reply(route, _error_reply(rejected))
            await self._deadletter(message, message_id, rejected)

    def _refuse_if_stale(self, doc: Mapping[str, Any]) -> None:
        """A dial command queued for us while we were down must not ring a debtor hours
        after the collector clicked: `requested_at` older than the limit is refused.
        (MQTT v5 clients can also set Message Expiry; the broker then drops it.)"""
        raw = doc.get("requested_at")
        if raw is None:
            return
        try:
            at = datetime.fromisoformat(str(raw))
        except ValueError:
            at = None
        if at is None or at.tzinfo is None:
            raise MalformedMessage(
                "requested_at must be an ISO 8601 time with a UTC offset",
                "requested_at 必须是带时区偏移的 ISO 8601 时间",
                details={"field": "requested_at"},
            )
        age = self._now() - at
        if age > self._dial_max_age:
            rejected = MalformedMessage(
                f"dial command is stale: requested {int(age.total_seconds())} s ago "
                f"(limit {int(self._dial_max_age.total_seconds())} s); dial again",
                f"拨号指令已过期：{int(age.total_seconds())} 秒前发出"
                f"（上限 {int(self._dial_max_age.total_seconds())} 秒），请重新拨号",
                reason="stale",
                details={"requested_at": str(raw)},
            )
            rejected.status = 408
            raise rejected

    async def _reply(self, route: _ReplyRoute | None, doc: dict[str, Any]) -> None:
        if route is None:
            return
        props = None
        if route.correlation_data is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho-mqtt leaves it unannotated
            props.CorrelationData = route.correlation_data
        if route.correlation_id is not None:
            doc["correlation_id"] = route.correlation_id
        payload = json.dumps(doc, ensure_ascii=False, default=str).encode()
        try:
            await self._publisher.publish(route.topic, payload, qos=1, properties=props)
        except BrokerUnavailable as exc:
            log.warning("mqtt.reply_lost", topic=route.topic, error=str(exc))

    # -- PBX events --------------------------------------------------------------

    async def _pbx(self, message: aiomqtt.Message, pbx_id: str, message_id: str) -> None:
        event = parse_pbx_event(message.payload, pbx_id, message_id, self._now)
        assert self._pbx_handler is not None
        await self._pbx_handler.handle_pbx_event(event)
        self.handled += 1
        log.info(
            "mqtt.pbx_event.handled",
            pbx_id=pbx_id,
            kind=event.kind,
            attempt_id=event.attempt_id,
            message_id=message_id,
        )

    # -- dead letters ------------------------------------------------------------

    async def _deadletter(
        self, message: aiomqtt.Message, message_id: str, exc: MessageRejected
    ) -> None:
        self.deadlettered += 1
        record = {
            "dead_letter_id": message_id,
            "reason": exc.reason,
            "message": exc.message,
            "message_zh": exc.message_zh,
            "details": exc.details,
            "topic": str(message.topic),
            "received_at": self._now().isoformat(),
            "payload_excerpt": _excerpt(message.payload),
        }
        log.warning(
            "mqtt.deadletter",
            reason=exc.reason,
            topic=str(message.topic),
            message_id=message_id,
            detail=exc.message,
        )
        try:
            await self._publisher.publish(
                DEADLETTER, json.dumps(record, ensure_ascii=False, default=str).encode(), qos=1
            )
        except BrokerUnavailable as err:
            log.error("mqtt.deadletter_lost", message_id=message_id, error=str(err))


def inbound_subscriptions(
    dial_handler: DialCommandHandler | None, pbx_handler: PbxEventHandler | None
) -> tuple[str, ...]:
    """The topic filters to subscribe to for the handlers that are present."""
    subs = []
    if dial_handler is not None:
        subs.append(DIAL_COMMANDS)
    if pbx_handler is not None:
        subs.append(PBX_EVENTS_FILTER)
    return tuple(subs)


class _ReplyRoute:
    __slots__ = ("correlation_data", "correlation_id", "topic")

    def __init__(self, topic: str, correlation_data: bytes | None, correlation_id: Any) -> None:
        self.topic = topic
        self.correlation_data = correlation_data
        self.correlation_id = correlation_id


def _reply_route(message: aiomqtt.Message, doc: Mapping[str, Any]) -> _ReplyRoute | None:
    props = message.properties
    topic = getattr(props, "ResponseTopic", None) if props is not None else None
    if topic:
        data = getattr(props, "CorrelationData", None)
        route = _ReplyRoute(topic, bytes(data) if data is not None else None, None)
    else:
        reply_to = doc.get("reply_to")
        if reply_to is None:
            return None
        if not isinstance(reply_to, str):
            raise MalformedMessage("reply_to must be a topic string", "reply_to 必须是主题字符串")
        cid = doc.get("correlation_id")
        if cid is not None and not isinstance(cid, (str, int)):
            raise MalformedMessage(
                "correlation_id must be a string or integer", "correlation_id 必须是字符串或整数"
            )
        route = _ReplyRoute(reply_to, None, cid)
    problem = reply_topic_problem(route.topic)
    if problem is not None:
        raise UnauthorisedMessage(
            f"refused reply topic: {problem}",
            f"拒绝的回复主题：{problem}",
            reason="bad-reply-topic",
            details={"reply_topic": route.topic[:200]},
        )
    return route


def _properties_route(message: aiomqtt.Message) -> _ReplyRoute | None:
    """The MQTT v5 Response Topic route of a message whose payload could not be read."""
    try:
        return _reply_route(message, {})
    except MessageRejected:
        return None


def _json_object(payload: bytes | bytearray | Any) -> dict[str, Any]:
    if not isinstance(payload, (bytes, bytearray)):
        payload = str(payload).encode()
    try:
        doc = json.loads(bytes(payload).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedMessage(
            f"payload is not UTF-8 JSON ({type(exc).__name__})",
            "消息内容不是 UTF-8 编码的 JSON",
        ) from exc
    except RecursionError as exc:  # the decoder's answer to deep nesting is not a ValueError
        raise MalformedMessage("payload JSON is nested too deep", "消息内容的 JSON 嵌套过深") from exc
    if not isinstance(doc, dict):
        raise MalformedMessage(
            f"payload must be a JSON object, got {type(doc).__name__}",
            "消息内容必须是 JSON 对象",
        )
    return doc


def _opt_str(doc: Mapping[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_ID:
        raise MalformedMessage(
            f"{key} must be a non-empty string of at most {_MAX_ID} characters",
            f"{key} 必须是非空字符串，最多 {_MAX_ID} 个字符",
            details={"field": key},
        )
    return value


def parse_pbx_event(
    payload: bytes, pbx_id: str, message_id: str, now: Callable[[], datetime]
) -> PbxEvent:
    """Validate a PBX event payload; MalformedMessage names the field that is wrong."""
    doc = _json_object(payload)
    kind = doc.get("event")
    if kind not in _PBX_KINDS:
        raise MalformedMessage(
            f"event must be one of {', '.join(_PBX_KINDS)}, got {str(kind)[:40]!r}",
            f"event 必须是 {'、'.join(_PBX_KINDS)} 之一",
            details={"field": "event"},
        )
    call_id, attempt_id = _opt_str(doc, "call_id"), _opt_str(doc, "attempt_id")
    if call_id is None and attempt_id is None:
        raise MalformedMessage(
            "a PBX event needs call_id (SIP Call-ID) or attempt_id",
            "PBX 事件需要 call_id（SIP Call-ID）或 attempt_id",
            details={"field": "call_id"},
        )
    at_raw = doc.get("at")
    occurred_at: datetime | None
    if at_raw is None:
        occurred_at = now()
    else:
        try:
            occurred_at = datetime.fromisoformat(str(at_raw))
        except ValueError:
            occurred_at = None
        if occurred_at is None or occurred_at.tzinfo is None:
            raise MalformedMessage(
                "at must be an ISO 8601 time with a UTC offset",
                "at 必须是带时区偏移的 ISO 8601 时间",
                details={"field": "at"},
            )
    cause = duration = path = url = None
    if kind == "hangup":
        raw_cause = doc.get("cause")
        if isinstance(raw_cause, bool) or not isinstance(raw_cause, (str, int)) or raw_cause == "":
            raise MalformedMessage(
                "hangup needs a cause (string or SIP/Q.850 code)",
                "挂机事件需要挂断原因（字符串或 SIP/Q.850 代码）",
                details={"field": "cause"},
            )
        cause = str(raw_cause)[:64]
        raw_duration = doc.get("duration_s")
        if (
            isinstance(raw_duration, bool)
            or not isinstance(raw_duration, (int, float))
            or not 0 <= raw_duration <= 86_400
        ):
            raise MalformedMessage(
                "hangup needs duration_s, seconds between 0 and 86400",
                "挂机事件需要 duration_s（0 到 86400 秒）",
                details={"field": "duration_s"},
            )
        duration = float(raw_duration)
    elif kind == "recording_ready":
        path, url = _opt_str(doc, "recording_path"), _opt_str(doc, "recording_url")
        if (path is None) == (url is None):
            raise MalformedMessage(
                "recording_ready needs exactly one of recording_path or recording_url",
                "录音就绪事件需要 recording_path 或 recording_url 之一（仅一个）",
                details={"field": "recording_path"},
            )
        if path is not None and not path.startswith("/"):
            raise MalformedMessage(
                "recording_path must be absolute",
                "recording_path 必须是绝对路径",
                details={"field": "recording_path"},
            )
        if url is not None and not url.startswith(("http://", "https://", "s3://", "file://")):
            raise MalformedMessage(
                "recording_url must be an http(s)://, s3:// or file:// URL",
                "recording_url 必须是 http(s)://、s3:// 或 file:// 地址",
                details={"field": "recording_url"},
            )
    return PbxEvent(
        pbx_id=pbx_id,
        kind=kind,
        occurred_at=occurred_at,
        call_id=call_id,
        attempt_id=attempt_id,
        cause=cause,
        duration_s=duration,
        recording_path=path,
        recording_url=url,
        creditor=_opt_str(doc, "creditor"),
        message_id=message_id,
    )


def _error_reply(exc: MessageRejected) -> dict[str, Any]:
    return {
        "status": exc.status,
        "error": {
            "type": exc.reason,
            "message": exc.message,
            "message_zh": exc.message_zh,
            "details": exc.details,
        },
    }


def _internal(exc: Exception) -> MessageRejected:
    rejected = MessageRejected(
        f"handler failed ({type(exc).__name__})",
        "处理失败（内部错误）",
        reason="handler-failed",
    )
    rejected.status = 500
    return rejected


def _excerpt(payload: Any) -> str:
    raw = payload if isinstance(payload, (bytes, bytearray)) else str(payload).encode()
    text = bytes(raw[: _EXCERPT * 4]).decode("utf-8", errors="replace")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):  # a payload nested too deep is excerpted as text
        doc = None
    if isinstance(doc, dict):
        for key in ("token", "password", "secret"):
            if key in doc:
                doc[key] = "***"
        text = json.dumps(doc, ensure_ascii=False)
    # Also for the text of a parsed document: a secret nested in it is echoed otherwise,
    # and the dead-letter topic is read by every consumer of the bus.
    text = _SECRET_FIELD.sub(r'"\1":"***"', text)
    return mask_text(text)[:_EXCERPT]


def _idempotency_key(doc: Mapping[str, Any]) -> str | None:
    """The command's `idempotency_key` (1-128 printable ASCII characters), or None; the
    same rule as the `Idempotency-Key` header of `POST /v1/dials`."""
    key = doc.get("idempotency_key")
    if key is None:
        return None
    if not isinstance(key, str) or not is_request_key(key):
        raise MalformedMessage(
            "idempotency_key must be 1-128 printable ASCII characters",
            "idempotency_key 必须是 1-128 个可打印 ASCII 字符",
            details={"field": "idempotency_key"},
        )
    return key
