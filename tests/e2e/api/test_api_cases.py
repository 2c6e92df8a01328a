"""Case imports (JSON, CSV), repayments, contacts, case view and caller lookup."""

from __future__ import annotations

from adapters.db import tables
from gate_api_support import Api
from tests.support.builders import case_doc


async def test_imported_numbers_are_stored_as_e164_and_shown_to_the_assigned_collector(api: Api) -> None:
    r = await api.get("/v1/cases/C-1", "col-a")
    assert r.status_code == 200
    case = r.json()
    assert [c["number"] for c in case["contacts"]] == ["+8613800000001", "+8613900000002"]
    # 首催2天内: the first call is due within two days of the import.
    assert case["next_action"] == {"status": "new", "status_zh": "新案待首催", "date": "2026-11-26"}


async def test_qa_and_compliance_see_masked_numbers(api: Api) -> None:
    for who in ("qa-a", "comp-a"):
        case = (await api.get("/v1/cases/C-1", who)).json()
        assert [c["number"] for c in case["contacts"]] == ["138****0001", "139****0002"]


async def test_collector_cannot_read_a_case_assigned_to_someone_else(api: Api) -> None:
    assert (await api.get("/v1/cases/C-2", "col-a")).status_code == 404


async def test_another_creditors_case_reads_as_404_not_403(api: Api) -> None:
    r = await api.get("/v1/cases/B-1", "comp-a")
    assert r.status_code == 404
    assert r.json()["type"].endswith("/no-such-case")


async def test_reimport_upserts_by_creditor_and_case_id(api: Api) -> None:
    doc = case_doc("C-1", "bank-a", "col-a", ("13800000001", "self"), debtor_name="张三丰", status="paused")
    r = await api.post("/v1/cases:import", "data-a", {"cases": [doc]})
    assert {k: v for k, v in r.json().items() if k != "import_id"} == {"created": 0, "updated": 1, "total": 1}
    case = (await api.get("/v1/cases/C-1", "admin")).json()
    assert case["debtor_name"] == "张三丰"
    assert case["status"] == "paused"
    assert [c["number"] for c in case["contacts"]] == ["+8613800000001"]
    r = await api.dial("col-a", "C-1", "13800000001")
    assert r.json()["decision"]["rule_id"] == "case.paused"


async def test_a_file_with_invalid_rows_is_refused_whole_listing_every_error(api: Api) -> None:
    before = await api.snapshot()
    good = case_doc("N-1", "bank-a", "col-a", ("13800000011", "self"))
    bad1 = case_doc("N-2", "bank-a", "col-a", ("12345", "self"), ("13800000012", "cousin"))
    bad2 = {**case_doc("N-3", "bank-a", "col-a"), "status": "sleeping", "commission_end": "31/01/2027"}
    r = await api.post("/v1/cases:import", "data-a", {"cases": [good, bad1, bad2]})
    assert r.status_code == 400
    body = r.json()
    assert body["type"].endswith("/invalid-import")
    errors = {(e["row"], e["field"]) for e in body["details"]["errors"]}
    assert errors == {
        (2, "contacts[0].number"),
        (2, "contacts[1].relation"),
        (3, "status"),
        (3, "commission_end"),
    }
    assert await api.snapshot() == before
    assert (await api.get("/v1/cases/N-1", "admin")).status_code == 404


