"""/readyz reports a missing PRC holiday arrangement (reported, not gating)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from dialer.app import build_app
from dialer.auth import add_user
from dialer.clock import FixedClock
from dialer.config import build_config

SH = ZoneInfo("Asia/Shanghai")


async def _ready(tmp_path: Any, policy: dict[str, Any], now: datetime) -> tuple[int, dict[str, Any]]:
    cfg = build_config({"paths": {"data_dir": str(tmp_path)}, "policy": policy})
    clock = FixedClock(now)
    app = build_app(cfg, clock=clock)
    async with app.router.lifespan_context(app):
        _, token = await add_user(app.state.services.store, clock, "probe", "admin", frozenset())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gate") as client:
            r = await client.get("/readyz", headers={"Authorization": f"Bearer {token}"})
    return r.status_code, r.json()


@pytest.mark.parametrize(
    ("now", "status", "missing"),
    [
        (datetime(2026, 12, 7, 10, 0, tzinfo=SH), "missing", [2027]),  # 25 days before 2027
        (datetime(2026, 11, 7, 10, 0, tzinfo=SH), "ok", None),  # 55 days before: lint warns, /readyz not yet
    ],
)
async def test_readyz_names_the_year_whose_holiday_arrangement_is_missing(tmp_path: Any, now, status, missing) -> None:
    code, body = await _ready(tmp_path, {"creditors": {"bank-a": {"cn_holidays": True}}}, now)
    assert code == 200 and body["status"] == "ready"
    assert body["holidays"]["status"] == status and body["holidays"].get("missing") == missing
    assert body["holidays"]["arranged_until"] == 2026
    if missing:
        assert "2027" in body["holidays"]["detail"] and "2027" in body["holidays"]["detail_zh"]


async def test_readyz_says_nothing_about_holidays_when_no_creditor_uses_them(tmp_path: Any) -> None:
    code, body = await _ready(tmp_path, {}, datetime(2026, 12, 7, 10, 0, tzinfo=SH))
    assert code == 200 and "holidays" not in body
