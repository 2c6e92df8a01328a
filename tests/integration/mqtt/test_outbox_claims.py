"""Several relays on one PostgreSQL outbox: each claims rows with FOR UPDATE SKIP LOCKED
until it marks them sent, never publishes an event while another relay holds an older
one of the same case, and together they publish every event once, in order per case."""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest

from adapters.db.outbox_source import SqlAlchemyOutboxSource
from adapters.mqtt.bus import MqttEventBus
from adapters.mqtt.config import load_mqtt_config
from dialer.bootstrap import open_services
from dialer.config import build_config
from tests.integration.mqtt.helpers import Collector
from tests.support.pg import private_pg_database
from tests.integration.mqtt.test_outbox_sources import Writer


@pytest.fixture
async def pg_writer(tmp_path: Any) -> AsyncIterator[Writer]:
    raw: dict[str, Any] = {"paths": {"data_dir": str(tmp_path)}, "mqtt": {"url": "mqtt://127.0.0.1:1883"}}
    async with AsyncExitStack() as stack:
        raw["store"] = {"url": await stack.enter_async_context(private_pg_database())}
        services = await stack.enter_async_context(open_services(build_config(raw)))
        source = SqlAlchemyOutboxSource(services.store)
        yield Writer(source, services.store)
        await source.aclose()


def _ns(events: Any) -> list[int]:
    return [json.loads(e.payload)["n"] for e in events]


async def test_a_second_relay_skips_claimed_rows_and_every_later_event_of_their_cases(pg_writer: Writer) -> None:
    store = pg_writer.store
    await pg_writer.commit(("bank-a", "C-1", {"n": 1}), ("bank-a", "C-1", {"n": 2}), ("bank-a", "C-2", {"n": 3}),
                           ("bank-a", "C-1", {"n": 4}), ("bank-b", "C-1", {"n": 5}))
    a, b = SqlAlchemyOutboxSource(store), SqlAlchemyOutboxSource(store)
    try:
        first = await a.fetch_unsent(2)
        assert _ns(first) == [1, 2]
        # Event 4 is bank-a/C-1's third: A still holds the first two. bank-b's C-1 is
        # another case (a case id is unique per creditor only).
        assert _ns(await b.fetch_unsent(10)) == [3, 5]
        await a.mark_sent([e.position for e in first])
        await b.mark_sent([])  # nothing acknowledged: its claim goes back
        assert _ns(await b.fetch_unsent(10)) == [3, 4, 5]
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_claim_let_go_without_marking_is_free_for_the_other_relay(pg_writer: Writer) -> None:
    store = pg_writer.store
    await pg_writer.commit(*[("bank-a", f"C-{i}", {"n": i}) for i in range(3)])
    a, b = SqlAlchemyOutboxSource(store), SqlAlchemyOutboxSource(store)
    try:
        assert _ns(await a.fetch_unsent(10)) == [0, 1, 2]
        assert await b.fetch_unsent(10) == []
        await a.aclose()  # the relay stopped before the broker acknowledged anything
        claimed = await b.fetch_unsent(10)
        assert _ns(claimed) == [0, 1, 2]
        await b.mark_sent([e.position for e in claimed])
        assert await a.fetch_unsent(10) == []
        assert all(at is not None for at in await pg_writer.published_marks())
    finally:
        await a.aclose()
        await b.aclose()


@pytest.mark.mosquitto
async def test_two_relays_on_one_outbox_publish_every_event_once_in_order_per_case(pg_writer: Writer, broker: Any,
                                                                                   client_id: str) -> None:
    total = 400
    await pg_writer.commit(*[("bank-a", f"C-{i % 7}", {"n": i}) for i in range(total)])
    config = {"url": broker.url, "batch_size": 16}
    async with Collector(broker.port, ["dialgate/v1/+/events/#"], client_id + "-sub") as sub:
        async with AsyncExitStack() as stack:
            buses = [
                await stack.enter_async_context(MqttEventBus(
                    load_mqtt_config({**config, "client_id": f"{client_id}-{k}"}),
                    SqlAlchemyOutboxSource(pg_writer.store),
                ))
                for k in range(2)
            ]
            await sub.wait_until(lambda ms: len({m.json()["event_id"] for m in ms}) >= total, 60)
            async with asyncio.timeout(15):
                while sum(bus.relay.published for bus in buses) < total:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # room for a duplicate to arrive, if there were one
    ids = Counter(m.json()["event_id"] for m in sub.messages)
    assert set(ids) == set(await pg_writer.stored_payloads())
    assert [i for i, n in ids.items() if n > 1] == []
    per_case: dict[int, list[int]] = defaultdict(list)
    for m in sub.messages:
        per_case[m.json()["n"] % 7].append(m.json()["n"])  # event n belongs to case C-<n % 7>
    assert all(ns == sorted(ns) for ns in per_case.values()), per_case
    assert sum(bus.relay.published for bus in buses) == total
    assert all(at is not None for at in await pg_writer.published_marks())
