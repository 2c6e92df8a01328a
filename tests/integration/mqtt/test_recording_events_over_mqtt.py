"""The recordings vault's events on a real Mosquitto: the gate service (its real app,
lifespan, vault and outbox relay) seals and purges recordings over its HTTP API, and
`recording.stored` / `recording.purged` arrive on `dialgate/v1/<creditor>/events/…`
exactly as the outbox stored them, valid against schemas/events/v1, in order with the
case's other events, with no phone number in clear.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select

from adapters.db import tables
from dialer.app import build_app
from dialer.services import Services
from dialer.auth import add_user
from dialer.clock import FixedClock
from dialer.config import build_config
from recordings.testing import wav_bytes
from tests.integration.mqtt.helpers import Collector
from tests.integration.mqtt.pg import private_pg_database
from tests.unit.mqtt.event_schemas import event_errors

pytestmark = pytest.mark.mosquitto

EVENTS = "dialgate/v1/+/events/#"
TUESDAY_10AM = datetime(2026, 11, 24, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
CALL_START = "2026-11-24T09:58:00+08:00"
UNMASKED_MOBILE = re.compile(rb"(?<![0-9A-Za-z*])1[3-9]\d{9}(?![0-9A-Za-z])")  # not inside an id or a hash

USERS = (
    ("col-a", "collector", ("bank-a",)),
    ("data-a", "data", ("bank-a",)),
    ("pbx", "pbx", ("bank-a",)),
    ("admin", "admin", ()),
    ("comp-a", "compliance", ("bank-a",)),
)


def case_doc(case_id: str, number: str) -> dict[str, Any]:
    return {
        "case_id": case_id, "creditor": "bank-a", "debtor_name": "张三", "status": "active",
        "commission_start": "2026-11-01", "commission_end": "2027-01-31", "assigned_agent": "col-a",
        "flags": [], "amount_due": "1000.00", "overdue_days": 40,
        "contacts": [{"number": number, "relation": "self"}],
    }  # fmt: skip


class Gate:
    def __init__(self, client: httpx.AsyncClient, svc: Services, tokens: dict[str, str]) -> None:
        self.client, self.svc, self.tokens = client, svc, tokens

    async def post(self, path: str, who: str, body: Any = None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[who]}", **kw.pop("headers", {})}
        if body is not None:
            kw["json"] = body
        return await self.client.post(path, headers=headers, **kw)

    async def dial(self, case_id: str, number: str) -> str:
        r = await self.post("/v1/dials", "col-a", {"case_id": case_id, "number": number, "agent_id": "col-a"})
        assert r.status_code == 201, r.text
        return r.json()["attempt_id"]

    async def upload(self, **params: str) -> str:
        # A known attempt's call starts at the attempt's time; an unknown call says when.
        when = {} if "attempt_id" in params else {"started_at": CALL_START}
        r = await self.post("/v1/recordings", "pbx", params={**params, **when, "duration": "1"},
                            content=wav_bytes(1), headers={"Content-Type": "audio/wav"})
        assert r.status_code == 201, r.text
        return r.json()["recording_id"]

    async def outbox(self) -> list[Any]:
        async with self.svc.store.read() as uow:
            return list((await uow.conn.execute(select(tables.outbox).order_by(tables.outbox.c.id))).all())


@pytest.fixture
async def watch(broker, client_id) -> AsyncIterator[Collector]:
    """Subscribed (persistent session) before the service starts: sees every event."""
    async with Collector(broker.port, [EVENTS], client_id + "-watch") as c:
        yield c


@pytest.fixture
async def store_url(request) -> AsyncIterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    async with private_pg_database() as url:
        yield url


@pytest.fixture
async def gate(broker, client_id, tmp_path, watch, store_url) -> AsyncIterator[Gate]:
    cfg = build_config({
        **({"store": {"url": store_url}} if store_url else {}),
        "paths": {"data_dir": str(tmp_path)},
        "log": {"json": True},
        "mqtt": {"url": broker.url, "client_id": client_id, "reconnect_min": 0.1, "reconnect_max": 1.0,
                 "poll_interval": 3600},  # only the after-commit notify can wake the relay
    })  # fmt: skip
    clock = FixedClock(TUESDAY_10AM)
    app = build_app(cfg, clock=clock)
    async with app.router.lifespan_context(app):
        svc: Services = app.state.services
        assert await svc.mqtt.connection.wait_connected(15)
        tokens = {}
        for name, role, creditors in USERS:
            _, tokens[name] = await add_user(svc.store, clock, name, role, frozenset(creditors))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gate", timeout=30) as client:
            g = Gate(client, svc, tokens)
            r = await g.post("/v1/cases:import", "data-a",
                             {"cases": [case_doc("C-1", "13800000001"), case_doc("C-2", "13700000003")]})
            assert r.status_code == 200, r.text
            yield g
        await svc.gate.drain()


@pytest.mark.parametrize("store_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_stored_and_purged_recordings_arrive_on_their_topics_as_the_outbox_holds_them(gate, watch):
    a1 = await gate.dial("C-1", "13800000001")
    matched = await gate.upload(attempt_id=a1)
    unmatched = await gate.upload(call_id="3848276298220188511@10.0.0.5")
    a2 = await gate.dial("C-2", "13700000003")
    r = await gate.post(f"/v1/recordings/{unmatched}/link", "admin", {"attempt_id": a2})
    assert r.status_code == 200, r.text
    gate.svc.clock.advance(days=731)  # past the 730-day retention from the upload
    r = await gate.post("/v1/purges", "admin", {})
    assert r.status_code == 201, r.text
    purge_id = r.json()["purge"]["purge_id"]
    r = await gate.post(f"/v1/purges/{purge_id}/approve", "comp-a")
    assert r.status_code == 200, r.text
    assert sorted(r.json()["destroyed"]) == sorted([matched, unmatched])

    rows = await gate.outbox()
    recording_rows = [row for row in rows if row.type.startswith("recording.")]
    assert [row.type for row in recording_rows] == ["recording.stored"] * 3 + ["recording.purged"] * 2
    ids = {row.event_id for row in rows}
    await watch.wait_until(lambda ms: ids <= {json.loads(m.payload)["event_id"] for m in ms}, timeout=30)

    stored_bytes = {row.event_id: row.payload.encode() for row in rows}
    got: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in watch.messages:
        doc = m.json()
        assert m.payload == stored_bytes[doc["event_id"]]  # published unchanged
        assert event_errors(doc) == [], doc
        assert not UNMASKED_MOBILE.search(m.payload), m.payload
        got[m.topic].append(doc)

    [stored_c1, stored_c2] = got["dialgate/v1/bank-a/events/recording.stored"]
    assert (stored_c1["recording_id"], stored_c1["case_id"], stored_c1["attempt_id"]) == (matched, "C-1", a1)
    assert (stored_c2["recording_id"], stored_c2["case_id"], stored_c2["state"]) == (unmatched, "C-2", "stored")
    assert stored_c1["number"] == "138****0001" and stored_c2["number"] == "137****0003"
    [before_link] = got["dialgate/v1/_unmatched/events/recording.stored"]
    assert (before_link["recording_id"], before_link["state"], before_link["case_id"]) == (unmatched, "unmatched", None)
    purged = {d["recording_id"]: d for d in got["dialgate/v1/bank-a/events/recording.purged"]}
    assert set(purged) == {matched, unmatched}
    assert {(d["purge_id"], d["approved_by"], d["requested_by"]) for d in purged.values()} == {
        (purge_id, "comp-a", "admin")}

    # In order with the case's own events: C-1's sequence, as first received, is gap-free
    # and ends with its recording being stored, then purged.
    seen: set[str] = set()
    c1: list[tuple[int, str]] = []
    for m in watch.messages:
        doc = m.json()
        if doc["case_id"] == "C-1" and doc["creditor"] == "bank-a" and doc["event_id"] not in seen:
            seen.add(doc["event_id"])
            c1.append((doc["case_seq"], doc["type"]))
    assert [s for s, _ in c1] == list(range(1, len(c1) + 1))
    assert [t for _, t in c1][-2:] == ["recording.stored", "recording.purged"]
