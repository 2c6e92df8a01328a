"""Proof that every connected call was recorded: a connected attempt whose recording
does not arrive within [recordings] expect_within raises alert.recording_missing once
(event, metric, console health), is listed per day for its creditor only, and closes
when the recording arrives."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from sqlalchemy import select

from adapters.db import tables
from recordings.testing import wav_stream

EXPECT = timedelta(minutes=10)


async def _connected(api, case_id: str = "C-1", number: str = "13800000001", disposition: str = "connected_self") -> str:
    attempt = await api.dial(case_id, number)
    r = await api.post(f"/v1/attempts/{attempt}/outcome", "col-a", {"disposition": disposition, "note": "通话"})
    assert r.status_code == 201, r.text
    return attempt


async def _alerts(api) -> list[dict]:
    async with api.svc.store.read() as uow:
        rows = await uow.conn.execute(
            select(tables.outbox.c.payload).where(tables.outbox.c.type == "alert.recording_missing")
        )
        return [json.loads(r[0]) for r in rows]


async def _sweep(api) -> list[dict]:
    return await api.svc.recording_watch.sweep(api.clock.now(), EXPECT)


async def test_the_service_watches_completeness_in_the_background(api) -> None:
    assert api.svc.recording_watch is not None
    assert "recordings-completeness" in {t.get_name() for t in asyncio.all_tasks()}


async def test_a_connected_call_without_a_recording_raises_one_alert_after_expect_within(api) -> None:
    api.svc.store.events = True
    attempt = await _connected(api)
    unanswered = await api.dial("C-2", "13700000003")
    await api.post(f"/v1/attempts/{unanswered}/outcome", "col-a", {"disposition": "no_answer", "note": "无人接听"})

    assert await _sweep(api) == []  # seen ended now; due in ten minutes
    api.clock.advance(minutes=9)
    assert await _sweep(api) == []
    api.clock.advance(minutes=2)
    [alert] = await _sweep(api)
    assert alert["attempt_id"] == attempt
    assert await _sweep(api) == []  # alerted once, not on every sweep

    [event] = await _alerts(api)
    assert (event["attempt_id"], event["creditor"], event["case_id"], event["number"]) == (
        attempt, "bank-a", "C-1", "138****0001")
    assert "13800000001" not in json.dumps(event)

    listed = (await api.get("/v1/recordings/missing", "comp-a")).json()
    assert [m["attempt_id"] for m in listed["missing"]] == [attempt]  # the unanswered call expects nothing
    assert listed["by_day"] == [{"day": "2026-11-24", "creditor": "bank-a", "count": 1}]
    assert (await api.get("/v1/recordings/missing", "comp-b")).json()["missing"] == []
    assert (await api.get("/v1/recordings/missing?creditor=bank-a", "comp-b")).status_code == 404
    assert (await api.get("/v1/recordings/missing", "col-a")).status_code == 403

    from adapters.db.console_queries import SqlAlchemyConsoleQueries

    strip = SqlAlchemyConsoleQueries(api.svc, api.svc.vault)
    vault_health = {h.component: h for h in await strip.health()}["vault"]
    assert (vault_health.status, vault_health.detail) == ("degraded", "1 connected calls without a recording")

    audio = b"".join(wav_stream(2.0))
    assert (await api.upload(audio, attempt_id=attempt)).status_code == 201
    await _sweep(api)
    assert (await api.get("/v1/recordings/missing", "comp-a")).json()["missing"] == []
    assert await api.svc.recording_watch.open_count() == 0


async def test_a_recording_that_arrives_in_time_never_alerts(api) -> None:
    attempt = await _connected(api)
    await _sweep(api)
    assert (await api.upload(b"".join(wav_stream(1.0)), attempt_id=attempt)).status_code == 201
    api.clock.advance(minutes=30)
    assert await _sweep(api) == []
    assert await api.svc.recording_watch.open_count() == 0
