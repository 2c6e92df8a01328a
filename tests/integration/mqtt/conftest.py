"""A real Mosquitto per test session, on a free loopback port, with persistence on.

The broker can be stopped and started again on the same port and data directory
(`broker.stop()`, `broker.start()`), so a restart keeps every persistent session and
its queued messages, as Debian's packaged broker would.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import require_service
from tests.integration.mqtt.broker import MOSQUITTO, MosquittoBroker
from tests.support.net import free_port


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    require_service(
        "mosquitto", MOSQUITTO.exists(), "apt-get install mosquitto (scripts/setup.sh --services)"
    )
    broker = MosquittoBroker(tmp_path_factory.mktemp("mosquitto"), free_port())
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def broker(mosquitto: MosquittoBroker) -> Iterator[MosquittoBroker]:
    """The session broker, guaranteed running before and after each test."""
    if not mosquitto.running:
        mosquitto.start()
    yield mosquitto
    if not mosquitto.running:
        mosquitto.start()


@pytest.fixture
def client_id() -> str:
    """A client id of its own for each test, so persistent sessions never mix."""
    return f"dialgate-test-{uuid.uuid4().hex[:12]}"
