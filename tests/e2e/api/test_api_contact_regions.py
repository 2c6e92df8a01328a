"""A number added to a case is read as the case's creditor reads its numbers, whether
or not the request names the creditor."""

from __future__ import annotations

from typing import Any, AsyncIterator

import pytest

from gate_api_support import Api
from tests.support.builders import case_doc, users
from tests.support.harness import in_process

# bank-b writes its numbers as a US creditor does; the agency's default region is CN.
POLICY = {"creditors": {"bank-b": {"default_region": "US"}}}
CASES_B = [case_doc("B-1", "bank-b", "col-b", ("+8618600000006", "self"))]
# Ten digits that are a Shanghai landline read in CN and a New York number read in US.
WRITTEN = "2125550100"


@pytest.fixture
async def api(tmp_path: Any) -> AsyncIterator[Api]:
    config = {"paths": {"data_dir": str(tmp_path)}, "log": {"json": True}, "policy": POLICY}
    async with in_process(config, users=users("col-b", "data-b"), cases={"data-b": CASES_B}, handle=Api) as api:
        yield api


async def test_a_number_added_without_naming_the_creditor_that_it_reads_otherwise_is_refused_and_not_dialable(
    api: Api,
) -> None:
    before = await api.snapshot()
    r = await api.post("/v1/cases/B-1/contacts", "data-b", {"number": WRITTEN, "relation": "self", "source": "info_repair"})
    assert r.status_code == 422, r.text
    assert r.json()["details"]["field"] == "number" and "US" in r.json()["detail"] and "国家代码" in r.json()["detail"]
    assert await api.snapshot() == before
    # Nobody verified the Shanghai landline the default region reads: it is no number of the case.
    r = await api.dial("col-b", "B-1", "+862125550100")
    assert r.json()["decision"]["rule_id"] == "contact.not_authorized"


async def test_the_same_number_added_with_its_creditor_named_is_read_as_that_creditor_reads_it(api: Api) -> None:
    r = await api.post("/v1/cases/B-1/contacts", "data-b",
                       {"number": WRITTEN, "relation": "self", "source": "info_repair", "creditor": "bank-b"})
    assert r.status_code == 201, r.text
    contacts = (await api.get("/v1/cases/B-1", "data-b")).json()["contacts"]
    assert "+12125550100" in {c["number"] for c in contacts}


async def test_a_number_written_with_its_country_code_is_added_without_naming_the_creditor(api: Api) -> None:
    r = await api.post("/v1/cases/B-1/contacts", "data-b",
                       {"number": "+1 212 555 0100", "relation": "self", "source": "info_repair"})
    assert r.status_code == 201, r.text
