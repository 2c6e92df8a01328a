"""Limits before reading: a body is never read for a caller without a valid token nor
beyond its route's limit, and refused tokens are logged and limited per client."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

import httpx

import structlog

from dialer.logs import configure_logging
from dialer.http.limits import IMPORT_BODY_LIMIT, JSON_BODY_LIMIT
from gate_api_support import Api

DIAL = {"case_id": "C-1", "number": "13800000001", "agent_id": "col-a"}


class Body:
    """A request body that hands out its first chunk, then waits forever: a server that
    reads the body before answering never answers."""

    def __init__(self, first: bytes = b'{"case_id": "') -> None:
        self.first = first
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.pulled += 1
        yield self.first
        self.pulled += 1
        await asyncio.Event().wait()
        yield b""  # pragma: no cover


async def _post(api: Api, path: str, body: Body, length: int, headers: dict[str, str]) -> httpx.Response:
    async with asyncio.timeout(10):  # reading the body would wait on it forever
        return await api.client.post(path, content=body, headers={
            "Content-Type": "application/json", "Content-Length": str(length), **headers})


async def test_a_huge_dial_with_an_unknown_token_is_answered_401_without_reading_its_body(api: Api) -> None:
    body = Body()
    r = await _post(api, "/v1/dials", body, 200 * 1024 * 1024, {"Authorization": "Bearer dg_not-a-token"})
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["connection"] == "close"
    assert body.pulled == 0


async def test_an_import_with_no_token_is_answered_401_without_reading_its_body(api: Api) -> None:
    body = Body()
    r = await _post(api, "/v1/cases:import", body, 300 * 1024 * 1024, {})
    assert r.status_code == 401
    assert body.pulled == 0


async def test_a_dial_declaring_more_than_the_json_limit_is_413_naming_the_limit_unread(api: Api) -> None:
    body = Body()
    r = await _post(api, "/v1/dials", body, JSON_BODY_LIMIT + 1, api.auth("col-a"))
    assert r.status_code == 413
    problem = r.json()
    assert problem["type"].endswith("/body-too-large")
    assert problem["details"]["limit_bytes"] == JSON_BODY_LIMIT
    assert str(JSON_BODY_LIMIT) in problem["detail"]
    assert body.pulled == 0


async def test_an_import_declaring_more_than_the_import_limit_is_413_unread(api: Api) -> None:
    body = Body()
    r = await _post(api, "/v1/cases:import", body, IMPORT_BODY_LIMIT + 1, api.auth("data-a"))
    assert r.status_code == 413
    assert r.json()["details"]["limit_bytes"] == IMPORT_BODY_LIMIT
    assert body.pulled == 0


async def test_an_import_under_the_import_limit_but_over_the_json_limit_is_read(api: Api) -> None:
    doc = {"cases": [], "padding": "x" * (JSON_BODY_LIMIT * 2)}
    r = await api.post("/v1/cases:import", "data-a", doc)
    assert r.status_code in (400, 422), r.text  # refused for its content, not its size


async def _chunks(total: int, size: int = 16 * 1024) -> AsyncIterator[bytes]:
    yield b'{"case_id": "C-1", "number": "13800000001", "agent_id": "col-a", "creditor": "'
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}'


async def test_a_chunked_dial_that_passes_the_limit_is_cut_at_it_with_413_and_nothing_is_written(api: Api) -> None:
    before = await api.snapshot()
    r = await api.client.post("/v1/dials", content=_chunks(JSON_BODY_LIMIT * 4),
                              headers={**api.auth("col-a"), "Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.json()["details"]["limit_bytes"] == JSON_BODY_LIMIT
    assert await api.snapshot() == before


async def test_a_chunked_dial_check_that_passes_the_limit_is_413_not_a_parse_error(api: Api) -> None:
    before = await api.snapshot()
    r = await api.client.post("/v1/dial-checks", content=_chunks(JSON_BODY_LIMIT * 4),
                              headers={**api.auth("comp-a"), "Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert await api.snapshot() == before


async def test_a_content_length_of_thousands_of_digits_is_a_400_naming_the_header(api: Api) -> None:
    app = api.client._transport.app  # type: ignore[attr-defined]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body must not be read")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/dials", "raw_path": b"/v1/dials", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"gate"), (b"content-type", b"application/json"), (b"content-length", b"9" * 5000),
                         (b"authorization", api.auth("col-a")["Authorization"].encode())],
             "client": ("127.0.0.1", 1), "server": ("gate", 80), "state": {}}
    await app(scope, receive, send)
    assert sent[0]["status"] == 400
    problem = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert problem["details"]["field"] == "Content-Length"


async def test_a_refused_token_is_logged_as_auth_refused_with_the_client_and_the_request_id(api: Api, capsys) -> None:  # type: ignore[no-untyped-def]
    configure_logging("info", json=True)
    try:
        r = await api.client.get("/v1/cases/C-1", headers={"Authorization": "Bearer dg_wrong", "X-Request-Id": "probe-401"})
        err = capsys.readouterr().err
    finally:
        structlog.contextvars.clear_contextvars()
    assert r.status_code == 401
    refused = [e for e in (json.loads(line) for line in err.splitlines() if line.startswith("{"))
               if e.get("event") == "auth.refused"]
    assert len(refused) == 1, err
    assert (refused[0]["client"], refused[0]["request_id"], refused[0]["level"]) == ("127.0.0.1", "probe-401", "warning")
    assert "dg_wrong" not in err


async def test_a_client_refused_twenty_times_in_a_minute_gets_429_even_with_a_good_token_and_others_do_not(api: Api) -> None:
    limiter = api.svc.auth.limiter
    for _ in range(limiter.limit):
        r = await api.client.get("/v1/cases/C-1", headers={"Authorization": "Bearer dg_guess"})
        assert r.status_code == 401
    r = await api.get("/v1/cases/C-1", "col-a")
    assert r.status_code == 429
    assert r.json()["type"].endswith("/too-many-requests")
    assert 1 <= int(r.headers["retry-after"]) <= 60
    other = httpx.ASGITransport(app=api.client._transport.app, client=("10.9.8.7", 4000))  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=other, base_url="http://gate") as c:
        r = await c.get("/v1/cases/C-1", headers=api.auth("col-a"))
    assert r.status_code == 200


async def test_a_recording_upload_with_an_unknown_token_is_401_without_reading_the_audio(api: Api) -> None:
    body = Body(b"RIFF")
    async with asyncio.timeout(10):
        r = await api.client.post("/v1/recordings", params={"call_id": "c-1", "started_at": "2026-11-24T10:00:00+08:00"},
                                  content=body, headers={"Authorization": "Bearer dg_wrong", "Content-Type": "audio/wav",
                                                         "Content-Length": str(500 * 1024 * 1024)})
    assert r.status_code == 401
    assert body.pulled == 0


async def test_a_recording_upload_declaring_more_than_the_vaults_limit_is_refused_unread(api: Api) -> None:
    body = Body(b"RIFF")
    async with asyncio.timeout(10):
        r = await api.client.post("/v1/recordings", params={"call_id": "c-2", "started_at": "2026-11-24T10:00:00+08:00"},
                                  content=body, headers={**api.auth("pbx"), "Content-Type": "audio/wav",
                                                         "Content-Length": str(api.svc.vault.max_size + 1)})
    assert r.status_code == 413
    assert r.json()["type"].endswith("/recording-too-large")
    assert body.pulled == 0
