"""The console's health strip on a running gate reports the optional components that
run: the SIP gate listening (`[sip] listen`) and the MQTT bus connected to a real
Mosquitto (`[mqtt] url`), and "not enabled" only for what is not configured.
"""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from dialer.app import build_app
from dialer.auth import add_user
from dialer.clock import FixedClock
from dialer.config import build_config
from tests.conftest import require_service
from tests.integration.mqtt.broker import MOSQUITTO, MosquittoBroker
from tests.support.net import free_port

pytestmark = pytest.mark.mosquitto


@pytest.fixture
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    require_service("mosquitto", MOSQUITTO.exists(), "apt-get install mosquitto (scripts/setup.sh --services)")
    b = MosquittoBroker(tmp_path_factory.mktemp("mosquitto"), free_port())
    b.start()
    yield b
    b.stop()


def strip(page: str) -> dict[str, tuple[str, str]]:
    """component → (status class, detail) from the strip's <li> items."""
    items = re.findall(r'<li class="h-(\w+)"\s*(?:title="([^"]*)")?\s*data-component="(\w+)">', page)
    return {component: (status, html.unescape(detail)) for status, detail, component in items}


async def console_strip(app: Any, token: str) -> dict[str, tuple[str, str]]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gate", timeout=30) as c:
        page = await c.get("/console/sign-in")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        r = await c.post("/console/sign-in", data={"csrf": csrf, "token": token})
        assert r.status_code == 303, r.text
        r = await c.get("/console/")
        assert r.status_code == 200, r.text
        return strip(r.text)


@pytest.fixture
async def running(tmp_path: Path, broker: MosquittoBroker) -> AsyncIterator[tuple[Any, str, int]]:
    sip_port = free_port()
    cfg = build_config({
        "paths": {"data_dir": str(tmp_path)},
        "sip": {"listen": f"127.0.0.1:{sip_port}", "trusted_peers": ["127.0.0.1"]},
        "mqtt": {"url": broker.url, "client_id": f"dialgate-health-{uuid.uuid4().hex[:8]}"},
    })
    clock = FixedClock(datetime(2026, 11, 24, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai")))
    app = build_app(cfg, clock=clock)
    async with app.router.lifespan_context(app):
        svc = app.state.services
        assert await svc.mqtt.connection.wait_connected(15), "the gate never connected to Mosquitto"
        _, token = await add_user(svc.store, clock, "comp-a", "compliance", frozenset({"bank-a"}))
        yield app, token, sip_port


async def test_the_health_strip_shows_the_sip_gate_listening_and_mqtt_connected(running: Any) -> None:
    app, token, sip_port = running
    items = await console_strip(app, token)
    sip_status, sip_detail = items["sip"]
    assert sip_status == "ok", items["sip"]
    assert "listening" in sip_detail and f":{sip_port}" in sip_detail
    assert items["mqtt"] == ("ok", "connected")
    assert items["leader"] == ("ok", "this instance leads; store primary")  # a lone instance on SQLite


async def test_the_health_strip_shows_mqtt_down_while_the_broker_is_away(running: Any, broker: MosquittoBroker) -> None:
    app, token, _ = running
    svc = app.state.services
    broker.stop()
    assert await svc.mqtt.connection.wait_health(lambda h: not h["ok"], 15)
    items = await console_strip(app, token)
    assert items["mqtt"][0] == "down"
    assert items["sip"][0] == "ok"


async def test_components_not_configured_show_as_not_enabled(tmp_path: Path) -> None:
    cfg = build_config({"paths": {"data_dir": str(tmp_path)}})
    clock = FixedClock(datetime(2026, 11, 24, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai")))
    app = build_app(cfg, clock=clock)
    async with app.router.lifespan_context(app):
        _, token = await add_user(app.state.services.store, clock, "comp-a", "compliance", frozenset({"bank-a"}))
        items = await console_strip(app, token)
    assert items["sip"] == ("off", "not enabled")
    assert items["mqtt"] == ("off", "not enabled")
