"""Console unit-test fixtures: the console router over the in-memory port and sample data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, datetime
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI

from dialer.console import ConsoleSettings, console_router
from dialer.console.memory import InMemoryConsoleQueries
from dialer.console.sample import seed

TZ = ZoneInfo("Asia/Shanghai")
TODAY = date(2026, 11, 20)
NOW = datetime(2026, 11, 20, 15, 0, tzinfo=TZ)


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW.timestamp())


@pytest.fixture
def queries() -> InMemoryConsoleQueries:
    return seed(InMemoryConsoleQueries(now=lambda: NOW), TODAY)


@pytest.fixture
def app(queries: InMemoryConsoleQueries, clock: Clock) -> FastAPI:
    app = FastAPI()
    app.include_router(console_router(queries, ConsoleSettings(secret=b"k" * 32, now=clock, page_size=20)))
    return app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console.test") as c:
        yield c
