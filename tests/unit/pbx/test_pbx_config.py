"""`[pbx]` parsing: defaults, the sip_ua account, secrets by reference only, paths in errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.pbx.config import PbxConfigError, parse_pbx_config

UA = {"server": "10.0.0.5:5060", "username": "dialgate", "local": "10.0.0.9:5062", "rtp_ports": "30000-30099"}


def test_without_a_pbx_table_click_to_dial_is_authorise_then_dial() -> None:
    cfg = parse_pbx_config({})
    assert cfg.mode == "none" and cfg.ua is None and cfg.max_bridged_calls == 6


def test_sip_ua_reads_the_account_and_the_password_from_the_environment() -> None:
    cfg = parse_pbx_config({"mode": "sip_ua", "sip_ua": {**UA, "password_env": "PBX_PW"}}, environ={"PBX_PW": "s3cret"})
    assert cfg.ua is not None
    assert (cfg.ua.server, cfg.ua.port, cfg.ua.local_ip, cfg.ua.local_port) == ("10.0.0.5", 5060, "10.0.0.9", 5062)
    assert (cfg.ua.rtp_port_low, cfg.ua.rtp_port_high, cfg.ua.password) == (30000, 30099, "s3cret")
    assert "s3cret" not in repr(cfg)


def test_the_password_may_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "pbx.pw"
    secret.write_text("from-file\n")
    cfg = parse_pbx_config({"mode": "sip_ua", "sip_ua": {**UA, "password_file": str(secret)}})
    assert cfg.ua is not None and cfg.ua.password == "from-file"


def test_agent_extensions_default_to_the_sip_gates_table_inverted_and_can_be_overridden() -> None:
    cfg = parse_pbx_config({"extensions": {"a2": "2002"}}, sip={"extensions": {"1001": "a1", "1002": "a2"}})
    assert dict(cfg.extensions) == {"a1": "1001", "a2": "2002"}


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"mode": "asterisk-ami"}, "pbx.mode"),
        ({"max_bridged_calls": 0}, "pbx.max_bridged_calls"),
        ({"agent_ring_timeout": "30"}, "pbx.agent_ring_timeout"),
        ({"moed": "sip_ua"}, "unknown key(s) moed"),
        ({"mode": "sip_ua"}, "pbx.sip_ua: required"),
        ({"mode": "sip_ua", "sip_ua": {**UA, "password": "inline"}}, "pbx.sip_ua.password: never inline"),
        ({"mode": "sip_ua", "sip_ua": {**UA, "server": "pbx"}}, "pbx.sip_ua.server"),
        ({"mode": "sip_ua", "sip_ua": {**UA, "rtp_ports": "99-10"}}, "pbx.sip_ua.rtp_ports"),
        ({"mode": "sip_ua", "sip_ua": {**UA, "password_env": "NOPE_NOT_SET"}}, "NOPE_NOT_SET is not set"),
    ],
)
def test_a_wrong_key_or_value_is_refused_naming_its_path(raw: dict, path: str) -> None:
    with pytest.raises(PbxConfigError, match=path.replace("(", r"\(").replace(")", r"\)")):
        parse_pbx_config(raw, environ={})
