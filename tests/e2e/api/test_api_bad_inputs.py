"""Every bad input is a 4xx problem+json naming what is wrong: nothing written, no 500,
no 503 "store unavailable" (and no ERROR log line paging on-call) for a client's typo."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from dialer.http import problems
from gate_api_support import Api
from tests.conftest import captured_logs

CASE = {"case_id": "P-1", "creditor": "bank-a", "debtor_name": "x", "status": "active",
        "commission_start": "2026-11-01", "commission_end": "2027-01-31", "assigned_agent": "col-a",
        "contacts": [{"number": "13800000009", "relation": "self"}]}
DEEP = "[" * 1000 + "]" * 1000
YEAR_1 = "0001-01-01T00:00:00+14:00"
YEAR_9999 = "9999-12-31T23:59:59-12:00"
CHECK = {"case_id": "C-1", "number": "13800000001", "agent_id": "col-a"}

# (label, who, method, path, request keywords, expected status, the field the answer names)
CASES: list[tuple[str, str, str, str, dict[str, Any], int, str]] = [
    ("cases nested 1,000 deep", "data-a", "POST", "/v1/cases:import",
     {"content": '{"cases": ' + DEEP + "}"}, 400, "nested"),
    ("repayments nested 1,000 deep", "data-a", "POST", "/v1/repayments:import",
     {"content": '{"repayments": ' + DEEP + "}"}, 400, "nested"),
    ("a dial check nested 30,000 deep", "comp-a", "POST", "/v1/dial-checks",
     {"content": '{"case_id": ' + "[" * 30000 + "]" * 30000 + "}"}, 400, "body"),
    ("amount_due NaN", "data-a", "POST", "/v1/cases:import",
     {"json": {"cases": [{**CASE, "amount_due": "NaN"}]}}, 400, "amount_due"),
    ("a NaN literal", "data-a", "POST", "/v1/cases:import",
     {"content": '{"cases": [], "x": NaN}'}, 400, "JSON"),
    ("overdue_days beyond 64 bits", "data-a", "POST", "/v1/cases:import",
     {"json": {"cases": [{**CASE, "overdue_days": 2**64 - 1}]}}, 400, "overdue_days"),
    ("commission_end in year 9999", "data-a", "POST", "/v1/cases:import",
     {"json": {"cases": [{**CASE, "commission_end": "9999-12-31"}]}}, 400, "commission_end"),
    ("a 40-digit cursor", "comp-a", "GET", "/v1/blocked-dials", {"params": {"cursor": "9" * 40}}, 400, "cursor"),
    ("blocked dials from year 1", "comp-a", "GET", "/v1/blocked-dials", {"params": {"from": YEAR_1}}, 400, "from"),
    ("blocked dials to year 9999", "comp-a", "GET", "/v1/blocked-dials", {"params": {"to": YEAR_9999}}, 400, "to"),
    ("the summary from year 1", "comp-a", "GET", "/v1/blocked-dials/summary", {"params": {"from": YEAR_1}}, 400, "from"),
    ("recordings from year 1", "qa-a", "GET", "/v1/recordings", {"params": {"from": YEAR_1}}, 400, "from"),
    ("recordings to year 9999", "qa-a", "GET", "/v1/recordings", {"params": {"to": YEAR_9999}}, 400, "to"),
    ("a dial check at year 1", "comp-a", "POST", "/v1/dial-checks", {"json": {**CHECK, "at": YEAR_1}}, 422, "at"),
    ("a dial check at year 9999", "comp-a", "POST", "/v1/dial-checks", {"json": {**CHECK, "at": YEAR_9999}}, 422, "at"),
    ("a recording started in year 9999", "pbx", "POST", "/v1/recordings",
     {"params": {"call_id": "x-9999", "started_at": YEAR_9999}, "content": b"RIFF",
      "headers": {"Content-Type": "audio/wav"}}, 400, "started_at"),
    ("a contact with an unknown time zone", "data-a", "POST", "/v1/cases/C-1/contacts",
     {"json": {"number": "13600000000", "relation": "self", "tz": "Mars/Olympus", "source": "info_repair"}}, 400, "tz"),
]


@pytest.fixture
async def raw(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    """The app as a server would run it: an exception is a 500 answer, not a raise."""
    transport = httpx.ASGITransport(app=api.client._transport.app, raise_app_exceptions=False)  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=transport, base_url="http://gate") as c:
        yield c


async def _send(raw: httpx.AsyncClient, api: Api, who: str, method: str, path: str, kw: dict[str, Any]) -> httpx.Response:
    kw = dict(kw)
    headers = {**api.auth(who), "Content-Type": "application/json", **kw.pop("headers", {})}
    return await raw.request(method, path, headers=headers, **kw)


@pytest.mark.parametrize(("label", "who", "method", "path", "kw", "status", "field"), CASES, ids=[c[0] for c in CASES])
async def test_a_bad_input_is_a_4xx_problem_naming_the_field_and_writes_nothing(
    api: Api, raw: httpx.AsyncClient, label: str, who: str, method: str, path: str, kw: dict[str, Any], status: int,
    field: str,
) -> None:
    before = await api.snapshot()
    with captured_logs(problems) as logs:
        r = await _send(raw, api, who, method, path, kw)
    assert r.status_code == status, (label, r.status_code, r.text[:300])
    assert r.headers["content-type"] == "application/problem+json"
    assert field in json.dumps(r.json(), ensure_ascii=False), r.text
    assert await api.snapshot() == before
    assert not [e for e in logs if e.get("log_level") == "error"], logs


async def test_a_range_header_of_5000_digits_is_a_400_naming_the_header(api: Api, raw: httpx.AsyncClient) -> None:
    r = await raw.get("/v1/recordings/no-such/audio", params={"reason": "complaint 17"},
                      headers={**api.auth("qa-a"), "Range": "bytes=" + "9" * 5000 + "-"})
    assert r.status_code == 400, r.text
    assert r.json()["details"]["field"] == "Range"


async def test_a_value_the_store_cannot_bind_is_a_400_not_a_503(api: Api) -> None:
    from datetime import datetime, timedelta, timezone

    from dialer.errors import StoreRefusedValue

    with pytest.raises(StoreRefusedValue):
        async with api.svc.store.read() as uow:
            await uow.decisions.query(
                allowed=False, creditors=frozenset({"bank-a"}), since=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),
                until=None, agent_id=None, rule_id=None, case_id=None, after=None, limit=1,
            )


@pytest.mark.parametrize("path", ["/v1/recordings/%00", "/v1/cases/C%00-1", "/v1/attempts/%00",
                                  "/v1/blocked-dials?case_id=C%00-1"])
async def test_a_nul_character_in_an_address_is_a_400_naming_it_on_either_engine(api: Api, path: str) -> None:
    # PostgreSQL refuses NUL in any text value: that is the request's fault, not an outage.
    before = await api.snapshot()
    r = await api.get(path, "admin")
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "NUL" in r.json()["detail"]
    assert await api.snapshot() == before
