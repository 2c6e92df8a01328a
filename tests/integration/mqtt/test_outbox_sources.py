"""The OutboxSource contract on every implementation: in memory, and the SQLAlchemy one
over the gate's own outbox table on SQLite and on PostgreSQL; then the relay over the
database ones to a real Mosquitto."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from adapters.db import tables
from adapters.db.outbox_source import SqlAlchemyOutboxSource
from adapters.mqtt.bus import MqttEventBus
from adapters.mqtt.config import load_mqtt_config
from tests.support.outbox import InMemoryOutboxSource
from dialer.bootstrap import open_services
from dialer.config import build_config
from tests.integration.mqtt.helpers import Collector
from tests.support.pg import private_pg_database


class Writer:
    """Commits events the way the gate does (its own `outbox.add` in a write
    transaction), or appends to the in-memory outbox."""

    def __init__(self, source: Any, store: Any | None) -> None:
        self.source = source
        self.store = store

    async def commit(self, *events: tuple[str, str, dict]) -> None:
        if self.store is None:
            for creditor, case_id, fields in events:
                self.source.append("case.updated", creditor, case_id, fields)
            return
        async with self.store.write() as uow:
            for creditor, case_id, fields in events:
                await uow.outbox.add(
                    "case.updated", creditor=creditor, case_pk=None, case_id=case_id,
                    occurred_at=datetime.now(UTC), payload=fields,
                )

    async def stored_payloads(self) -> dict[str, bytes]:
        if self.store is None:
            return {e.event_id: e.payload for e in self.source.events}
        async with self.store.read() as uow:
            rows = (await uow.conn.execute(select(tables.outbox))).all()
        return {r.event_id: r.payload.encode() for r in rows}

    async def published_marks(self) -> list[Any]:
        async with self.store.read() as uow:
            return [r.published_at for r in (await uow.conn.execute(select(tables.outbox))).all()]


@asynccontextmanager
async def _writer(kind: str, tmp_path: Any) -> AsyncIterator[Writer]:
    if kind == "memory":
        yield Writer(InMemoryOutboxSource(), None)
        return
    raw: dict[str, Any] = {"paths": {"data_dir": str(tmp_path)}, "mqtt": {"url": "mqtt://127.0.0.1:1883"}}  # an event bus is configured (open_services starts none), so the store keeps events
    async with AsyncExitStack() as stack:
        if kind == "postgres":
            raw["store"] = {"url": await stack.enter_async_context(private_pg_database())}
        services = await stack.enter_async_context(open_services(build_config(raw)))
        source = SqlAlchemyOutboxSource(services.store)
        yield Writer(source, services.store)
        await source.aclose()  # on PostgreSQL the last fetch still holds its claim


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def writer(request, tmp_path) -> AsyncIterator[Writer]:
    async with _writer(request.param, tmp_path) as w:
        yield w


@pytest.fixture(params=["sqlite", "postgres"])
async def db_writer(request, tmp_path) -> AsyncIterator[Writer]:
    async with _writer(request.param, tmp_path) as w:
        yield w


async def test_unsent_events_come_oldest_first_in_batches_with_their_stored_bytes(writer):
    await writer.commit(("bank-a", "C-1", {"n": 1}), ("bank-b", "C-1", {"n": 2}))
    await writer.commit(("bank-a", "C-2", {"n": 3, "备注": "中文"}))
    first = await writer.source.fetch_unsent(2)
    rest = await writer.source.fetch_unsent(10)
    assert [json.loads(e.payload)["n"] for e in first] == [1, 2]
    assert [json.loads(e.payload)["n"] for e in rest] == [1, 2, 3]
    assert [e.ordering_key for e in rest] == ["bank-a/C-1", "bank-b/C-1", "bank-a/C-2"]
    assert [e.position for e in rest] == sorted(e.position for e in rest)
    stored = await writer.stored_payloads()
    assert all(stored[e.event_id] == e.payload for e in rest)
    assert {(e.type, e.creditor) for e in rest} == {("case.updated", "bank-a"), ("case.updated", "bank-b")}


async def test_marked_events_are_not_fetched_again_and_marking_twice_is_harmless(writer):
    await writer.commit(*[("bank-a", f"C-{i}", {"n": i}) for i in range(5)])
    events = await writer.source.fetch_unsent(10)
    await writer.source.mark_sent([events[0].position, events[2].position])
    await writer.source.mark_sent([events[0].position])
    assert [json.loads(e.payload)["n"] for e in await writer.source.fetch_unsent(10)] == [1, 3, 4]
    await writer.source.mark_sent([])
    await writer.source.mark_sent([e.position for e in events])
    assert await writer.source.fetch_unsent(10) == []


@pytest.mark.mosquitto
async def test_the_relay_publishes_a_database_outbox_and_stamps_every_row(db_writer, broker, client_id):
    writer = db_writer
    await writer.commit(*[("bank-a", f"C-{i % 7}", {"n": i}) for i in range(300)])
    config = load_mqtt_config({"url": broker.url, "client_id": client_id, "batch_size": 64})
    async with Collector(broker.port, ["dialgate/v1/+/events/#"], client_id + "-sub") as sub:
        async with MqttEventBus(config, writer.source) as bus:
            await sub.wait_until(lambda ms: len({m.json()["event_id"] for m in ms}) >= 300, 30)
            async with asyncio.timeout(15):
                await bus.relay.wait_published(300)
    assert {m.json()["event_id"] for m in sub.messages} == set(await writer.stored_payloads())
    assert all(at is not None for at in await writer.published_marks())
