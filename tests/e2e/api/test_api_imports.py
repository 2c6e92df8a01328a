"""Import jobs through the API: POST /v1/imports?kind=…, GET /v1/imports/{id}."""

from __future__ import annotations

import asyncio
import json

import pytest

from adapters.db import tables
from gate_api_support import Api
from tests.support.builders import case_doc

GBK_CSV = (
    "creditor,case_id,debtor_name,assigned_agent,number,relation\n"
    "bank-a,G-1,王小明,col-a,13800000101,self\n"
    "bank-a,G-1,王小明,col-a,13800000102,family\n"
).encode("gbk")


async def test_a_small_file_is_applied_before_the_answer_and_its_job_reads_done(api: Api) -> None:
    doc = {"cases": [case_doc("J-1", "bank-a", "col-a", ("13800000011", "self"))]}
    r = await api.post("/v1/imports", "data-a", doc, params={"kind": "cases"})
    assert r.status_code == 200, r.text
    job = r.json()
    assert (job["state"], job["rows_total"], job["rows_done"], job["summary"]) == ("done", 1, 1, {"created": 1})
    r = await api.get(f"/v1/imports/{job['import_id']}", "data-a")
    assert r.status_code == 200 and r.json()["state"] == "done"
    assert (await api.get("/v1/cases/J-1", "col-a")).status_code == 200


