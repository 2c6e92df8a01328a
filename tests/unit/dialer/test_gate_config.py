"""config.toml loading: defaults, strict keys with their paths, env overrides, raw sections."""

from __future__ import annotations

from pathlib import Path

import pytest

from dialer.config import build_config, load_config, read_secret
from dialer.errors import ConfigError


def test_defaults_put_the_sqlite_database_in_the_data_dir() -> None:
    cfg = build_config({})
    assert cfg.store.url == "sqlite+aiosqlite:///var/dialgate.db"
    assert cfg.http.port == 8080
    assert cfg.store.is_sqlite and not cfg.store.is_postgres


def test_an_unknown_key_is_refused_with_its_path() -> None:
    with pytest.raises(ConfigError, match=r"store\.ur: unknown key"):
        build_config({"store": {"ur": "x"}})


def test_an_unknown_section_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"\[stroe\]: unknown section"):
        build_config({"stroe": {}})


def test_a_wrong_type_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"http\.port: expected an integer"):
        build_config({"http": {"port": "80"}})


def test_an_unsupported_store_url_is_refused() -> None:
    with pytest.raises(ConfigError, match="store.url"):
        build_config({"store": {"url": "mysql://x"}})


def test_environment_overrides_the_file_and_is_typed() -> None:
    cfg = build_config({"http": {"port": 9000}}, env={"DIALGATE_HTTP_PORT": "9100", "DIALGATE_LOG_JSON": "false"})
    assert cfg.http.port == 9100
    assert cfg.log.json is False


def test_a_malformed_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="DIALGATE_HTTP_PORT"):
        build_config({}, env={"DIALGATE_HTTP_PORT": "eighty"})


def test_a_policy_setting_in_the_environment_is_refused_rather_than_silently_ignored() -> None:
    # config.toml says the environment overrides keys as DIALGATE_<SECTION>_<KEY>; the
    # policy is read from the file alone, so a holiday rule set this way never applied.
    with pytest.raises(ConfigError) as info:
        build_config({"policy": {"cn_holidays": False}}, env={"DIALGATE_POLICY_CN_HOLIDAYS": "true"})
    assert "DIALGATE_POLICY_CN_HOLIDAYS" in str(info.value)
    assert "config.toml" in str(info.value)


def test_sections_owned_by_other_components_are_kept_raw_and_read_only() -> None:
    cfg = build_config({"mqtt": {"url": "mqtt://localhost", "topics": ["a", "b"]}, "policy": {"cn_holidays": False}})
    assert cfg.section("mqtt")["url"] == "mqtt://localhost"
    assert cfg.section("sip") == {}
    with pytest.raises(TypeError):
        cfg.section("mqtt")["url"] = "x"  # type: ignore[index]
    assert cfg.policy_table == {"cn_holidays": False}


def test_the_file_is_read_and_a_missing_file_is_named(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[store]\nurl = "postgresql+asyncpg://u:p@h/db"\n', encoding="utf-8")
    assert load_config(f, env={}).store.is_postgres
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", env={})
    f.write_text("[store\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(f, env={})


def test_secrets_come_from_a_file_or_the_environment_never_inline(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n", encoding="utf-8")
    assert read_secret({"password_file": str(tmp_path / "pw")}, "password") == "s3cret"
    assert read_secret({"password_env": "PW"}, "password", env={"PW": "x"}) == "x"
    with pytest.raises(ConfigError, match="never|not written"):
        read_secret({"password": "inline"}, "password")


def test_the_shipped_config_toml_loads() -> None:
    cfg = load_config(Path(__file__).resolve().parents[3] / "config.toml", env={})
    assert cfg.gate.attempt_validity_s == 120


def test_the_recorder_check_interval_defaults_to_one_second_and_rejects_nonsense() -> None:
    assert build_config({}).gate.recorder_check_s == 1.0
    assert build_config({"gate": {"recorder_check_s": 0}}).gate.recorder_check_s == 0.0
    for bad in (-1, 3600, "soon"):
        with pytest.raises(ConfigError, match="recorder_check_s"):
            build_config({"gate": {"recorder_check_s": bad}})


@pytest.mark.parametrize("mode", ["OFF", "off", "FAST"])
def test_a_sqlite_synchronous_mode_that_can_lose_allowed_calls_is_refused(mode: str) -> None:
    # OFF hands commits to the OS unsynced: after a power loss the attempts they recorded
    # are gone and the caps count fewer calls than were placed.
    with pytest.raises(ConfigError, match="store.sqlite_synchronous: expected NORMAL, FULL or EXTRA"):
        build_config({"store": {"sqlite_synchronous": mode}})


@pytest.mark.parametrize("mode", ["NORMAL", "FULL", "extra"])
def test_the_documented_sqlite_synchronous_modes_are_accepted(mode: str) -> None:
    assert build_config({"store": {"sqlite_synchronous": mode}}).store.sqlite_synchronous == mode
