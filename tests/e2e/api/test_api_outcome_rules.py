"""Outcome rules of the 催记: a chosen next-action date and status within the rules'
bounds, info repair → 最新线索, who may promise, promises past the commission, and
disputes alerting supervisors. Time: Tuesday 24 Nov 2026 10:00 in Shanghai."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from adapters.db import tables
from gate_api_support import Api


async def _outcome(api: Api, number: str = "13800000001", **body: Any) -> Any:
    r = await api.dial("col-a", "C-1", number)
    assert r.status_code == 201, r.text
    body.setdefault("note", "记录")
    return await api.post(f"/v1/attempts/{r.json()['attempt_id']}/outcome", "col-a", body)


async def _events(api: Api, type_: str) -> list[dict]:
    async with api.svc.store.read() as uow:
        rows = await uow.conn.execute(select(tables.outbox.c.payload).where(tables.outbox.c.type == type_))
        return [json.loads(r[0]) for r in rows]


async def test_a_collector_may_bring_the_follow_up_forward_but_not_past_the_rules_date(api: Api) -> None:
    r = await _outcome(api, disposition="no_answer", next_action_date="2026-11-27")
    assert r.status_code == 422, r.text
    (e,) = r.json()["details"]["errors"]
    assert e["field"] == "next_action_date" and "2026-11-26" in e["error"] and e["error_zh"]
    r = await _outcome(api, disposition="no_answer", next_action_date="2026-11-25")
    assert r.status_code == 201, r.text
    assert r.json()["case"]["next_action"] == {"status": "waiting", "date": "2026-11-25"}


async def test_a_date_in_the_past_is_refused(api: Api) -> None:
    r = await _outcome(api, disposition="no_answer", next_action_date="2026-11-23")
    assert r.status_code == 422


async def test_urgent_is_within_three_working_days_and_defaults_to_the_next_one(api: Api) -> None:
    r = await _outcome(api, disposition="connected_self", status="urgent")
    assert r.status_code == 201, r.text
    assert r.json()["case"]["next_action"] == {"status": "urgent", "date": "2026-11-25"}
    case = (await api.get("/v1/cases/C-1", "col-a")).json()
    assert case["next_action"]["status_zh"] == "紧急"
    # Tue + 3 working days = Fri 27 Nov; Monday 30th is past it.
    r = await _outcome(api, "13900000002", disposition="connected_third_party", status="urgent",
                       next_action_date="2026-11-30")
    assert r.status_code == 422
    assert "3 working days" in r.json()["details"]["errors"][0]["error"]


async def test_night_collection_is_this_evening_and_refused_after_half_past_eight(api: Api) -> None:
    r = await _outcome(api, disposition="connected_self", status="night")
    assert r.status_code == 201, r.text
    assert r.json()["case"]["next_action"] == {"status": "night", "date": "2026-11-24"}
    api.clock.advance(hours=10, minutes=31)  # 20:31 in Shanghai
    r = await _outcome(api, "13900000002", disposition="connected_third_party", status="night")
    assert r.status_code == 422, r.text
    (e,) = r.json()["details"]["errors"]
    assert e["field"] == "status" and "20:30" in e["error"] and "20:30" in e["error_zh"]


async def test_custom_needs_a_date_within_the_commission(api: Api) -> None:
    assert (await _outcome(api, disposition="connected_self", status="custom")).status_code == 422
    r = await _outcome(api, disposition="connected_self", status="custom", next_action_date="2027-02-01")
    assert r.status_code == 422  # commission ends 2027-01-31
    r = await _outcome(api, "13900000002", disposition="connected_third_party", status="custom",
                       next_action_date="2027-01-15")
    assert r.status_code == 201, r.text
    assert r.json()["case"]["next_action"] == {"status": "custom", "date": "2027-01-15"}


async def test_an_unknown_status_and_a_status_over_a_stop_are_refused(api: Api) -> None:
    assert (await _outcome(api, disposition="connected_self", status="sleepy")).status_code == 422
    r = await _outcome(api, disposition="connected_self", result="dispute", status="urgent")
    assert r.status_code == 422
    assert "sets its own follow-up" in r.json()["details"]["errors"][0]["error"]


async def test_a_relatives_promise_is_not_a_promise_to_pay(api: Api) -> None:
    r = await _outcome(api, "13900000002", disposition="connected_third_party", result="promise_to_pay",
                       promise={"amount": "300.00", "date": "2026-11-30"})
    assert r.status_code == 201, r.text
    assert r.json()["case"]["next_action"]["status"] == "reachable"


async def test_an_authorised_agents_promise_is_a_promise_to_pay(api: Api) -> None:
    r = await _outcome(api, "13900000002", disposition="connected_third_party", result="promise_to_pay",
                       authorised_agent=True, promise={"amount": "300.00", "date": "2026-11-30"})
    assert r.status_code == 201, r.text
    assert r.json()["case"]["next_action"] == {"status": "promise", "date": "2026-11-29"}


async def test_a_promise_dated_after_the_commission_end_is_refused_naming_the_end(api: Api) -> None:
    r = await _outcome(api, disposition="connected_self", result="promise_to_pay",
                       promise={"amount": "300.00", "date": "2027-02-15"})
    assert r.status_code == 422, r.text
    (e,) = r.json()["details"]["errors"]
    assert e["field"] == "promise.date" and "2027-01-31" in e["error"] and "延长委托期" in e["error_zh"]
    assert await api.rows(tables.outcomes) == 0


async def test_a_promise_dated_before_today_is_refused_not_turned_into_a_follow_up_today(api: Api) -> None:
    # Today is 2026-11-24 in Shanghai (the fixture's clock).
    r = await _outcome(api, disposition="connected_self", result="promise_to_pay",
                       promise={"amount": "300.00", "date": "2026-11-23"})
    assert r.status_code == 422, r.text
    (e,) = r.json()["details"]["errors"]
    assert e["field"] == "promise.date" and "2026-11-24" in e["error"] and "早于今天" in e["error_zh"]
    assert await api.rows(tables.outcomes) == 0
    same_day = await _outcome(api, disposition="connected_self", result="promise_to_pay",
                              promise={"amount": "300.00", "date": "2026-11-24"})
    assert same_day.status_code == 201, same_day.text


async def test_a_dispute_alerts_supervisors_like_a_complaint_risk(api: Api) -> None:
    r = await _outcome(api, disposition="connected_self", result="dispute")
    assert r.status_code == 201
    (alert,) = await _events(api, "alert.dispute")
    assert alert["creditor"] == "bank-a" and alert["number"] == "138****0001"
    assert "争议" in alert["message_zh"]


async def test_a_number_found_by_info_repair_makes_the_case_a_new_lead_due_tomorrow(api: Api) -> None:
    r = await api.post("/v1/cases/C-1/contacts", "data-a",
                       {"number": "13500000005", "relation": "family", "source": "info_repair"})
    assert r.status_code == 201, r.text
    case = (await api.get("/v1/cases/C-1", "col-a")).json()
    assert case["next_action"] == {"status": "new_lead", "status_zh": "最新线索", "date": "2026-11-25"}
    history = (await api.get("/v1/cases/C-1/history", "col-a")).json()["items"]
    assert [e["field"] for e in history[-3:]] == ["contact 135****0005", "follow_up_status", "next_action_date"]
