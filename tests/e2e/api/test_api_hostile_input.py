"""Hostile input the schema-driven fuzz (test_api_fuzz.py) does not build: numbers at the
64-bit edge, digits outside ASCII, dates the import refuses sent to another route, and
the same mutating request twice at once. Each answer is a 4xx naming what is wrong (or
the one right answer), never a 5xx, and a refusal writes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from adapters.db import tables
from adapters.db.recordings_tables import recording_case_holds
from gate_api_support import Api


@pytest.fixture
async def raw(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    """The app as a server runs it: an exception is a 500 answer, not a raise."""
    transport = httpx.ASGITransport(app=api.client._transport.app, raise_app_exceptions=False)  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=transport, base_url="http://gate") as c:
        yield c


async def _refused(api: Api, raw: httpx.AsyncClient, who: str, method: str, url: str, **kw: Any) -> httpx.Response:
    before = await api.snapshot()
    r = await raw.request(method, url, headers={**api.auth(who), **kw.pop("headers", {})}, **kw)
    assert 400 <= r.status_code < 500, (url, r.status_code, r.text[:300])
    assert r.headers["content-type"] == "application/problem+json", r.text
    assert await api.snapshot() == before
    return r


async def test_a_history_cursor_beyond_64_bits_is_a_422_naming_after(api: Api, raw: httpx.AsyncClient) -> None:
    ok = await raw.get("/v1/cases/C-1/history", params={"after": str(2**63 - 1)}, headers=api.auth("admin"))
    assert ok.status_code == 200 and ok.json()["items"] == [], ok.text
    r = await _refused(api, raw, "admin", "GET", "/v1/cases/C-1/history", params={"after": str(2**63)})
    assert r.status_code == 422
    assert r.json()["details"]["errors"][0]["field"] == "query.after"


@pytest.mark.parametrize("cursor", ["²", "١٢", "１"], ids=["superscript", "arabic-indic", "fullwidth"])
async def test_a_cursor_of_digits_outside_ascii_is_a_400_naming_cursor(
    api: Api, raw: httpx.AsyncClient, cursor: str,
) -> None:
    # str.isdigit() says yes to all three; int() takes two of them and chokes on "²".
    for fmt in ("json", "csv"):
        r = await _refused(api, raw, "comp-a", "GET", "/v1/blocked-dials", params={"cursor": cursor, "format": fmt})
        assert r.status_code == 400
        assert r.json()["details"]["field"] == "cursor"


async def test_a_content_length_of_a_latin_1_digit_is_a_400_naming_the_header(api: Api) -> None:
    # httpx will not send it; a raw ASGI request carries the byte as an HTTP/1.1 header may.
    app = api.client._transport.app  # type: ignore[attr-defined]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/dial-checks", "raw_path": b"/v1/dial-checks", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"gate"), (b"authorization", api.auth("comp-a")["Authorization"].encode()),
                    (b"content-type", b"application/json"), (b"content-length", b"\xb2")],
        "client": ("127.0.0.1", 40000), "server": ("gate", 80),
    }
    body = [{"type": "http.request", "body": b"{}", "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return body.pop(0) if body else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    before = await api.snapshot()
    await app(scope, receive, send)
    assert sent[0]["status"] == 400, sent
    assert b"Content-Length" in b"".join(m.get("body", b"") for m in sent[1:])
    assert await api.snapshot() == before


async def test_the_same_case_hold_placed_twice_at_once_answers_200_twice_with_one_hold(
    api: Api, raw: httpx.AsyncClient,
) -> None:
    # Both requests found no hold and inserted one: PostgreSQL's unique key refused the
    # second, which answered 503 "store unavailable" (and paged on-call) for a double click.
    rs = await asyncio.gather(*[
        raw.post("/v1/cases/C-1/legal-hold", json={"reason": f"complaint {i}"}, headers=api.auth("comp-a"))
        for i in range(4)
    ])
    assert [r.status_code for r in rs] == [200] * 4, [r.text[:200] for r in rs]
    async with api.svc.store.read() as uow:
        rows = (await uow.conn.execute(recording_case_holds.select())).all()
    assert [(r.creditor, r.case_id) for r in rows] == [("bank-a", "C-1")]
    assert rows[0].reason in {f"complaint {i}" for i in range(4)}
    assert await api.rows(tables.audit_log, tables.audit_log.c.action == "case.recordings_hold_placed") == 4


@pytest.mark.parametrize("end", ["9999-12-31", "2100-01-01"])
async def test_a_commission_extended_past_2099_is_a_422_naming_commission_end_as_the_import_refuses_it(
    api: Api, raw: httpx.AsyncClient, end: str,
) -> None:
    r = await _refused(api, raw, "data-a", "POST", "/v1/cases/C-1/commission",
                       json={"reason": "bank letter 12", "commission_end": end})
    assert r.status_code == 422
    assert r.json()["details"]["errors"][0]["field"] == "commission_end"
    assert (await api.get("/v1/cases/C-1", "admin")).json()["commission_end"] == "2027-01-31"
    ok = await raw.post("/v1/cases/C-1/commission", json={"reason": "bank letter 12", "commission_end": "2099-12-31"},
                        headers=api.auth("data-a"))
    assert ok.status_code == 200 and ok.json()["commission_end"] == "2099-12-31", ok.text


# A NUL in a stored text: SQLite kept it, PostgreSQL refused the statement with a 400
# that named nothing. Either way now: 422 naming the field, nothing written.
NUL_BODIES = [
    ("outcome note", "col-a2", "/v1/attempts/{attempt}/outcome", {"disposition": "no_answer", "note": "a\x00b"}, "note"),
    ("contact name", "data-a", "/v1/cases/C-1/contacts",
     {"number": "13600000000", "relation": "self", "source": "info_repair", "name": "a\x00"}, "name"),
    ("contact source", "data-a", "/v1/cases/C-1/contacts",
     {"number": "13600000000", "relation": "self", "source": "x\x00"}, "source"),
    ("pause reason", "data-a", "/v1/cases/C-1/pause", {"reason": "bank\x00letter"}, "reason"),
    ("case hold reason", "comp-a", "/v1/cases/C-1/legal-hold", {"reason": "complaint\x00 17"}, "reason"),
    ("purge creditor", "admin", "/v1/purges", {"dry_run": False, "creditor": "bank-a\x00"}, "creditor"),
    ("link attempt", "admin", "/v1/recordings/r-1/link", {"attempt_id": "a\x00"}, "attempt_id"),
]


@pytest.mark.parametrize(("label", "who", "path", "body", "field"), NUL_BODIES, ids=[b[0] for b in NUL_BODIES])
async def test_a_nul_character_in_a_body_text_is_a_422_naming_the_field_on_either_engine(
    api: Api, raw: httpx.AsyncClient, label: str, who: str, path: str, body: dict[str, Any], field: str,
) -> None:
    attempt = ""
    if "{attempt}" in path:
        r = await api.dial("col-a2", "C-2", "13700000003")
        assert r.status_code == 201, r.text
        attempt = r.json()["attempt_id"]
    r = await _refused(api, raw, who, "POST", path.format(attempt=attempt), json=body)
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["details"]["errors"]] == [field]
    assert "NUL" in r.json()["detail"]


def _case(case_id: str, number: str, **fields: Any) -> dict[str, Any]:
    return {"case_id": case_id, "creditor": "bank-a", "debtor_name": "x", "status": "active",
            "commission_start": "2026-11-01", "commission_end": "2027-01-31", "assigned_agent": "col-a",
            "contacts": [{"number": number, "relation": "self"}], **fields}


@pytest.fixture(params=["sqlite", "postgresql"])
async def one_row_batches(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Api]:
    """The API applying imports one row per batch (a large file's way), on either engine."""
    from contextlib import AsyncExitStack

    from gate_api_support import USERS, _keep_events
    from tests.support.harness import in_process
    from tests.support.pg import private_pg_database

    config: dict[str, Any] = {"paths": {"data_dir": str(tmp_path)}, "imports": {"batch_rows": 1, "runner": "inline"}}
    async with AsyncExitStack() as stack:
        if request.param == "postgresql":
            config["store"] = {"url": await stack.enter_async_context(private_pg_database("api"))}
        yield await stack.enter_async_context(in_process(config, users=USERS, handle=Api, prepare=_keep_events))


# Each value is longer than its column: SQLite kept it whole, PostgreSQL refused the row
# while applying — after the batches before it had committed.
TOO_LONG = [
    ("debtor_name", {"debtor_name": "d" * 201}, "debtor_name"),
    ("assigned_agent", {"assigned_agent": "a" * 101}, "assigned_agent"),
    ("contact name", {"contacts": [{"number": "13800000093", "relation": "self", "name": "n" * 201}]},
     "contacts[0].name"),
    ("amount_due digits", {"amount_due": "1." + "1" * 60}, "amount_due"),
]


@pytest.mark.parametrize(("label", "fields", "field"), TOO_LONG, ids=[t[0] for t in TOO_LONG])
async def test_a_case_field_longer_than_the_store_keeps_refuses_the_import_whole_naming_row_and_field(
    one_row_batches: Api, label: str, fields: dict[str, Any], field: str,
) -> None:
    api = one_row_batches
    cases = [_case("L-1", "13800000091"), _case("L-2", "13800000092"), _case("L-3", "13800000093", **fields)]
    r = await api.post("/v1/cases:import", "admin", {"cases": cases})
    assert r.status_code == 400, r.text
    assert {"row": 3, "field": field} in [{k: e[k] for k in ("row", "field")} for e in r.json()["details"]["errors"]]
    assert await api.rows(tables.cases) == 0  # not the two rows before it


async def test_a_promised_amount_of_more_digits_than_the_store_keeps_is_a_422_naming_promise_amount(
    api: Api, raw: httpx.AsyncClient,
) -> None:
    r = await api.dial("col-a2", "C-2", "13700000003")
    assert r.status_code == 201, r.text
    url = f"/v1/attempts/{r.json()['attempt_id']}/outcome"
    body = {"disposition": "connected_self", "result": "promise_to_pay", "note": "will pay Friday",
            "promise": {"amount": "1." + "1" * 60, "date": "2026-11-27"}}
    r = await _refused(api, raw, "col-a2", "POST", url, json=body)
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["details"]["errors"]] == ["promise.amount"]
    ok = await raw.post(url, json={**body, "promise": {"amount": "500.00", "date": "2026-11-27"}},
                        headers=api.auth("col-a2"))
    assert ok.status_code == 201 and ok.json()["outcome"]["promise"]["amount"] == "500.00", ok.text
