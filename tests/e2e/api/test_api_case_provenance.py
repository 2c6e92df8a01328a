"""What a case file may change and what it may not: stops the agency learned survive a
re-import; a repayment closure survives a stale file; only an explicit reopen lifts it."""

from __future__ import annotations

from datetime import datetime

import pytest

from gate_api_support import CASES_A, Api
from tests.support.builders import SHANGHAI, case_doc


async def _attempt(api: Api, number: str = "13800000001", who: str = "col-a", case_id: str = "C-1") -> str:
    r = await api.dial(who, case_id, number)
    assert r.status_code == 201, r.text
    return r.json()["attempt_id"]


async def _reimport_bank_file(api: Api, **changes: object) -> None:
    """The bank's refreshed file: only the balance changed, `flags: []` as always."""
    doc = {**CASES_A[0], "amount_due": "900.00", **changes}
    r = await api.post("/v1/cases:import", "data-a", {"cases": [doc]})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("disposition", "result", "rule_id"),
    [
        ("connected_self", "dispute", "case.dispute"),
        ("connected_self", "complaint_risk", "case.complaint_risk"),
        ("connected_third_party", "reported_deceased", "case.deceased"),
        ("connected_third_party", "reported_incarcerated", "case.incarcerated"),
        ("connected_self", "fraud_claim", "case.fraud_claim"),
    ],
)
async def test_a_reimport_of_the_banks_file_after_an_outcome_stop_still_blocks_the_next_dial(
    api: Api, disposition: str, result: str, rule_id: str
) -> None:
    number = "13800000001" if disposition == "connected_self" else "13900000002"
    aid = await _attempt(api, number)
    r = await api.post(f"/v1/attempts/{aid}/outcome", "col-a",
                       {"disposition": disposition, "result": result, "note": "记录"})
    assert r.status_code == 201, r.text
    await _reimport_bank_file(api)
    api.clock.advance(hours=3)
    r = await api.dial("col-a", "C-1", "13800000001")
    assert r.status_code == 403, r.text
    assert r.json()["decision"]["rule_id"] == rule_id
    case = (await api.get("/v1/cases/C-1", "admin")).json()
    assert case["amount_due"] == "900.00"  # the file's own data did apply


async def test_the_banks_own_flag_is_lifted_by_the_banks_next_file(api: Api) -> None:
    await _reimport_bank_file(api, flags=["litigation"])
    r = await api.dial("col-a", "C-1", "13800000001")
    assert r.json()["decision"]["rule_id"] == "case.litigation"
    await _reimport_bank_file(api, flags=[])
    r = await api.dial("col-a", "C-1", "13800000001")
    assert r.status_code == 201, r.text
    case = (await api.get("/v1/cases/C-1", "admin")).json()
    assert case["flags"] == []


async def test_a_repayment_closure_survives_a_stale_case_file_that_still_says_active(api: Api) -> None:
    r = await api.post("/v1/repayments:import", "data-a", {"repayments": [
        {"creditor": "bank-a", "case_id": "C-1", "amount": "1000.00", "paid_on": "2026-11-23", "settled": True}]})
    assert r.status_code == 200, r.text
    await _reimport_bank_file(api)  # status "active", as the bank's files always say
    case = (await api.get("/v1/cases/C-1", "admin")).json()
    assert case["status"] == "settled"
    assert case["next_action"]["status"] == "closed"
    r = await api.dial("col-a", "C-1", "13800000001")
    assert r.status_code == 403
    assert r.json()["decision"]["rule_id"] == "case.closed"


async def test_a_file_that_reopens_a_settled_case_explicitly_with_a_reason_reopens_it(api: Api) -> None:
    await api.post("/v1/repayments:import", "data-a", {"repayments": [
        {"creditor": "bank-a", "case_id": "C-1", "amount": "1000.00", "paid_on": "2026-11-23", "settled": True}]})
    await _reimport_bank_file(api, reopen="还款被银行退回 / repayment reversed by the bank")
    case = (await api.get("/v1/cases/C-1", "admin")).json()
    assert case["status"] == "active"
    assert case["next_action"]["status"] == "waiting"
    r = await api.dial("col-a", "C-1", "13800000001")
    assert r.status_code == 201, r.text


async def test_a_reopen_field_that_is_empty_refuses_the_file_naming_the_field(api: Api) -> None:
    r = await api.post("/v1/cases:import", "data-a", {"cases": [{**CASES_A[0], "reopen": " "}]})
    assert r.status_code == 400, r.text
    assert [e["field"] for e in r.json()["details"]["errors"]] == ["reopen"]


async def test_a_file_that_pauses_a_case_clears_its_next_action_date(api: Api) -> None:
    await _reimport_bank_file(api, status="paused")
    case = (await api.get("/v1/cases/C-1", "admin")).json()
    assert case["next_action"] == {"status": "paused", "status_zh": "暂停催收", "date": None}


async def test_a_do_not_call_mark_survives_a_file_that_lists_the_number_again(api: Api) -> None:
    aid = await _attempt(api, "13900000002")
    await api.post(f"/v1/attempts/{aid}/outcome", "col-a", {
        "disposition": "connected_third_party", "result": "third_party_refuses_contact", "note": "家属拒绝"})
    await _reimport_bank_file(api)
    api.clock.advance(hours=3)
    r = await api.dial("col-a", "C-1", "13900000002")
    assert r.status_code == 403
    assert r.json()["decision"]["rule_id"] == "contact.do_not_call"


