"""Blocked-dial review, authentication on every endpoint, health, metrics, outbox events."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime

import httpx
import pytest
from sqlalchemy import func, select

from adapters.db import tables
from dialer.app import build_app
from dialer.auth import add_user
from dialer.clock import FixedClock
from dialer.config import build_config
from gate_api_support import CASES_A, Api
from tests.support.builders import SHANGHAI, TUESDAY_10AM

ENDPOINTS = [
    ("POST", "/v1/cases:import"),
    ("POST", "/v1/repayments:import"),
    ("POST", "/v1/cases/C-1/contacts"),
    ("POST", "/v1/dial-checks"),
    ("POST", "/v1/dials"),
    ("POST", "/v1/attempts/x/outcome"),
    ("GET", "/v1/cases/C-1"),
    ("GET", "/v1/lookup?number=13800000001"),
    ("GET", "/v1/blocked-dials"),
    ("GET", "/v1/blocked-dials/summary"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
]


@pytest.mark.parametrize("method,path", ENDPOINTS)
async def test_every_endpoint_refuses_a_request_without_a_valid_token(api: Api, method: str, path: str) -> None:
    before = await api.snapshot()
    for headers in ({}, {"Authorization": "Bearer dg_not-a-token"}, {"Authorization": "Basic abc"}):
        r = await api.client.request(method, path, headers=headers, json={})
        assert r.status_code == 401, (path, headers, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["type"].endswith("/unauthenticated")
    assert await api.snapshot() == before


async def _block_some(api: Api) -> None:
    api.clock.set(datetime(2026, 11, 24, 22, 0, tzinfo=SHANGHAI))
    await api.dial("col-a", "C-1", "13800000001")  # window.outside_hours
    api.clock.set(datetime(2026, 11, 25, 10, 0, tzinfo=SHANGHAI))
    await api.dial("col-a2", "C-1", "13800000001")  # agent.not_assigned
    await api.dial("col-a", "C-1", "13600000000")  # contact.not_authorized
    await api.dial("col-b", "B-1", "13600000000")  # bank-b: contact.not_authorized
    assert (await api.dial("col-a", "C-1", "13800000001")).status_code == 201  # allowed: not listed


async def test_blocked_dials_lists_only_blocked_decisions_of_the_users_creditors(api: Api) -> None:
    await _block_some(api)
    r = await api.get("/v1/blocked-dials", "comp-a")
    assert r.status_code == 200
    items = r.json()["items"]
    assert [i["rule_id"] for i in items] == ["window.outside_hours", "agent.not_assigned", "contact.not_authorized"]
    assert all(i["creditor"] == "bank-a" and i["allowed"] is False for i in items)
    assert {i["number"] for i in items} == {"138****0001", "136****0000"}
    assert r.json()["next"] is None
    assert [i["creditor"] for i in (await api.get("/v1/blocked-dials", "comp-b")).json()["items"]] == ["bank-b"]


async def test_blocked_dials_filters_by_rule_agent_case_and_time(api: Api) -> None:
    await _block_some(api)

    async def rules(**params: str) -> list[str]:
        r = await api.get("/v1/blocked-dials", "admin", params=params)
        assert r.status_code == 200, r.text
        return [i["rule_id"] for i in r.json()["items"]]

    assert await rules(rule_id="agent.not_assigned") == ["agent.not_assigned"]
    assert await rules(agent="col-b") == ["contact.not_authorized"]
    assert await rules(case_id="B-1", creditor="bank-b") == ["contact.not_authorized"]
    assert await rules(**{"from": "2026-11-25T00:00:00+08:00"}) == [
        "agent.not_assigned", "contact.not_authorized", "contact.not_authorized"]
    assert await rules(to="2026-11-25T00:00:00+08:00") == ["window.outside_hours"]
    # A creditor outside the user's scope is simply empty, not an error.
    r = await api.get("/v1/blocked-dials", "comp-a", params={"creditor": "bank-b"})
    assert r.json()["items"] == []


async def test_blocked_dials_paginate_with_a_cursor(api: Api) -> None:
    await _block_some(api)
    seen = []
    params = {"limit": "2"}
    pages = 0
    while True:
        body = (await api.get("/v1/blocked-dials", "admin", params=params)).json()
        seen += [i["decision_id"] for i in body["items"]]
        pages += 1
        if body["next"] is None:
            break
        params = {"limit": "2", "cursor": body["next"]}
    assert pages == 2
    assert len(seen) == len(set(seen)) == 4


async def test_blocked_dials_as_csv(api: Api) -> None:
    await _block_some(api)
    r = await api.get("/v1/blocked-dials", "comp-a", params={"format": "csv"})
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert [row["rule_id"] for row in rows] == ["window.outside_hours", "agent.not_assigned", "contact.not_authorized"]
    assert rows[0]["number"] == "138****0001"
    assert rows[0]["reason_zh"]


async def test_the_csv_export_is_a_named_download_starting_with_a_utf8_bom_for_spreadsheets(api: Api) -> None:
    await _block_some(api)
    params = {"format": "csv", "from": "2026-11-24", "to": "2026-11-26T00:00:00+08:00"}
    r = await api.get("/v1/blocked-dials", "comp-a", params=params)
    assert r.content.startswith(b"\xef\xbb\xbfdecision_id,at,")
    assert r.headers["content-disposition"] == 'attachment; filename="blocked-dials-2026-11-24-2026-11-26.csv"'
    assert r.content.decode("utf-8-sig").count("\r\n") == 4  # the header and the three blocked dials
    unbounded = await api.get("/v1/blocked-dials", "comp-a", params={"format": "csv"})
    assert unbounded.headers["content-disposition"] == 'attachment; filename="blocked-dials-all-all.csv"'


async def test_blocked_dials_summary_counts_by_rule_agent_and_day(api: Api) -> None:
    await _block_some(api)
    r = await api.get("/v1/blocked-dials/summary", "comp-a")
    assert r.status_code == 200
    s = r.json()
    assert s["total"] == 3
    assert s["by_rule"] == {"agent.not_assigned": 1, "contact.not_authorized": 1, "window.outside_hours": 1}
    assert s["by_agent"] == {"col-a": 2, "col-a2": 1}
    assert s["by_day"] == {"2026-11-24": 1, "2026-11-25": 2}


async def test_a_blocked_dial_check_is_not_listed_as_a_blocked_dial(api: Api) -> None:
    body = {"case_id": "C-1", "number": "13800000001", "agent_id": "col-a", "at": "2026-11-24T23:00:00+08:00"}
    r = await api.post("/v1/dial-checks", "comp-a", body)
    assert r.json()["allowed"] is False
    assert (await api.get("/v1/blocked-dials", "comp-a")).json()["items"] == []
    assert (await api.get("/v1/blocked-dials/summary", "comp-a")).json()["total"] == 0


@pytest.mark.parametrize("who", ["col-a", "qa-a", "data-a", "pbx"])
async def test_blocked_dials_are_for_compliance_supervisors_and_admin_only(api: Api, who: str) -> None:
    assert (await api.get("/v1/blocked-dials", who)).status_code == 403
    assert (await api.get("/v1/blocked-dials/summary", who)).status_code == 403


async def test_blocked_dials_with_a_bad_cursor_or_time_is_400(api: Api) -> None:
    assert (await api.get("/v1/blocked-dials", "comp-a", params={"cursor": "zz"})).status_code == 400
    r = await api.get("/v1/blocked-dials", "comp-a", params={"from": "yesterday"})
    assert r.status_code == 400
    assert r.json()["details"]["field"] == "from"


async def test_health_readiness_and_metrics(api: Api) -> None:
    assert (await api.get("/healthz", "qa-a")).json() == {"status": "ok"}
    ready = (await api.get("/readyz", "pbx")).json()
    assert ready["status"] == "ready"
    await api.dial("col-a", "C-1", "13800000001")
    metrics = (await api.get("/metrics", "admin")).text
    assert re.search(r'dialgate_decisions_total\{allowed="true",channel="api",rule_id="allow"\} [1-9]', metrics)


async def test_every_dial_writes_its_event_to_the_outbox_in_case_order_without_phone_numbers(api: Api) -> None:
    await api.dial("col-a", "C-1", "13800000001")
    api.clock.advance(minutes=1)
    await api.dial("col-a", "C-1", "13600000000")
    async with api.svc.store.read() as uow:
        rows = (await uow.conn.execute(
            select(tables.outbox.c.type, tables.outbox.c.case_seq, tables.outbox.c.payload)
            .where(tables.outbox.c.case_id == "C-1").order_by(tables.outbox.c.id))).all()
    types = [r[0] for r in rows]
    assert types[-2:] == ["dial.allowed", "dial.blocked"]
    seqs = [r[1] for r in rows]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for _, _, payload in rows:
        doc = json.loads(payload)
        assert {"event_id", "type", "occurred_at", "creditor", "case_id", "case_seq"} <= set(doc)
        for number in ("13800000001", "13600000000"):
            assert number not in payload, payload


async def test_without_an_event_bus_a_dial_keeps_no_event_and_with_one_it_does(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dialer.bootstrap import events_wanted

    cfg = build_config({"paths": {"data_dir": str(tmp_path)}})
    assert not events_wanted(cfg)
    assert events_wanted(build_config({"paths": {"data_dir": str(tmp_path)}, "mqtt": {"url": "mqtt://127.0.0.1:1883"}}))
    clock = FixedClock(TUESDAY_10AM)
    app = build_app(cfg, clock=clock)
    async with app.router.lifespan_context(app):
        svc = app.state.services
        _, data = await add_user(svc.store, clock, "data-a", "data", frozenset({"bank-a"}))
        _, col = await add_user(svc.store, clock, "col-a", "collector", frozenset({"bank-a"}))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gate") as client:
            r = await client.post("/v1/cases:import", json={"cases": CASES_A}, headers={"Authorization": f"Bearer {data}"})
            assert r.status_code == 200, r.text
            r = await client.post("/v1/dials", json={"case_id": "C-1", "number": "13800000001", "agent_id": "col-a"},
                                  headers={"Authorization": f"Bearer {col}"})
            assert r.status_code == 201, r.text
        async with svc.store.read() as uow:
            count = lambda table: uow.conn.execute(select(func.count()).select_from(table))  # noqa: E731
            assert (await count(tables.decisions)).scalar_one() == 1
            assert (await count(tables.attempts)).scalar_one() == 1
            assert (await count(tables.outbox)).scalar_one() == 0
        await svc.gate.drain()
