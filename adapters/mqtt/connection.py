"""One MQTT connection that stays up: reconnects, re-subscribes, reports its state.

`MqttConnection` is an async context manager. Entering starts a named background task
that creates an aiomqtt client inside the running loop, connects, subscribes, and reads
messages until the connection drops; then it waits a capped, jittered backoff and does
it all again, for as long as the context is open. The session is persistent (fixed
client id; MQTT v5 clean start off with a session expiry, or v3.1.1 clean session off),
so the broker queues QoS 1 messages for us while we are away.

`publish` returns only once the broker acknowledged a QoS 1 message (PUBACK) and raises
`BrokerUnavailable` when there is no connection or it drops first: it never waits out a
dead socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.mqtt.backoff import Backoff
from adapters.mqtt.config import MqttConfig
from adapters.mqtt.errors import BrokerUnavailable

log = structlog.get_logger("dialgate.mqtt")

MessageCallback = Callable[[aiomqtt.Message], Awaitable[None]]


class MqttConnection:
    def __init__(
        self,
        config: MqttConfig,
        *,
        subscriptions: Sequence[str] = (),
        on_message: MessageCallback | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.config = config
        self._subscriptions = tuple(subscriptions)
        self._on_message = on_message
        self._backoff = backoff or Backoff(base=config.reconnect_min_s, cap=config.reconnect_max_s)
        self._client: aiomqtt.Client | None = None
        self._lost: asyncio.Future[None] | None = None
        self._up = asyncio.Event()
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._state = "stopped"
        self._since = datetime.now(UTC)
        self._connects = 0
        self._last_error: str | None = None

    # -- state ---------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def connects(self) -> int:
        """How many times a connection was established (1 + reconnects)."""
        return self._connects

    def health(self) -> dict[str, Any]:
        """Broker state for /readyz: ok, state, broker (no password), since, last error."""
        return {
            "ok": self.connected,
            "state": self._state,
            "broker": self.config.display_url,
            "client_id": self.config.client_id,
            "since": self._since.isoformat(),
            "connects": self._connects,
            "last_error": self._last_error,
        }

    async def wait_connected(self, timeout: float | None = None) -> bool:
        """True once connected; False if `timeout` passed first."""
        try:
            async with asyncio.timeout(timeout):
                await self._up.wait()
        except TimeoutError:
            return False
        return True

    async def wait_for_connects(self, count: int, timeout: float) -> bool:
        """True once `count` connections were made in total (so `count - 1` reconnects)
        and the connection is up; False if `timeout` passed first."""
        return await self.wait_health(
            lambda _h: self._connects >= count and self.connected, timeout
        )

    async def wait_health(
        self, predicate: Callable[[dict[str, Any]], Any], timeout: float
    ) -> bool:
        """True once `predicate(health())` holds, re-checked at every connect and every
        failed or lost connection; False if `timeout` passed first."""
        async with self._changed:
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait_for(lambda: predicate(self.health()))
            except TimeoutError:
                return False
        return True

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> MqttConnection:
        self._set_state("connecting")
        self._task = asyncio.create_task(self._run(), name=f"mqtt-connection:{self.config.client_id}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._set_state("stopped")

    def _set_state(self, state: str, error: str | None = None) -> None:
        self._state = state
        self._since = datetime.now(UTC)
        if error is not None:
            self._last_error = error

    def _make_client(self) -> aiomqtt.Client:
        cfg = self.config
        kwargs: dict[str, Any] = {}
        if cfg.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho-mqtt leaves it unannotated
            props.SessionExpiryInterval = cfg.session_expiry_s
            kwargs.update(
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=False,  # resume the session on every connect, the first too
                properties=props,
            )
        else:
            kwargs.update(protocol=aiomqtt.ProtocolVersion.V311, clean_session=False)
        if cfg.tls:
            kwargs.update(tls_context=self._tls_context(), tls_insecure=cfg.tls_insecure)
        client = aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=cfg.password,
            identifier=cfg.client_id,
            keepalive=cfg.keepalive_s,
            timeout=cfg.publish_timeout_s,
            max_inflight_messages=cfg.max_inflight,
            # Events are small and latency matters: do not let Nagle hold them back.
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            **kwargs,
        )
        # Many publishes awaiting PUBACK at once is our normal load, not a warning.
        client.pending_calls_threshold = max(10, cfg.max_parallel_cases + cfg.max_inflight + 64)
        return client

    def _tls_context(self) -> ssl.SSLContext:
        cfg = self.config
        ctx = ssl.create_default_context(cafile=cfg.ca_file)
        if cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        if cfg.tls_insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = time.monotonic()
            try:
                client = self._make_client()
                async with client:
                    for topic in self._subscriptions:
                        await client.subscribe(topic, qos=1)
                    self._lost = loop.create_future()
                    self._client = client
                    self._connects += 1
                    self._up.set()
                    self._set_state("connected")
                    self._backoff.reset()
                    async with self._changed:
                        self._changed.notify_all()
                    log.info(
                        "mqtt.connected",
                        broker=self.config.display_url,
                        client_id=self.config.client_id,
                        connects=self._connects,
                        subscriptions=list(self._subscriptions),
                    )
                    async for message in client.messages:
                        await self._dispatch(message)
            except (aiomqtt.MqttError, OSError) as exc:
                self._drop(f"{type(exc).__name__}: {exc}")
            except asyncio.CancelledError:
                self._drop("stopped")
                raise
            except Exception as exc:  # a library bug must not end the reconnect loop
                log.exception("mqtt.connection_failed", broker=self.config.display_url)
                self._drop(f"{type(exc).__name__}: {exc}")
            except BaseException:
                self._drop("stopped")
                raise
            async with self._changed:
                self._changed.notify_all()
            delay = self._backoff.next_delay()
            log.warning(
                "mqtt.disconnected",
                broker=self.config.display_url,
                error=self._last_error,
                retry_in_s=round(delay, 3),
                was_up_s=round(time.monotonic() - started, 3),
            )
            await asyncio.sleep(delay)

    def _drop(self, error: str) -> None:
        self._client = None
        self._up.clear()
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        self._set_state("connecting", error)

    async def _dispatch(self, message: aiomqtt.Message) -> None:
        if self._on_message is None:
            return
        try:
            await self._on_message(message)
        except Exception:  # a message is never fatal to the connection
            log.exception("mqtt.message_handler_failed", topic=str(message.topic))

    # -- publishing ----------------------------------------------------------------

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, properties: Any = None
    ) -> None:
        client, lost = self._client, self._lost
        if client is None or lost is None or lost.done():
            raise BrokerUnavailable(f"not connected to {self.config.display_url}")
        pub = asyncio.ensure_future(
            client.publish(topic, payload, qos=qos, properties=properties)
        )
        try:
            await asyncio.wait((pub, lost), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pub.cancel()
            raise
        if not pub.done():
            pub.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await pub
            raise BrokerUnavailable("connection lost before the broker acknowledged")
        try:
            pub.result()
        except aiomqtt.MqttError as exc:
            raise BrokerUnavailable(f"publish failed: {exc}") from exc