async def test_csv_import_groups_contact_rows_by_case(api: Api) -> None:
    csv_text = (
        "creditor,case_id,debtor_name,status,commission_start,commission_end,assigned_agent,flags,amount_due,"
        "overdue_days,number,relation,contact_name,tz,contact_status,do_not_call\n"
        "bank-a,K-1,李雷,active,2026-11-01,2027-01-31,col-a,,500,10,13800000021,self,李雷,,valid,false\n"
        "bank-a,K-1,李雷,active,2026-11-01,2027-01-31,col-a,,500,10,13800000022,work,前台,,valid,false\n"
        "bank-a,K-2,韩梅梅,active,2026-11-01,2027-01-31,col-a,dispute,800,3,13800000023,self,,,valid,false\n"
    )
    r = await api.client.post(
        "/v1/cases:import", content=csv_text.encode(), headers={**api.auth("data-a"), "Content-Type": "text/csv"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["created"] == 2
    k1 = (await api.get("/v1/cases/K-1", "admin")).json()
    assert [(c["number"], c["relation"]) for c in k1["contacts"]] == [
        ("+8613800000021", "self"),
        ("+8613800000022", "work"),
    ]
    assert (await api.get("/v1/cases/K-2", "admin")).json()["flags"] == ["dispute"]


async def test_csv_with_a_bad_row_names_its_line(api: Api) -> None:
    csv_text = (
        "creditor,case_id,debtor_name,number,relation\n"
        "bank-a,K-9,李雷,13800000031,self\n"
        "bank-a,K-10,韩梅梅,notanumber,self\n"
    )
    before = await api.snapshot()
    r = await api.client.post(
        "/v1/cases:import", content=csv_text.encode(), headers={**api.auth("data-a"), "Content-Type": "text/csv"}
    )
    assert r.status_code == 400
    assert [(e["row"], e["field"]) for e in r.json()["details"]["errors"]] == [(3, "contacts[0].number")]
    assert await api.snapshot() == before


async def test_import_for_a_creditor_outside_the_users_scope_is_refused(api: Api) -> None:
    before = await api.snapshot()
    r = await api.post("/v1/cases:import", "data-a", {"cases": [case_doc("X-1", "bank-b", "col-b")]})
    assert r.status_code == 400
    assert r.json()["details"]["errors"][0]["field"] == "creditor"
    assert await api.snapshot() == before


async def test_import_by_a_collector_is_403_and_writes_nothing(api: Api) -> None:
    before = await api.snapshot()
    r = await api.post("/v1/cases:import", "col-a", {"cases": [case_doc("X-2", "bank-a", "col-a")]})
    assert r.status_code == 403
    assert await api.snapshot() == before


async def test_import_with_malformed_json_is_400(api: Api) -> None:
    r = await api.client.post(
        "/v1/cases:import", content=b'{"cases": [', headers={**api.auth("data-a"), "Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert "malformed JSON" in r.json()["detail"]


async def test_settled_repayment_closes_the_case_and_blocks_dials(api: Api) -> None:
    r = await api.post(
        "/v1/repayments:import", "data-a",
        {"repayments": [{"creditor": "bank-a", "case_id": "C-1", "amount": "1000.00", "paid_on": "2026-11-23",
                         "settled": True}]},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"recorded": 1, "closed": 1}
    case = (await api.get("/v1/cases/C-1", "admin")).json()
    assert case["status"] == "settled"
    assert case["next_action"]["status"] == "closed"
    r = await api.dial("col-a", "C-1", "13800000001")
    assert r.status_code == 403
    assert r.json()["decision"]["rule_id"] == "case.closed"


async def test_a_settled_case_imported_again_with_a_newline_after_its_id_is_refused_and_stays_undialable(
    api: Api,
) -> None:
    r = await api.post("/v1/repayments:import", "data-a",
                       {"repayments": [{"creditor": "bank-a", "case_id": "C-1", "settled": True}]})
    assert r.status_code == 200, r.text
    before = await api.snapshot()
    r = await api.post("/v1/cases:import", "data-a",
                       {"cases": [case_doc("C-1\n", "bank-a", "col-a", ("13800000001", "self"))]})
    assert r.status_code == 400, r.text
    assert [(e["row"], e["field"]) for e in r.json()["details"]["errors"]] == [(1, "case_id")]
    assert await api.snapshot() == before
    # The paid debtor is not called under either spelling of the case.
    assert (await api.dial("col-a", "C-1", "13800000001")).json()["decision"]["rule_id"] == "case.closed"
    assert (await api.dial("col-a", "C-1\n", "13800000001")).status_code == 404


async def test_a_settled_case_imported_again_in_lower_case_is_refused_and_stays_undialable(api: Api) -> None:
    r = await api.post("/v1/repayments:import", "data-a",
                       {"repayments": [{"creditor": "bank-a", "case_id": "C-1", "settled": True}]})
    assert r.status_code == 200, r.text
    before = await api.snapshot()
    for path, params in (("/v1/cases:import", None), ("/v1/imports", {"kind": "cases"})):
        r = await api.post(path, "data-a", {"cases": [case_doc("c-1", "bank-a", "col-a", ("13800000001", "self"))]},
                           params=params)
        assert r.status_code == 400, r.text
        (error,) = r.json()["details"]["errors"]
        assert (error["row"], error["field"]) == (1, "case_id") and "'C-1'" in error["error"]
    assert await api.snapshot() == before
    assert (await api.dial("col-a", "C-1", "13800000001")).json()["decision"]["rule_id"] == "case.closed"
    assert (await api.dial("col-a", "c-1", "13800000001")).status_code == 404


async def test_repayment_for_an_unknown_case_refuses_the_whole_file(api: Api) -> None:
    before = await api.snapshot()
    r = await api.post(
        "/v1/repayments:import", "data-a",
        {"repayments": [{"creditor": "bank-a", "case_id": "C-1", "settled": True},
                        {"creditor": "bank-a", "case_id": "GHOST", "settled": True}]},
    )
    assert r.status_code == 400
    assert [(e["row"], e["field"]) for e in r.json()["details"]["errors"]] == [(2, "case_id")]
    assert await api.snapshot() == before


async def test_repayment_for_another_creditors_case_is_refused(api: Api) -> None:
    before = await api.snapshot()
    r = await api.post("/v1/repayments:import", "data-a",
                       {"repayments": [{"creditor": "bank-b", "case_id": "B-1", "settled": True}]})
    assert r.status_code == 400
    assert await api.snapshot() == before


async def test_repayment_import_by_compliance_is_403(api: Api) -> None:
    r = await api.post("/v1/repayments:import", "comp-a",
                       {"repayments": [{"creditor": "bank-a", "case_id": "C-1", "settled": True}]})
    assert r.status_code == 403


async def test_a_verified_new_number_becomes_dialable(api: Api) -> None:
    assert (await api.dial("col-a", "C-1", "13500000077")).json()["decision"]["rule_id"] == "contact.not_authorized"
    r = await api.post("/v1/cases/C-1/contacts", "data-a",
                       {"number": "135 0000 0077", "relation": "self", "source": "info_repair"})
    assert r.status_code == 201, r.text
    case = (await api.get("/v1/cases/C-1", "col-a")).json()
    added = [c for c in case["contacts"] if c["number"] == "+8613500000077"]
    assert added and added[0]["source"] == "info_repair"
    assert (await api.dial("col-a", "C-1", "13500000077")).status_code == 201


async def test_adding_a_number_the_case_has_is_409(api: Api) -> None:
    before = await api.snapshot()
    r = await api.post("/v1/cases/C-1/contacts", "data-a",
                       {"number": "13800000001", "relation": "self", "source": "info_repair"})
    assert r.status_code == 409
    assert await api.snapshot() == before


async def test_adding_a_contact_to_another_creditors_case_is_404(api: Api) -> None:
    before = await api.snapshot()
    r = await api.post("/v1/cases/B-1/contacts", "data-a",
                       {"number": "13500000078", "relation": "self", "source": "info_repair"})
    assert r.status_code == 404
    assert await api.snapshot() == before


async def test_adding_an_invalid_number_is_400_naming_the_field(api: Api) -> None:
    r = await api.post("/v1/cases/C-1/contacts", "data-a", {"number": "999", "relation": "self", "source": "x"})
    assert r.status_code == 400
    assert r.json()["details"]["errors"][0]["field"] == "number"


async def test_adding_a_contact_as_collector_is_403(api: Api) -> None:
    r = await api.post("/v1/cases/C-1/contacts", "col-a", {"number": "13500000079", "relation": "self", "source": "x"})
    assert r.status_code == 403


async def test_lookup_finds_the_callers_cases_within_the_users_creditors(api: Api) -> None:
    r = await api.get("/v1/lookup", "sup-a", params={"number": "139-0000-0002"})
    assert r.status_code == 200
    items = r.json()["items"]
    assert [(i["case_id"], i["relation"]) for i in items] == [("C-1", "family")]
    assert items[0]["number"] == "+8613900000002"
    # bank-b's compliance does not see bank-a's case.
    assert (await api.get("/v1/lookup", "comp-b", params={"number": "13900000002"})).json()["items"] == []


async def test_lookup_masks_numbers_for_qa(api: Api) -> None:
    items = (await api.get("/v1/lookup", "qa-a", params={"number": "13900000002"})).json()["items"]
    assert items[0]["number"] == "139****0002"


async def test_lookup_with_a_malformed_number_is_400(api: Api) -> None:
    r = await api.get("/v1/lookup", "sup-a", params={"number": "abc"})
    assert r.status_code == 400
    assert r.json()["details"]["field"] == "number"


async def test_case_view_lists_attempts_with_their_decisions_and_outcomes(api: Api) -> None:
    d = (await api.dial("col-a", "C-1", "13800000001")).json()
    await api.post(f"/v1/attempts/{d['attempt_id']}/outcome", "col-a", {"disposition": "no_answer", "note": "无人接听"})
    case = (await api.get("/v1/cases/C-1", "sup-a")).json()
    (attempt,) = case["attempts"]
    assert attempt["decision"]["rule_id"] == "allow"
    assert attempt["outcome"]["disposition"] == "no_answer"
    assert attempt["state"] == "completed"
    assert await api.rows(tables.outcomes) == 1
