"""The worklist and the missed-first-call event. The fixture's cases are imported on
Tuesday 24 Nov 2026 (first call due by Thursday 26th): C-1 for col-a, C-2 for col-a2
(bank-a), B-1 for col-b (bank-b)."""

from __future__ import annotations

import json

from sqlalchemy import select

from adapters.db import tables
from dialer.worklist import Worklist
from gate_api_support import Api


async def _worklist(api: Api, who: str, **params: str) -> list[dict]:
    r = await api.get("/v1/worklist", who, params=params)
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def _no_answer(api: Api, who: str, case_id: str, number: str) -> None:
    r = await api.dial(who, case_id, number)
    aid = r.json()["attempt_id"]
    r = await api.post(f"/v1/attempts/{aid}/outcome", who, {"disposition": "no_answer", "note": "无人接听"})
    assert r.status_code == 201, r.text


async def _overdue_events(api: Api) -> list[dict]:
    async with api.svc.store.read() as uow:
        rows = await uow.conn.execute(select(tables.outbox.c.payload, tables.outbox.c.case_id)
                                      .where(tables.outbox.c.type == "case.first_call_overdue"))
        return [{**json.loads(r[0]), "case": r[1]} for r in rows]


async def test_a_collector_sees_their_new_case_with_its_first_call_deadline(api: Api) -> None:
    (item,) = await _worklist(api, "col-a")
    assert (item["case_id"], item["status_zh"]) == ("C-1", "新案待首催")
    assert item["first_call"] == {"deadline": "2026-11-26", "missed": False}


async def test_a_collector_cannot_list_another_agents_cases(api: Api) -> None:
    assert [i["case_id"] for i in await _worklist(api, "col-a", agent="col-a2")] == ["C-1"]


async def test_a_missed_first_call_comes_before_an_overdue_follow_up(api: Api) -> None:
    await _no_answer(api, "col-a2", "C-2", "13700000003")  # next action Thursday 26th
    api.clock.advance(days=3)  # Friday 27th
    items = await _worklist(api, "sup-a")
    assert [(i["case_id"], i["days_overdue"]) for i in items] == [("C-1", 1), ("C-2", 1)]
    assert items[0]["first_call"] == {"deadline": "2026-11-26", "missed": True}
    assert items[1]["first_call"] is None and items[1]["status"] == "waiting"


async def test_a_case_followed_up_later_is_not_on_todays_list(api: Api) -> None:
    await _no_answer(api, "col-a", "C-1", "13800000001")  # due Thursday 26th
    assert await _worklist(api, "col-a") == []
    assert [i["case_id"] for i in await _worklist(api, "col-a", due="2026-11-26")] == ["C-1"]


async def test_a_supervisor_sees_their_creditors_cases_only_and_may_pick_an_agent(api: Api) -> None:
    assert [i["case_id"] for i in await _worklist(api, "sup-a")] == ["C-1", "C-2"]
    assert [i["case_id"] for i in await _worklist(api, "sup-a", agent="col-a2")] == ["C-2"]
    assert await _worklist(api, "sup-a", creditor="bank-b") == []


async def test_qa_has_no_worklist(api: Api) -> None:
    assert (await api.get("/v1/worklist", "qa-a")).status_code == 403


async def test_a_missed_first_call_emits_one_event_per_case(api: Api) -> None:
    await _no_answer(api, "col-a2", "C-2", "13700000003")  # C-2 had its first call
    sweep = Worklist(api.svc.gate).sweep_first_calls
    assert await sweep() == 0  # Tuesday: nothing is late yet
    api.clock.advance(days=3)
    assert await sweep() == 2
    assert await sweep() == 0
    events = sorted(await _overdue_events(api), key=lambda e: e["case"])
    assert [(e["case"], e["creditor"], e["assigned_agent"], e["deadline"], e["days_overdue"]) for e in events] == [
        ("B-1", "bank-b", "col-b", "2026-11-26", 1), ("C-1", "bank-a", "col-a", "2026-11-26", 1)]


async def test_a_case_reassigned_before_its_first_call_gives_the_new_agent_two_days(api: Api) -> None:
    from gate_api_support import CASES_A

    api.clock.advance(days=3)  # Friday: col-a missed C-1's first call
    assert await Worklist(api.svc.gate).sweep_first_calls() == 3  # C-1, C-2, B-1
    r = await api.post("/v1/cases:import", "data-a",
                       {"cases": [{**CASES_A[0], "assigned_agent": "col-a2"}]})
    assert r.status_code == 200, r.text
    (item,) = [i for i in await _worklist(api, "col-a2") if i["case_id"] == "C-1"]
    assert item["first_call"] == {"deadline": "2026-11-29", "missed": False}
    api.clock.advance(days=3)  # Monday 30th: missed again, by the new agent
    assert await Worklist(api.svc.gate).sweep_first_calls() == 1  # C-1 again; C-2 and B-1 were alerted once
