"""Retention of published outbox rows on the real databases: what
`SqlAlchemyOutboxSource.prune_published` deletes and keeps on SQLite and PostgreSQL, the
batch bound, the index the delete walks, the relay pruning a real outbox while it
publishes to a real Mosquitto, and `[mqtt] published_retention_days` wired through the
service. Clocks are injected; nothing sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

import adapters.mqtt.relay as relay_module
from adapters.db import tables
from adapters.db.outbox_source import Q_PRUNE, SqlAlchemyOutboxSource
from adapters.mqtt.config import load_mqtt_config
from adapters.mqtt.connection import MqttConnection
from adapters.mqtt.relay import OutboxRelay
from dialer.app import build_app
from dialer.bootstrap import open_services
from dialer.clock import FixedClock
from dialer.config import build_config
from tests.conftest import captured_logs
from tests.integration.mqtt.helpers import Collector
from tests.support.pg import private_pg_database

T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@dataclass
class Outbox:
    store: Any
    clock: Clock
    source: SqlAlchemyOutboxSource
    kind: str

    async def commit(self, n: int, *, occurred_at: datetime = T0) -> list[str]:
        """`n` events in one write transaction, as the gate writes them."""
        async with self.store.write() as uow:
            return [
                await uow.outbox.add(
                    "case.updated", creditor="bank-a", case_pk=None, case_id=f"C-{i}",
                    occurred_at=occurred_at, payload={"n": i, "note": "x" * 200},
                )
                for i in range(n)
            ]  # fmt: skip

    async def publish(self, event_ids: list[str], at: datetime) -> None:
        """Mark these events sent as the relay does, with the clock at `at`."""
        async with self.store.read() as uow:
            rows = await uow.conn.execute(
                select(tables.outbox.c.id).where(tables.outbox.c.event_id.in_(event_ids))
            )
            positions = [r.id for r in rows]
        self.clock.at = at
        await self.source.mark_sent(positions)

    async def remaining(self) -> set[str]:
        async with self.store.read() as uow:
            return {r.event_id for r in await uow.conn.execute(select(tables.outbox.c.event_id))}

    async def published_at_of(self, event_ids: list[str]) -> list[datetime | None]:
        async with self.store.read() as uow:
            rows = await uow.conn.execute(
                select(tables.outbox.c.published_at).where(tables.outbox.c.event_id.in_(event_ids))
            )
            return [r.published_at for r in rows]


@pytest.fixture(params=["sqlite", "postgres"])
async def outbox(request, tmp_path) -> AsyncIterator[Outbox]:
    raw: dict[str, Any] = {"paths": {"data_dir": str(tmp_path)}, "mqtt": {"url": "mqtt://127.0.0.1:1883"}}  # an event bus is configured (open_services starts none), so the store keeps events
    async with AsyncExitStack() as stack:
        if request.param == "postgres":
            raw["store"] = {"url": await stack.enter_async_context(private_pg_database())}
        services = await stack.enter_async_context(open_services(build_config(raw)))
        clock = Clock(T0)
        source = SqlAlchemyOutboxSource(services.store, now=clock, retention=WEEK)
        yield Outbox(services.store, clock, source, request.param)
        await source.aclose()  # on PostgreSQL the last fetch still holds its claim


async def test_published_rows_older_than_the_retention_go_and_recent_and_unsent_rows_of_any_age_stay(outbox):
    unsent_ancient = await outbox.commit(3, occurred_at=T0 - timedelta(days=400))
    old = await outbox.commit(2, occurred_at=T0 - timedelta(days=11))
    on_the_line = await outbox.commit(1, occurred_at=T0 - timedelta(days=8))
    recent = await outbox.commit(2, occurred_at=T0 - timedelta(days=7))
    await outbox.publish(old, T0 - timedelta(days=10))
    await outbox.publish(on_the_line, T0 - WEEK)  # exactly the retention: kept
    await outbox.publish(recent, T0 - timedelta(days=6, hours=23))

    outbox.clock.at = T0
    assert await outbox.source.prune_published(1_000) == 2
    assert await outbox.remaining() == set(unsent_ancient + on_the_line + recent)
    assert await outbox.source.prune_published(1_000) == 0
    assert await outbox.source.unsent_count() == 3

    outbox.clock.at = T0 + timedelta(days=400)  # long after: every published row is due
    assert await outbox.source.prune_published(1_000) == 3
    assert await outbox.remaining() == set(unsent_ancient)
    assert await outbox.published_at_of(unsent_ancient) == [None, None, None]
    fetched = await outbox.source.fetch_unsent(10)
    assert {e.event_id for e in fetched} == set(unsent_ancient)  # still on their way


async def test_one_prune_deletes_at_most_its_batch_oldest_first_and_a_larger_backlog_goes_over_successive_passes(outbox):
    first = await outbox.commit(100)
    second = await outbox.commit(100)
    third = await outbox.commit(50)
    unsent = await outbox.commit(5)
    # Published in the reverse of commit order: publication time decides who goes first.
    await outbox.publish(third, T0 - timedelta(days=30))
    await outbox.publish(second, T0 - timedelta(days=20))
    await outbox.publish(first, T0 - timedelta(days=10))

    outbox.clock.at = T0
    assert await outbox.source.prune_published(100) == 100
    # `third` (oldest publication), then `second`'s first 50 (same time: lowest ids).
    assert await outbox.remaining() == set(first + second[50:] + unsent)
    assert await outbox.source.prune_published(100) == 100
    assert await outbox.source.prune_published(100) == 50
    assert await outbox.source.prune_published(100) == 0
    assert await outbox.remaining() == set(unsent)


async def test_the_prune_walks_the_published_at_index_not_the_table(outbox):
    # The steady state: a week of published rows, a few minutes' worth past the cutoff.
    await outbox.publish(await outbox.commit(20), T0 - timedelta(days=8))
    await outbox.publish(await outbox.commit(2_000), T0 - timedelta(days=3))
    async with outbox.store.write() as uow:
        await uow.conn.exec_driver_sql("ANALYZE outbox")
    async with outbox.store.read() as uow:
        compiled = Q_PRUNE.compile(dialect=uow.conn.dialect)
        if outbox.kind == "sqlite":
            params = compiled.construct_params({"cutoff": T0 - WEEK, "limit": 1_000})
            args = tuple(
                tables.outbox.c.published_at.type.process_bind_param(params[k], uow.conn.dialect)
                if k.startswith("cutoff") else params[k]
                for k in compiled.positiontup
            )  # fmt: skip
            rows = await uow.conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", args)
            plan = "\n".join(r[3] for r in rows)
            assert "USING COVERING INDEX ix_outbox_published_at_id (published_at>? AND published_at<?)" in plan
            assert "USING INTEGER PRIMARY KEY (rowid=?)" in plan
            assert "SCAN" not in plan and "TEMP B-TREE" not in plan
        else:
            sql = str(compiled).replace("%(cutoff)s", "$1").replace("%(limit)s", "$2")
            rows = await uow.conn.exec_driver_sql(f"EXPLAIN {sql}", (T0 - WEEK, 1_000))
            plan = "\n".join(r[0] for r in rows)
            assert "Index Only Scan using ix_outbox_published_at_id" in plan, plan
            assert "Seq Scan" not in plan and "Sort" not in plan, plan


# -- the relay pruning a real outbox, publishing to a real broker -----------------


class Monotonic:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.mosquitto
async def test_the_relay_prunes_expired_rows_of_a_real_outbox_in_bounded_passes_while_it_publishes(
    outbox, broker, client_id
):
    expired = await outbox.commit(25)
    await outbox.publish(expired, T0 - timedelta(days=9))
    fresh = await outbox.commit(7, occurred_at=T0)  # unsent: the relay publishes them
    outbox.clock.at = T0
    config = load_mqtt_config({"url": broker.url, "client_id": client_id, "reconnect_min": 0.1})
    mono = Monotonic()
    relay = None
    async with Collector(broker.port, ["dialgate/v1/+/events/#"], client_id + "-sub") as sub:
        async with MqttConnection(config) as connection:
            relay = OutboxRelay(
                outbox.source, connection, poll_interval_s=0.05, prune_batch=10,
                prune_first_after_s=60, prune_every_s=300, monotonic=mono,
            )  # fmt: skip
            task = asyncio.create_task(relay.run())
            try:
                async with asyncio.timeout(20):
                    await relay.wait_published(7)
                assert relay.prune_passes == 0 and set(expired) <= await outbox.remaining()
                mono.t += 60
                with captured_logs(relay_module) as logs:
                    async with asyncio.timeout(20):
                        await relay.wait_prune_passes(1)
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            await sub.wait_until(lambda ms: {m.json()["event_id"] for m in ms} >= set(fresh), 20)
    assert relay.pruned == 25
    pruned = [e for e in logs if e["event"] == "mqtt.relay.pruned"]
    assert [(e["log_level"], e["removed"], e["transactions"], e["retention_days"]) for e in pruned] == [
        ("info", 25, 3, 7)
    ]
    assert await outbox.remaining() == set(fresh)  # published just now: kept 7 days


# -- the key, through the service ------------------------------------------------


@pytest.mark.mosquitto
async def test_the_configured_retention_and_the_service_clock_decide_what_the_service_prunes(
    broker, client_id, tmp_path
):
    clock = FixedClock(T0)
    cfg = build_config(
        {
            "paths": {"data_dir": str(tmp_path)},
            "mqtt": {"url": broker.url, "client_id": client_id, "published_retention_days": 2},
        }
    )
    app = build_app(cfg, clock=clock)
    async with app.router.lifespan_context(app):
        svc = app.state.services
        assert await svc.mqtt.connection.wait_connected(15)
        source = svc.mqtt.relay.source
        assert source.retention == timedelta(days=2)
        async with svc.store.write() as uow:  # the service's own write: wakes the relay
            await uow.outbox.add(
                "case.updated", creditor="bank-a", case_pk=None, case_id="C-1",
                occurred_at=T0, payload={"n": 1},
            )  # fmt: skip
        async with asyncio.timeout(20):
            await svc.mqtt.relay.wait_published(1)
        clock.advance(days=1, hours=23)
        assert await source.prune_published(1_000) == 0
        clock.advance(hours=2)
        assert await source.prune_published(1_000) == 1
        async with svc.store.read() as uow:
            assert (await uow.conn.execute(select(tables.outbox))).all() == []
