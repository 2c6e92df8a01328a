"""Helpers shared by the console's unit tests."""

from __future__ import annotations

import re

import httpx

from dialer.console.sample import TOKENS


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "page has no CSRF field"
    return m.group(1)


async def sign_in(client: httpx.AsyncClient, who: str, next_url: str = "/console/") -> httpx.Response:
    page = await client.get("/console/sign-in")
    return await client.post(
        "/console/sign-in", data={"csrf": csrf_of(page.text), "token": TOKENS[who], "next": next_url}
    )
