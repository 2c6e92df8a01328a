"""Test-side MQTT clients written straight on aiomqtt (not on the adapter under test)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


@dataclass
class Received:
    topic: str
    payload: bytes
    properties: Any

    def json(self) -> Any:
        return json.loads(self.payload)


class Collector:
    """A persistent-session subscriber that survives broker restarts and records all.

    `wait_until(pred)` waits on the arrival of messages (bounded), never on a clock.
    """

    def __init__(self, port: int, topics: list[str], client_id: str) -> None:
        self.port = port
        self.topics = topics
        self.client_id = client_id
        self.messages: list[Received] = []
        self.connects = 0
        self._changed = asyncio.Condition()
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._subscribed.wait(), 15)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
            client = aiomqtt.Client(
                "127.0.0.1",
                self.port,
                identifier=self.client_id,
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=False,
                properties=props,
                timeout=5,
            )
            try:
                async with client:
                    self.connects += 1
                    for t in self.topics:
                        await client.subscribe(t, qos=1)
                    self._subscribed.set()
                    async for m in client.messages:
                        self.messages.append(Received(str(m.topic), bytes(m.payload), m.properties))
                        async with self._changed:
                            self._changed.notify_all()
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)  # the broker is away; try again soon

    async def wait_until(self, predicate: Callable[[list[Received]], bool], timeout: float) -> None:
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: predicate(self.messages)), timeout
            )

    def on(self, topic: str) -> list[Received]:
        return [m for m in self.messages if m.topic == topic]


async def publish_once(
    port: int,
    topic: str,
    payload: bytes,
    *,
    protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V5,
    properties: Properties | None = None,
) -> None:
    async with aiomqtt.Client("127.0.0.1", port, protocol=protocol, timeout=5) as client:
        await client.publish(topic, payload, qos=1, properties=properties)