async def test_a_gbk_csv_is_detected_and_its_chinese_names_stored_intact(api: Api) -> None:
    r = await api.client.post("/v1/imports", params={"kind": "cases"}, content=GBK_CSV,
                              headers={**api.auth("data-a"), "Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    assert r.json()["encoding"] == "gb18030"
    case = (await api.get("/v1/cases/G-1", "col-a")).json()
    assert case["debtor_name"] == "王小明"
    assert len(case["contacts"]) == 2


async def test_a_gbk_csv_declared_utf8_is_400_naming_the_encoding_and_writes_no_case(api: Api) -> None:
    before = await api.rows(tables.cases)
    r = await api.client.post("/v1/imports", params={"kind": "cases"}, content=GBK_CSV,
                              headers={**api.auth("data-a"), "Content-Type": "text/csv; charset=utf-8"})
    assert r.status_code == 400
    assert "utf-8" in r.json()["detail"]
    assert await api.rows(tables.cases) == before
    job = (await api.get(f"/v1/imports/{r.json()['details']['import_id']}", "data-a")).json()
    assert job["state"] == "refused" and job["rows_done"] == 0


async def test_an_unclosed_quote_refuses_the_file_naming_the_row_and_writes_nothing(api: Api) -> None:
    body = b'creditor,case_id,debtor_name,number,relation\nbank-a,Q-1,"Zhang,13800000201,self\n'
    before = await api.snapshot()
    r = await api.client.post("/v1/imports", params={"kind": "cases"}, content=body,
                              headers={**api.auth("data-a"), "Content-Type": "text/csv"})
    assert r.status_code == 400
    assert r.json()["type"].endswith("/invalid-import")
    assert [e["row"] for e in r.json()["details"]["errors"]] == [2]
    after = await api.snapshot()
    assert {k: v for k, v in after.items() if k != "audit_log"} == {k: v for k, v in before.items() if k != "audit_log"}


async def test_a_field_over_the_csv_limit_is_a_400_row_error_not_a_500(api: Api) -> None:
    body = ("creditor,case_id,debtor_name,number,relation\nbank-a,Q-2," + "x" * 140_000 + ",13800000202,self\n").encode()
    r = await api.client.post("/v1/cases:import", content=body,
                              headers={**api.auth("data-a"), "Content-Type": "text/csv"})
    assert r.status_code == 400
    (error,) = r.json()["details"]["errors"]
    assert error["row"] == 2 and "131072" in error["error"]


async def test_repayments_import_as_a_job_closes_the_settled_case(api: Api) -> None:
    doc = {"repayments": [{"creditor": "bank-a", "case_id": "C-2", "amount": "1000.00", "settled": True}]}
    r = await api.post("/v1/imports", "data-a", doc, params={"kind": "repayments"})
    assert r.status_code == 200, r.text
    assert r.json()["summary"] == {"recorded": 1, "closed": 1}
    assert (await api.get("/v1/cases/C-2", "col-a2")).json()["status"] == "settled"


async def test_an_unknown_kind_is_422_naming_the_parameter(api: Api) -> None:
    r = await api.post("/v1/imports", "data-a", {"cases": []}, params={"kind": "contacts"})
    assert r.status_code == 422
    assert "kind" in json.dumps(r.json())


async def test_a_collector_may_neither_import_nor_read_an_import(api: Api) -> None:
    r = await api.post("/v1/imports", "col-a", {"cases": []}, params={"kind": "cases"})
    assert r.status_code == 403
    doc = {"cases": [case_doc("J-2", "bank-a", "col-a", ("13800000012", "self"))]}
    import_id = (await api.post("/v1/imports", "data-a", doc, params={"kind": "cases"})).json()["import_id"]
    assert (await api.get(f"/v1/imports/{import_id}", "col-a")).status_code == 403


async def test_another_creditors_data_user_reads_the_import_as_404(api: Api) -> None:
    doc = {"cases": [case_doc("J-3", "bank-a", "col-a", ("13800000013", "self"))]}
    import_id = (await api.post("/v1/imports", "data-a", doc, params={"kind": "cases"})).json()["import_id"]
    r = await api.get(f"/v1/imports/{import_id}", "data-b")
    assert r.status_code == 404
    assert (await api.get(f"/v1/imports/{import_id}", "admin")).status_code == 200


async def test_the_legacy_endpoint_names_its_import_in_a_header(api: Api) -> None:
    doc = {"cases": [case_doc("J-4", "bank-a", "col-a", ("13800000014", "self"))]}
    r = await api.post("/v1/cases:import", "data-a", doc)
    assert r.json() == {"created": 1, "updated": 0, "total": 1}
    job = (await api.get(f"/v1/imports/{r.headers['x-import-id']}", "data-a")).json()
    assert job["state"] == "done" and job["kind"] == "cases"


async def _finished(api: Api, import_id: str) -> dict:
    for _ in range(200):
        job = (await api.get(f"/v1/imports/{import_id}", "data-a")).json()
        if job["state"] not in ("validating", "applying"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"import {import_id} still {job['state']}")


@pytest.mark.parametrize(("kind", "ctype", "body", "row"), [
    ("cases", "text/csv", "creditor,case_id,debtor_name,number,relation\nbank-a,N-1,ok,13800000301,self\n"
                          "bank-a,N-2,bad\x00name,13800000302,self\n", 3),  # the file's line
    ("cases", "application/json", json.dumps({"cases": [
        case_doc("N-1", "bank-a", "col-a", ("13800000301", "self")),
        {**case_doc("N-2", "bank-a", "col-a", ("13800000302", "self")), "debtor_name": "bad\x00name"}]}), 2),
    ("repayments", "application/json", json.dumps({"repayments": [
        {"creditor": "bank-a", "case_id": "C-1", "amount": "1", "settled": False},
        {"creditor": "bank-a", "case_id": "C\x00-2", "amount": "1", "settled": False}]}), 2),
], ids=["cases csv", "cases json", "repayments json"])
async def test_a_nul_character_in_a_row_refuses_the_file_naming_row_and_field_on_either_engine(
    api: Api, kind: str, ctype: str, body: str, row: int,
) -> None:
    # PostgreSQL cannot store a NUL in text; SQLite can: refused before either sees it.
    before = await api.snapshot()
    r = await api.client.post("/v1/imports", params={"kind": kind}, content=body.encode(),
                              headers={**api.auth("data-a"), "Content-Type": ctype})
    assert r.status_code == 400, r.text
    assert r.json()["type"].endswith("/invalid-import")
    (error,) = r.json()["details"]["errors"]
    assert error["row"] == row and error["field"] in ("debtor_name", "case_id") and "NUL" in error["error"]
    job = await _finished(api, r.json()["details"]["import_id"])
    assert (job["state"], job["rows_done"]) == ("refused", 0)
    after = await api.snapshot()
    assert {k: v for k, v in after.items() if k != "audit_log"} == {k: v for k, v in before.items() if k != "audit_log"}


async def test_a_nul_character_deep_in_a_large_csv_applies_no_row_of_it(api: Api) -> None:
    rows = "".join(f"bank-a,M-{i},{'y' * 200},1380{i:07d},self\n" for i in range(1, 1500))
    body = "creditor,case_id,debtor_name,number,relation\n" + rows + "bank-a,M-0,a\x00b,13812345678,self\n"
    assert len(body) > api.svc.imports.limits.sync_bytes  # validated and applied after the answer
    before = await api.rows(tables.cases)
    r = await api.client.post("/v1/imports", params={"kind": "cases"}, content=body.encode(),
                              headers={**api.auth("data-a"), "Content-Type": "text/csv"})
    assert r.status_code == 202, r.text
    job = await _finished(api, r.json()["import_id"])
    assert (job["state"], job["rows_done"]) == ("refused", 0), job
    assert [(e["row"], e["field"]) for e in job["errors"]] == [(1501, "debtor_name")]
    assert await api.rows(tables.cases) == before
