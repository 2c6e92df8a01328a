"""POST /v1/attempts/{id}/outcome: effects on the case, idempotency, refusals."""

from __future__ import annotations

import json

from sqlalchemy import select

from adapters.db import tables
from gate_api_support import Api


async def _attempt(api: Api, number: str = "13800000001", who: str = "col-a", case_id: str = "C-1") -> str:
    r = await api.dial(who, case_id, number)
    assert r.status_code == 201, r.text
    return r.json()["attempt_id"]


async def _events(api: Api, type_: str) -> list[dict]:
    async with api.svc.store.read() as uow:
        rows = await uow.conn.execute(select(tables.outbox.c.payload).where(tables.outbox.c.type == type_))
        return [json.loads(r[0]) for r in rows]


async def test_promise_to_pay_sets_next_action_to_the_day_before_the_promised_date(api: Api) -> None:
    aid = await _attempt(api)
    r = await api.post(f"/v1/attempts/{aid}/outcome", "col-a", {
        "disposition": "connected_self", "result": "promise_to_pay", "note": "答应月底还款",
        "promise": {"amount": "500.00", "date": "2026-11-30"}})
    assert r.status_code == 201, r.text
    assert r.json()["case"]["next_action"] == {"status": "promise", "date": "2026-11-29"}
    case = (await api.get("/v1/cases/C-1", "col-a")).json()
    assert case["next_action"]["status_zh"] == "承诺还款"
    assert case["attempts"][0]["connected"] is True


async def test_logging_the_same_outcome_twice_is_idempotent(api: Api) -> None:
    aid = await _attempt(api)
    body = {"disposition": "busy", "note": "占线"}
    first = await api.post(f"/v1/attempts/{aid}/outcome", "col-a", body)
    assert first.status_code == 201
    events = await api.rows(tables.outbox)
    second = await api.post(f"/v1/attempts/{aid}/outcome", "col-a", body)
    assert second.status_code == 200
    assert second.json()["outcome"] == first.json()["outcome"]
    assert await api.rows(tables.outcomes) == 1
    assert await api.rows(tables.outbox) == events


async def test_a_different_outcome_for_the_same_attempt_is_409(api: Api) -> None:
    aid = await _attempt(api)
    await api.post(f"/v1/attempts/{aid}/outcome", "col-a", {"disposition": "busy", "note": "占线"})
    before = await api.snapshot()
    r = await api.post(f"/v1/attempts/{aid}/outcome", "col-a", {"disposition": "no_answer", "note": "无人接听"})
    assert r.status_code == 409
    assert r.json()["type"].endswith("/outcome-conflict")
    assert await api.snapshot() == before


async def test_invalid_number_marks_the_contact_invalid_and_later_dials_are_blocked(api: Api) -> None:
    aid = await _attempt(api)
    await api.post(f"/v1/attempts/{aid}/outcome", "col-a", {"disposition": "invalid_number", "note": "空号"})
    case = (await api.get("/v1/cases/C-1", "col-a")).json()
    assert {c["number"]: c["status"] for c in case["contacts"]}["+8613800000001"] == "invalid"
    api.clock.advance(hours=2)
    assert (await api.dial("col-a", "C-1", "13800000001")).json()["decision"]["rule_id"] == "contact.invalid_number"


async def test_third_party_refusal_marks_that_number_do_not_call(api: Api) -> None:
    aid = await _attempt(api, "13900000002")
    r = await api.post(f"/v1/attempts/{aid}/outcome", "col-a", {
        "disposition": "connected_third_party", "result": "third_party_refuses_contact", "note": "家属拒绝再联系"})
    assert r.status_code == 201
    api.clock.advance(hours=2)
    assert (await api.dial("col-a", "C-1", "13900000002")).json()["decision"]["rule_id"] == "contact.do_not_call"


async def test_complaint_risk_flags_the_case_stops_calls_and_alerts_supervisors(api: Api) -> None:
    aid = await _attempt(api)
    r = await api.post(f"/v1/attempts/{aid}/outcome", "col-a", {
        "disposition": "connected_self", "result": "complaint_risk", "note": "客户称要投诉"})
    assert r.json()["case"]["flags"] == ["complaint_risk"]
    alerts = await _events(api, "alert.complaint_risk")
    assert len(alerts) == 1
    assert alerts[0]["attempt_id"] == aid and alerts[0]["creditor"] == "bank-a"
    api.clock.advance(hours=2)
    assert (await api.dial("col-a", "C-1", "13900000002")).json()["decision"]["rule_id"] == "case.complaint_risk"


async def test_callback_creates_an_appointment_that_lets_the_debtor_be_called_at_that_time(api: Api) -> None:
    aid = await _attempt(api)
    r = await api.post(f"/v1/attempts/{aid}/outcome", "col-a", {
        "disposition": "connected_self", "result": "callback", "note": "约晚上九点半回电",
        "callback_at": "2026-11-24T21:30:00+08:00"})
    assert r.status_code == 201
    assert r.json()["case"]["next_action"] == {"status": "callback", "date": "2026-11-24"}
    assert await api.rows(tables.appointments) == 1
    api.clock.set(__import__("datetime").datetime.fromisoformat("2026-11-24T21:30:00+08:00"))
    r = await api.dial("col-a", "C-1", "13800000001")
    assert r.status_code == 201, r.text
    assert r.json()["decision"]["rule_id"] == "appointment.exception"


