"""`MqttEventBus`: the connection, the outbox relay and the inbound consumer together.

    async with MqttEventBus(config, outbox, dial_handler, pbx_handler) as bus:
        ...                      # bus.notify() after each commit that wrote events
        bus.health()             # for /readyz

One MQTT client (fixed client id, persistent session) carries both directions. The
relay runs as a named background task next to the connection's own task; leaving the
context stops both and cancels dial commands still in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from adapters.mqtt.config import MqttConfig
from adapters.mqtt.connection import MqttConnection
from adapters.mqtt.consumer import InboundConsumer, inbound_subscriptions
from adapters.mqtt.ports import DialCommandHandler, OutboxSource, PbxEventHandler
from adapters.mqtt.relay import OutboxRelay


class MqttEventBus:
    def __init__(
        self,
        config: MqttConfig,
        outbox: OutboxSource,
        dial_handler: DialCommandHandler | None = None,
        pbx_handler: PbxEventHandler | None = None,
        *,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self.connection = MqttConnection(
            config,
            subscriptions=inbound_subscriptions(dial_handler, pbx_handler),
            on_message=self._on_message,
        )
        self.consumer = InboundConsumer(
            self.connection,
            dial_handler,
            pbx_handler,
            dial_max_age_s=config.dial_max_age_s,
            now=now,
        )
        self.relay = OutboxRelay(
            outbox,
            self.connection,
            batch_size=config.batch_size,
            poll_interval_s=config.poll_interval_s,
            max_parallel_cases=config.max_parallel_cases,
        )
        self._relay_task: asyncio.Task[None] | None = None

    async def _on_message(self, message: Any) -> None:
        await self.consumer.handle(message)

    @property
    def connected(self) -> bool:
        return self.connection.connected

    def health(self) -> dict[str, Any]:
        h = self.connection.health()
        h["relay_published"] = self.relay.published
        h["deadlettered"] = self.consumer.deadlettered
        return h

    def notify(self) -> None:
        """Events were committed: wake the relay."""
        self.relay.notify()

    async def __aenter__(self) -> MqttEventBus:
        await self.connection.__aenter__()
        self._relay_task = asyncio.create_task(self.relay.run(), name="mqtt-outbox-relay")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._relay_task is not None:
            self._relay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._relay_task
        await self.consumer.aclose()
        await self.connection.__aexit__(*exc)
