from __future__ import annotations

import pytest

from adapters.mqtt.config import load_mqtt_config
from adapters.mqtt.errors import MqttConfigError


def test_mqtt_is_off_without_a_table_or_without_a_url():
    assert load_mqtt_config(None) is None
    assert load_mqtt_config({}) is None
    assert load_mqtt_config({"url": "", "client_id": "gw-1"}) is None


def test_a_plain_url_gives_host_port_and_the_defaults():
    cfg = load_mqtt_config({"url": "mqtt://127.0.0.1:1884", "client_id": "gw-1"})
    assert (cfg.host, cfg.port, cfg.tls, cfg.client_id) == ("127.0.0.1", 1884, False, "gw-1")
    assert cfg.protocol == "5" and cfg.session_expiry_s > 0


def test_mqtts_defaults_to_port_8883_and_takes_the_user_from_the_url():
    cfg = load_mqtt_config(
        {"url": "mqtts://gate%40east@broker.example", "password_env": "MQ_PW"},
        environ={"MQ_PW": "s3cret-pw"},
    )
    assert (cfg.port, cfg.tls, cfg.username, cfg.password) == (8883, True, "gate@east", "s3cret-pw")
    assert "s3cret-pw" not in repr(cfg) and "s3cret-pw" not in cfg.display_url


def test_a_password_written_in_the_url_is_refused_naming_the_key():
    with pytest.raises(MqttConfigError) as err:
        load_mqtt_config({"url": "mqtt://gate:hunter2@broker:1883"})
    assert err.value.path == "mqtt.url"
    assert "hunter2" not in str(err.value)


def test_an_inline_password_key_is_refused_pointing_to_env_or_file():
    with pytest.raises(MqttConfigError, match="password_env") as err:
        load_mqtt_config({"url": "mqtt://gate@broker", "password": "hunter2"})
    assert err.value.path == "mqtt.password"


def test_the_password_is_read_from_a_file_without_its_trailing_newline(tmp_path):
    secret = tmp_path / "mqtt.pw"
    secret.write_text("from-file-pw\n")
    cfg = load_mqtt_config(
        {"url": "mqtt://broker", "username": "gate", "password_file": str(secret)}
    )
    assert cfg.password == "from-file-pw"


def test_a_missing_password_variable_is_named_without_revealing_anything():
    with pytest.raises(MqttConfigError, match="DIALGATE_MQTT_PW is not set") as err:
        load_mqtt_config(
            {"url": "mqtt://gate@broker", "password_env": "DIALGATE_MQTT_PW"}, environ={}
        )
    assert err.value.path == "mqtt.password_env"


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"url": "http://broker"}, "mqtt.url"),
        ({"url": "mqtt://broker/some/path"}, "mqtt.url"),
        ({"url": "mqtt://"}, "mqtt.url"),
        ({"url": "mqtt://broker:99999"}, "mqtt.url"),
        ({"url": "mqtt://broker", "keepalive": "30"}, "mqtt.keepalive"),
        ({"url": "mqtt://broker", "keepalive": 1}, "mqtt.keepalive"),
        ({"url": "mqtt://broker", "protocol": "4"}, "mqtt.protocol"),
        ({"url": "mqtt://broker", "client_id": "a/b"}, "mqtt.client_id"),
        ({"url": "mqtt://broker", "reconnect_min": 5, "reconnect_max": 1}, "mqtt.reconnect_max"),
        ({"url": "mqtt://broker", "tls_insecure": "yes"}, "mqtt.tls_insecure"),
        ({"url": "mqtt://broker", "ca_file": "/nonexistent/ca.pem"}, "mqtt.ca_file"),
        ({"url": "mqtt://broker", "batchsize": 10}, "mqtt.batchsize"),
        ({"url": "mqtt://a@broker", "username": "b"}, "mqtt.username"),
    ],
)
def test_each_wrong_setting_is_refused_with_its_key_path(raw, path):
    with pytest.raises(MqttConfigError) as err:
        load_mqtt_config(raw, environ={})
    assert err.value.path == path
    assert str(err.value).startswith(path + ": ")


def test_a_typo_is_refused_even_while_mqtt_is_off():
    with pytest.raises(MqttConfigError) as err:
        load_mqtt_config({"client_idd": "gw-1"})
    assert err.value.path == "mqtt.client_idd"


def test_v311_is_accepted_for_older_brokers():
    assert load_mqtt_config({"url": "mqtt://b", "protocol": "3.1.1"}).protocol == "3.1.1"


def test_the_environment_can_switch_mqtt_on_and_set_any_key():
    cfg = load_mqtt_config(
        {"client_id": "from-file"},
        environ={"DIALGATE_MQTT_URL": "mqtt://broker.internal:1884", "DIALGATE_MQTT_KEEPALIVE": "45",
                 "DIALGATE_MQTT_TLS_INSECURE": "false"},
    )  # fmt: skip
    assert (cfg.host, cfg.port, cfg.keepalive_s, cfg.client_id) == ("broker.internal", 1884, 45, "from-file")


def test_a_bad_environment_value_names_the_variable():
    with pytest.raises(MqttConfigError, match="DIALGATE_MQTT_KEEPALIVE") as err:
        load_mqtt_config({"url": "mqtt://b"}, environ={"DIALGATE_MQTT_KEEPALIVE": "soon"})
    assert err.value.path == "mqtt.keepalive"