async def test_reported_deceased_flags_the_case(api: Api) -> None:
    aid = await _attempt(api, "13900000002")
    r = await api.post(f"/v1/attempts/{aid}/outcome", "col-a", {
        "disposition": "connected_third_party", "result": "reported_deceased", "note": "家属称本人已去世"})
    assert r.json()["case"]["flags"] == ["deceased"]
    assert r.json()["case"]["next_action"] == {"status": "deceased_incarcerated_fraud", "date": "2026-11-26"}


async def test_unanswered_call_schedules_follow_up_in_two_days(api: Api) -> None:
    aid = await _attempt(api)
    r = await api.post(f"/v1/attempts/{aid}/outcome", "col-a", {"disposition": "no_answer", "note": "无人接听"})
    assert r.json()["case"]["next_action"] == {"status": "waiting", "date": "2026-11-26"}


async def test_outcome_for_an_unknown_attempt_is_404(api: Api) -> None:
    r = await api.post("/v1/attempts/nope/outcome", "col-a", {"disposition": "busy", "note": "x"})
    assert r.status_code == 404
    assert r.json()["type"].endswith("/no-such-attempt")


async def test_outcome_for_another_collectors_attempt_is_404(api: Api) -> None:
    aid = await _attempt(api)
    before = await api.snapshot()
    r = await api.post(f"/v1/attempts/{aid}/outcome", "col-a2", {"disposition": "busy", "note": "x"})
    assert r.status_code == 404
    assert await api.snapshot() == before


async def test_outcome_for_another_creditors_attempt_is_404(api: Api) -> None:
    aid = await _attempt(api, "18600000006", who="col-b", case_id="B-1")
    r = await api.post(f"/v1/attempts/{aid}/outcome", "sup-a", {"disposition": "busy", "note": "x"})
    assert r.status_code == 404


async def test_outcome_by_qa_is_403(api: Api) -> None:
    aid = await _attempt(api)
    r = await api.post(f"/v1/attempts/{aid}/outcome", "qa-a", {"disposition": "busy", "note": "x"})
    assert r.status_code == 403


async def test_inconsistent_outcome_is_422_listing_each_problem(api: Api) -> None:
    aid = await _attempt(api)
    before = await api.snapshot()
    r = await api.post(f"/v1/attempts/{aid}/outcome", "col-a",
                       {"disposition": "no_answer", "result": "promise_to_pay", "note": "x"})
    assert r.status_code == 422
    fields = sorted(e["field"] for e in r.json()["details"]["errors"])
    assert fields == ["promise", "result"]
    r = await api.post(f"/v1/attempts/{aid}/outcome", "col-a", {"disposition": "hung_up", "note": "x"})
    assert r.status_code == 422
    assert await api.snapshot() == before


async def test_outcome_without_a_note_is_422(api: Api) -> None:
    aid = await _attempt(api)
    r = await api.post(f"/v1/attempts/{aid}/outcome", "col-a", {"disposition": "busy"})
    assert r.status_code == 422
    assert r.json()["details"]["errors"][0]["field"] == "note"


async def test_outcome_with_malformed_json_is_400(api: Api) -> None:
    aid = await _attempt(api)
    r = await api.client.post(f"/v1/attempts/{aid}/outcome", content=b"disposition=busy",
                              headers={**api.auth("col-a"), "Content-Type": "application/json"})
    assert r.status_code == 400


async def test_a_released_attempt_cannot_be_logged_as_connected_nor_make_an_appointment(api: Api) -> None:
    # Released: the click-to-dial call ended before the debtor's phone rang, so nobody
    # agreed to anything; a callback logged on it would waive the 21:00 window.
    aid = await _attempt(api)
    async with api.svc.store.write() as uow:
        await uow.attempts.set_state(aid, "released")
    before = await api.snapshot()
    r = await api.post(f"/v1/attempts/{aid}/outcome", "col-a", {
        "disposition": "connected_self", "result": "callback", "note": "约晚上十一点回电",
        "callback_at": "2026-11-24T23:00:00+08:00"})
    assert r.status_code == 409, r.text
    assert r.json()["details"]["attempt_id"] == aid and r.json()["details"]["state"] == "released"
    assert await api.snapshot() == before
    api.clock.set(__import__("datetime").datetime.fromisoformat("2026-11-24T23:00:00+08:00"))
    assert (await api.dial("col-a", "C-1", "13800000001")).json()["decision"]["rule_id"] == "window.outside_hours"
    # What did happen stays loggable: the call never connected.
    r = await api.post(f"/v1/attempts/{aid}/outcome", "col-a", {"disposition": "no_answer", "note": "未接通"})
    assert r.status_code == 201, r.text


async def test_the_pbx_logs_how_a_call_ended_but_no_callback_agreed_on_it(api: Api) -> None:
    # The switch knows whether the call connected, not what the debtor agreed: a
    # callback it logged would waive the window at a time nobody agreed to.
    aid = await _attempt(api)
    before = await api.snapshot()
    r = await api.post(f"/v1/attempts/{aid}/outcome", "pbx", {
        "disposition": "connected_self", "result": "callback", "note": "auto",
        "callback_at": "2026-11-24T23:00:00+08:00"})
    assert r.status_code == 403, r.text
    assert r.json()["details"]["field"] == "result"
    assert await api.snapshot() == before
    api.clock.set(__import__("datetime").datetime.fromisoformat("2026-11-24T23:00:00+08:00"))
    assert (await api.dial("col-a", "C-1", "13800000001")).json()["decision"]["rule_id"] == "window.outside_hours"
    r = await api.post(f"/v1/attempts/{aid}/outcome", "pbx", {"disposition": "connected_self", "note": "auto"})
    assert r.status_code == 201, r.text
