"""Numbers typed into free text: card and ID numbers never stored, phone numbers shown
only to roles with full-number rights (QA and compliance see them masked) over the API."""

from __future__ import annotations

from sqlalchemy import select

from adapters.db import tables
from gate_api_support import Api

NOTE = "客户称新号码13912345678，报卡号 4111 1111 1111 1111，身份证11010519491231002X"


async def _note_logged(api: Api) -> str:
    r = await api.dial("col-a", "C-1", "13800000001")
    assert r.status_code == 201, r.text
    aid = r.json()["attempt_id"]
    r = await api.post(f"/v1/attempts/{aid}/outcome", "col-a", {"disposition": "connected_self", "note": NOTE})
    assert r.status_code == 201, r.text
    return aid


async def test_card_and_id_numbers_in_a_note_are_masked_before_they_are_stored(api: Api) -> None:
    await _note_logged(api)
    async with api.svc.store.read() as uow:
        [stored] = (await uow.conn.execute(select(tables.outcomes.c.note))).scalars().all()
    assert stored == "客户称新号码13912345678，报卡号 ************1111，身份证**************002X"


async def test_qa_and_compliance_see_phone_numbers_in_notes_masked_and_a_collector_sees_them(api: Api) -> None:
    await _note_logged(api)
    notes = {}
    for who in ("qa-a", "comp-a", "col-a", "sup-a"):
        r = await api.get("/v1/cases/C-1", who)
        assert r.status_code == 200, r.text
        notes[who] = r.json()["attempts"][0]["outcome"]["note"]
    assert notes["qa-a"] == notes["comp-a"] == "客户称新号码139****5678，报卡号 ************1111，身份证**************002X"
    assert "13912345678" in notes["col-a"] and "13912345678" in notes["sup-a"]


async def test_names_holding_numbers_are_masked_for_qa_in_the_case_and_in_caller_lookup(api: Api) -> None:
    doc = {"case_id": "C-9", "creditor": "bank-a", "debtor_name": "王五 13600000009", "status": "active",
           "commission_start": "2026-11-01", "commission_end": "2027-01-31", "assigned_agent": "col-a",
           "flags": [], "amount_due": "10.00", "overdue_days": 1,
           "contacts": [{"number": "13800000099", "relation": "self", "name": "王五 卡4111111111111111"}]}
    r = await api.post("/v1/cases:import", "data-a", {"cases": [doc]})
    assert r.status_code == 200, r.text
    case = (await api.get("/v1/cases/C-9", "qa-a")).json()
    assert case["debtor_name"] == "王五 136****0009"
    assert case["contacts"][0]["name"] == "王五 卡************1111"  # stored so: masked on input
    found = await api.get("/v1/lookup", "qa-a", params={"number": "13800000099"})
    assert found.status_code == 200 and "王五 136****0009" in found.text, found.text
    assert "13600000009" not in found.text and "4111111111111111" not in found.text
    assert (await api.get("/v1/cases/C-9", "col-a")).json()["debtor_name"] == "王五 13600000009"


async def test_card_and_id_numbers_in_a_case_actions_reason_never_reach_the_audit_log(api: Api) -> None:
    r = await api.post("/v1/cases/C-1/pause", "sup-a", {"reason": f"银行通知停催：{NOTE}"})
    assert r.status_code == 200, r.text
    async with api.svc.store.read() as uow:
        details = (await uow.conn.execute(
            select(tables.audit_log.c.details).where(tables.audit_log.c.action == "case.pause"))).scalars().all()
    assert len(details) == 1
    assert "4111 1111 1111 1111" not in details[0] and "11010519491231002X" not in details[0]
    assert "************1111" in details[0] and "**************002X" in details[0]

async def test_a_flag_lifted_by_compliance_answers_with_names_masked_as_the_case_view_does(api: Api) -> None:
    r = await api.dial("col-a", "C-1", "13800000001")
    aid = r.json()["attempt_id"]
    r = await api.post(f"/v1/attempts/{aid}/outcome", "col-a",
                       {"disposition": "connected_self", "result": "dispute", "note": "denies"})
    assert r.status_code == 201, r.text
    r = await api.post("/v1/cases/C-1/contacts", "data-a",
                       {"number": "13600000009", "relation": "family", "name": "李四 13912345678", "source": "info_repair"})
    assert r.status_code == 201, r.text
    r = await api.post("/v1/cases/C-1/flags/dispute/lift", "comp-a", {"reason": "resolved with the bank"})
    assert r.status_code == 200, r.text
    assert "13912345678" not in r.text
    assert r.json()["contacts"] == (await api.get("/v1/cases/C-1", "comp-a")).json()["contacts"]


async def test_numbers_typed_into_a_contacts_source_are_masked_as_in_any_free_text(api: Api) -> None:
    r = await api.post("/v1/cases/C-1/contacts", "data-a", {
        "number": "13600000009", "relation": "family", "source": "来电 13912345678 卡 4111 1111 1111 1111"})
    assert r.status_code == 201, r.text
    sources = {}
    for who in ("qa-a", "comp-a", "sup-a"):
        r = await api.get("/v1/cases/C-1", who)
        [added] = [c for c in r.json()["contacts"] if c["relation"] == "family" and c["number"].endswith("0009")]
        sources[who] = added["source"]
    assert sources["qa-a"] == sources["comp-a"] == "来电 139****5678 卡 ************1111"
    assert sources["sup-a"] == "来电 13912345678 卡 ************1111"
