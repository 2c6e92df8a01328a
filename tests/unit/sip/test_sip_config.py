"""The [sip] section loader: the documented keys work as written, mistakes name their path."""

from __future__ import annotations

import tomllib

import pytest

from adapters.sip.config import SipConfigError, load_sip_config

DOCUMENTED = """
[sip]
listen = "127.0.0.1:5070"                  # UDP and TCP
route = "sip:{number}@127.0.0.1:5080"      # Contact of a 302 for an allowed call
trusted_peers = ["127.0.0.1", "10.1.2.0/24"] # the PBX/proxy: the only sources answered
[sip.extensions]
"1001" = "a1"                              # calling extension -> agent id
[sip.registered_lines]
bank-a = ["+862161234567", "1001"]         # the creditor's registered caller lines
"""


def test_the_documented_sip_section_loads_as_written():
    cfg = load_sip_config(tomllib.loads(DOCUMENTED)["sip"])
    assert (cfg.host, cfg.port, cfg.listen) == ("127.0.0.1", 5070, "127.0.0.1:5070")
    assert cfg.contact_for("+8613800000001") == "<sip:+8613800000001@127.0.0.1:5080>"
    assert dict(cfg.extensions) == {"1001": "a1"}
    assert dict(cfg.registered_lines) == {"bank-a": frozenset({"+862161234567", "1001"})}
    assert [cfg.trusts(a) for a in ("127.0.0.1", "10.1.2.77", "10.1.3.1", "::ffff:10.1.2.5", "fe80::1%eth0")] == [
        True, True, False, True, False]


def test_an_absent_section_gives_the_defaults():
    cfg = load_sip_config(None)
    assert cfg.listen == "127.0.0.1:5070" and cfg.contact_for("1") == "<sip:1@127.0.0.1:5080>"
    assert cfg.trusts("127.0.0.1") and not cfg.trusts("192.0.2.1")  # loopback only


def test_a_route_in_angle_brackets_and_ipv6_listen_are_accepted():
    cfg = load_sip_config({"listen": "[::1]:5071", "route": "<sips:{number}@carrier.example:5061;transport=tls>",
                           "trusted_peers": ["::1"]})
    assert (cfg.host, cfg.port) == ("::1", 5071)
    assert cfg.contact_for("+861") == "<sips:+861@carrier.example:5061;transport=tls>"


def test_frozen_tuples_from_the_service_config_are_accepted_as_lists():
    cfg = load_sip_config({"registered_lines": {"bank-b": ("+862100000000",)}})
    assert cfg.registered_lines["bank-b"] == frozenset({"+862100000000"})


@pytest.mark.parametrize(
    ("raw", "path", "problem"),
    [
        ({"listen": "127.0.0.1:5070"}, "sip.trusted_peers", "required when sip.listen is set"),
        ({"trusted_peers": []}, "sip.trusted_peers", "non-empty list"),
        ({"trusted_peers": "127.0.0.1"}, "sip.trusted_peers", "non-empty list"),
        ({"trusted_peers": ["127.0.0.1", "10.1.2.3/24"]}, "sip.trusted_peers[1]", "network like"),
        ({"trusted_peers": ["pbx.example"]}, "sip.trusted_peers[0]", "IP address"),
        ({"listen": "5070"}, "sip.listen", "host:port"),
        ({"listen": "127.0.0.1:0"}, "sip.listen", "1-65535"),
        ({"listen": "127.0.0.1:99999"}, "sip.listen", "1-65535"),
        ({"listen": 5070}, "sip.listen", "string"),
        ({"route": "http://x/{number}"}, "sip.route", "sip: or sips:"),
        ({"route": "sip:carrier:5060"}, "sip.route", "{number}"),
        ({"route": "sip:{number}@{host}"}, "sip.route", "only the placeholder"),
        ({"route": "sip:{number} @c"}, "sip.route", "spaces"),
        ({"extensions": {"1001": ""}}, "sip.extensions.1001", "agent id"),
        ({"extensions": ["1001"]}, "sip.extensions", "table"),
        ({"registered_lines": {"bank-a": "+862161234567"}}, "sip.registered_lines.bank-a", "list"),
        ({"registered_lines": {"bank-a": ["+862161234567", 5]}}, "sip.registered_lines.bank-a[1]", "non-empty string"),
        ({"registered_lines": {"Bank-A": ["+862161234567"]}}, "sip.registered_lines.Bank-A", "creditor id"),
        ({"registered_lines": {"bank-a ": ["+862161234567"]}}, "sip.registered_lines.bank-a ", "creditor id"),
        ({"listne": "127.0.0.1:5070"}, "sip.listne", "unknown key"),
        ({"edge": "threads"}, "sip.edge", "'inline', 'process'"),
    ],
)
def test_a_wrong_value_is_refused_with_its_key_path(raw, path, problem):
    with pytest.raises(SipConfigError) as info:
        load_sip_config(raw)
    assert info.value.path == path
    assert problem in str(info.value)