@pytest.mark.parametrize(("disposition", "result", "rule_id"), [
    ("connected_third_party", "third_party_refuses_contact", "contact.do_not_call"),
    ("invalid_number", None, "contact.invalid_number"),
])
async def test_a_mark_survives_a_file_that_drops_the_number_and_a_later_one_that_lists_it_again(
    api: Api, disposition: str, result: str | None, rule_id: str
) -> None:
    aid = await _attempt(api, "13900000002")
    outcome = {"disposition": disposition, "note": "家属拒绝"} | ({"result": result} if result else {})
    r = await api.post(f"/v1/attempts/{aid}/outcome", "col-a", outcome)
    assert r.status_code == 201, r.text
    own_number_only = [c for c in CASES_A[0]["contacts"] if c["number"] == "13800000001"]
    await _reimport_bank_file(api, contacts=own_number_only)  # a month's extract without it
    await _reimport_bank_file(api)  # the next one lists it again
    api.clock.advance(hours=3)
    r = await api.dial("col-a", "C-1", "13900000002")
    assert r.status_code == 403, r.text
    assert r.json()["decision"]["rule_id"] == rule_id


@pytest.mark.parametrize(("disposition", "result", "rule_id"), [
    ("connected_third_party", "third_party_refuses_contact", "contact.do_not_call"),
    ("invalid_number", None, "contact.invalid_number"),
])
async def test_a_mark_from_a_call_whose_number_a_file_dropped_meanwhile_holds_when_a_later_file_lists_it(
    api: Api, disposition: str, result: str | None, rule_id: str
) -> None:
    aid = await _attempt(api, "13900000002")
    own_number_only = [c for c in CASES_A[0]["contacts"] if c["number"] == "13800000001"]
    await _reimport_bank_file(api, contacts=own_number_only)  # the file drops it while the call is on
    outcome = {"disposition": disposition, "note": "家属拒绝"} | ({"result": result} if result else {})
    r = await api.post(f"/v1/attempts/{aid}/outcome", "col-a", outcome)
    assert r.status_code == 201, r.text
    await _reimport_bank_file(api)  # the next one lists it again
    api.clock.advance(hours=3)
    r = await api.dial("col-a", "C-1", "13900000002")
    assert r.status_code == 403, r.text
    assert r.json()["decision"]["rule_id"] == rule_id


@pytest.mark.parametrize("blank", [None, ""], ids=["left out", "empty"])
async def test_a_file_without_a_commission_end_keeps_an_ended_commission_ended(api: Api, blank: str | None) -> None:
    api.clock.set(datetime(2027, 2, 1, 10, 0, tzinfo=SHANGHAI))  # the day after the commission's end
    r = await api.dial("col-a", "C-1", "13800000001")
    assert r.json()["decision"]["rule_id"] == "case.commission_expired"
    doc = {k: v for k, v in CASES_A[0].items() if k != "commission_end"}
    r = await api.post("/v1/cases:import", "data-a", {"cases": [doc | ({} if blank is None else {"commission_end": ""})]})
    assert r.status_code == 200, r.text
    r = await api.dial("col-a", "C-1", "13800000001")
    assert r.status_code == 403, r.text
    assert r.json()["decision"]["rule_id"] == "case.commission_expired"
    case = (await api.get("/v1/cases/C-1", "admin")).json()
    assert case["commission_end"] == "2027-01-31"


async def test_a_file_without_a_commission_start_keeps_a_commission_that_has_not_started_closed(api: Api) -> None:
    await _reimport_bank_file(api, commission_start="2026-12-01")
    r = await api.dial("col-a", "C-1", "13800000001")
    assert r.json()["decision"]["rule_id"] == "case.commission_not_started"
    await _reimport_bank_file(api, commission_start="")
    r = await api.dial("col-a", "C-1", "13800000001")
    assert r.status_code == 403, r.text
    assert r.json()["decision"]["rule_id"] == "case.commission_not_started"


async def test_a_new_case_from_a_file_is_unflagged_and_due_for_its_first_call_in_two_days(api: Api) -> None:
    r = await api.post("/v1/cases:import", "data-a", {"cases": [case_doc("C-9", "bank-a", "col-a",
                                                                           ("13600000009", "self"))]})
    assert r.status_code == 200, r.text
    case = (await api.get("/v1/cases/C-9", "admin")).json()
    assert case["next_action"] == {"status": "new", "status_zh": "新案待首催", "date": "2026-11-26"}


async def test_a_repayment_for_a_case_the_bank_already_marked_settled_still_holds_it_closed(api: Api) -> None:
    await _reimport_bank_file(api, status="settled")
    r = await api.post("/v1/repayments:import", "data-a", {"repayments": [
        {"creditor": "bank-a", "case_id": "C-1", "amount": "1000.00", "paid_on": "2026-11-23", "settled": True}]})
    assert r.status_code == 200, r.text
    await _reimport_bank_file(api)  # an older extract still saying active
    r = await api.dial("col-a", "C-1", "13800000001")
    assert r.status_code == 403
    assert r.json()["decision"]["rule_id"] == "case.closed"
