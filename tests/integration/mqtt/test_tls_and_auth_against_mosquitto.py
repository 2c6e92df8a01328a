"""mqtts:// with a CA file, and username + password (from a file or the environment)
against a real Mosquitto that requires both: the settings in `[mqtt]` really connect,
and a wrong password keeps the adapter retrying (never connected, never crashing)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from adapters.mqtt.bus import MqttEventBus
from adapters.mqtt.config import load_mqtt_config
from tests.support.outbox import InMemoryOutboxSource
from tests.conftest import require_service
from tests.integration.mqtt.broker import MOSQUITTO, MosquittoBroker
from tests.support.net import free_port

pytestmark = pytest.mark.mosquitto
PASSWD = Path("/usr/bin/mosquitto_passwd")


def _cert(subject: str, key, issuer_name, issuer_key, *, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key or key, hashes.SHA256())


class SecureBroker(MosquittoBroker):
    """Mosquitto with one TLS listener that requires a username and password."""

    def __init__(self, workdir: Path, port: int) -> None:
        super().__init__(workdir, port)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _cert("dialgate test CA", ca_key, None, None, ca=True)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert("localhost", key, ca.subject, ca_key, ca=False)
        self.ca_file = workdir / "ca.pem"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        (workdir / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (workdir / "server.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        passwords = workdir / "passwd"
        passwords.touch()
        subprocess.run(
            [str(PASSWD), "-b", str(passwords), "gate-east", "s3cret-for-tests"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        text = self.config_file.read_text().replace(
            "allow_anonymous true",
            "\n".join(
                [
                    "allow_anonymous false",
                    f"password_file {passwords}",
                    f"cafile {self.ca_file}",
                    f"certfile {workdir / 'server.pem'}",
                    f"keyfile {workdir / 'server.key'}",
                ]
            ),
        )
        self.config_file.write_text(text)
        self.url = f"mqtts://gate-east@127.0.0.1:{port}"


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory) -> Iterator[SecureBroker]:
    require_service("mosquitto", MOSQUITTO.exists() and PASSWD.exists(), "apt-get install mosquitto")
    broker = SecureBroker(tmp_path_factory.mktemp("mosquitto-tls"), free_port())
    broker.start()
    yield broker
    broker.stop()


async def test_mqtts_with_a_ca_file_and_a_password_file_connects_and_publishes(
    secure_broker, client_id, tmp_path
):
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret-for-tests\n")
    config = load_mqtt_config(
        {
            "url": secure_broker.url,
            "client_id": client_id,
            "password_file": str(secret),
            "ca_file": str(secure_broker.ca_file),
        }
    )
    outbox = InMemoryOutboxSource()
    async with MqttEventBus(config, outbox) as bus:
        assert await bus.connection.wait_connected(15)
        outbox.append("case.updated", "bank-a", "C-1", {"status": "active"})
        bus.notify()
        await asyncio.wait_for(outbox.wait_all_sent(), 15)  # PUBACK over TLS
        assert bus.health()["broker"] == f"mqtts://gate-east@127.0.0.1:{secure_broker.port}"
        assert "s3cret" not in str(bus.health())


async def test_a_wrong_password_from_the_environment_keeps_retrying_without_connecting(
    secure_broker, client_id
):
    config = load_mqtt_config(
        {
            "url": f"mqtts://127.0.0.1:{secure_broker.port}",
            "username": "gate-east",
            "password_env": "DIALGATE_TEST_MQTT_PW",
            "ca_file": str(secure_broker.ca_file),
            "client_id": client_id,
            "reconnect_min": 0.05,
            "reconnect_max": 0.2,
        },
        environ={**os.environ, "DIALGATE_TEST_MQTT_PW": "not-the-password"},
    )
    async with MqttEventBus(config, InMemoryOutboxSource()) as bus:
        # Wait for the broker's refusal itself, then for a retry refused too.
        assert await bus.connection.wait_health(lambda h: h["last_error"], 15)
        first = bus.health()
        assert await bus.connection.wait_health(lambda h: h["since"] != first["since"], 15)
        health = bus.health()
    assert health["ok"] is False and health["state"] == "connecting" and health["connects"] == 0
    assert "not authori" in first["last_error"].lower() and "not authori" in health["last_error"].lower()
    assert "not-the-password" not in str(health)
