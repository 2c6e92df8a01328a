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
