"""INVITE → SipDialInput and SipDialAnswer → SIP answer, and the transaction keys."""

from __future__ import annotations

import pytest

from adapters.sip.gate import (
    SipDialAnswer,
    answer_headers,
    ascii_quoted,
    dial_input_from_invite,
    mask_number,
    normalize_number,
)
from adapters.sip.message import SipParseError, parse_message
from adapters.sip.server import best_effort_error_response, build_response
from adapters.sip.transaction import transaction_key


def invite(ruri: str = "sip:013800000001@gate", *, extra: str = "", from_user: str = "1001", via: str = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-k1", from_tag: str = "ft") -> bytes:
    return (
        f"INVITE {ruri} SIP/2.0\r\nVia: {via}\r\nFrom: <sip:{from_user}@pbx>;tag={from_tag}\r\n"
        f"To: <{ruri}>\r\nCall-ID: c1@pbx\r\nCSeq: 7 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:{from_user}@pbx>\r\n"
        f"{extra}Content-Length: 0\r\n\r\n"
    ).encode()


def test_the_dialed_number_is_normalised_to_e164_and_the_extension_mapped_to_an_agent():
    d = dial_input_from_invite(parse_message(invite()), {"1001": "a1"})
    assert (d.number, d.dialed, d.extension, d.agent_id, d.caller_line) == ("+8613800000001", "013800000001", "1001", "a1", "1001")


def test_x_agent_id_wins_over_the_extension_map_and_pai_over_the_from_user():
    extra = "X-Agent-ID: a7\r\nP-Asserted-Identity: \"Line\" <tel:+86-21-6123-4567>\r\n"
    d = dial_input_from_invite(parse_message(invite(extra=extra)), {"1001": "a1"})
    assert d.agent_id == "a7" and d.caller_line == "+862161234567"


def test_a_tel_request_uri_and_user_params_give_the_number():
    d = dial_input_from_invite(parse_message(invite("tel:+8613800000002;phone-context=+86")), {})
    assert d.number == "+8613800000002"
    d = dial_input_from_invite(parse_message(invite("sip:+8613800000003;npdi@gw;user=phone")), {})
    assert d.number == "+8613800000003"


def test_an_invite_without_a_user_part_is_refused_484_and_an_unknown_scheme_416():
    with pytest.raises(SipParseError) as info:
        dial_input_from_invite(parse_message(invite("sip:gw.example")), {})
    assert info.value.status == 484
    with pytest.raises(SipParseError) as info:
        dial_input_from_invite(parse_message(invite("urn:service:sos")), {})
    assert info.value.status == 416


def test_an_unprintable_x_case_id_is_a_parse_error():
    with pytest.raises(SipParseError, match="x-case-id"):
        dial_input_from_invite(parse_message(invite(extra="X-Case-ID: C\u00e91\r\n")), {})


def test_an_allowed_answer_is_a_302_with_contact_and_attempt():
    status, reason, headers = answer_headers(SipDialAnswer(True, "allow", "ok", attempt_id="att-1"), "<sip:+861@c>")
    assert (status, reason) == (302, "Moved Temporarily")
    assert headers == [("Contact", "<sip:+861@c>"), ("X-DialGate-Attempt", "att-1")]


def test_a_blocked_answer_is_a_603_with_ascii_safe_reason_warning_and_retry_after():
    answer = SipDialAnswer(False, "window.outside_hours", 'Outside "hours" — 21:00-08:00 (夜间)', retry_after=3600)
    status, _, headers = answer_headers(answer, None)
    assert status == 603
    assert dict(headers) == {
        "Reason": 'SIP;cause=603;text="window.outside_hours"',
        "Warning": '399 dialgate "Outside \\"hours\\" 21:00-08:00 ( )"',
        "Retry-After": "3600",
    }
    assert all(v.isascii() for _, v in headers)


def test_ascii_quoting_drops_control_characters_and_escapes_quotes():
    assert ascii_quoted('a\r\nb"c\\d') == 'a b\\"c\\\\d'


def test_numbers_are_masked_for_logs():
    assert mask_number("+8613800000001") == "138****0001"  # the service-wide rule
    assert mask_number("1001") == "****"


def test_normalisation_keeps_what_is_not_a_phone_number():
    assert normalize_number("1001") == "1001"
    assert normalize_number("user") == "user"
    assert normalize_number("0086 138 0000 0001") == "+8613800000001"


def test_transaction_keys_use_the_branch_or_fall_back_to_rfc2543_fields():
    m = parse_message(invite())
    assert transaction_key(m) == ("3261", "z9hG4bK-k1", "10.0.0.1:5060", "INVITE", "sip:013800000001@gate")
    assert transaction_key(m, "INVITE") == transaction_key(m)
    old = parse_message(invite(via="SIP/2.0/UDP 10.0.0.1;branch=1234"))
    other_tag = parse_message(invite(via="SIP/2.0/UDP 10.0.0.1;branch=1234", from_tag="zz"))
    assert transaction_key(old)[0] == "2543"
    assert transaction_key(old) != transaction_key(other_tag)


def test_a_reused_branch_with_another_request_uri_is_another_transaction():
    first = parse_message(invite("sip:013800000001@gate"))
    other = parse_message(invite("sip:013800000002@gate"))
    assert transaction_key(first) != transaction_key(other)
    old = parse_message(invite("sip:013800000001@gate", via="SIP/2.0/UDP 10.0.0.1;branch=1234"))
    old_other = parse_message(invite("sip:013800000002@gate", via="SIP/2.0/UDP 10.0.0.1;branch=1234"))
    assert transaction_key(old) != transaction_key(old_other)


@pytest.mark.parametrize(
    "user",
    [
        "ABC13910000045",  # letters (hex digits of RFC 3966's local numbers, but not a number we route)
        "%0013800000001",  # NUL
        "13800000001%7F",  # DEL
        "1380000%E2%80%8B0001",  # a zero-width space
        "%EF%BC%91%EF%BC%93%EF%BC%98%EF%BC%90%EF%BC%90%EF%BC%90%EF%BC%90%EF%BC%90%EF%BC%90%EF%BC%90%EF%BC%91",  # full-width
        "138%2000000001",  # a space
        "13800000001ext5",
        "%01" * 40,  # control characters
        "1" * 33,  # longer than any dial string
        "+-().",  # separators without a digit
        "138+00000001",  # '+' not leading
        "*6913800000001",
    ],
)
def test_a_dialed_user_part_that_is_not_a_dial_string_is_refused_484(user):
    with pytest.raises(SipParseError, match="not a dial string") as info:
        dial_input_from_invite(parse_message(invite(f"sip:{user}@gate")), {})
    assert info.value.status == 484


@pytest.mark.parametrize(
    "user, number",
    [("+86-138-0000-0001", "+8613800000001"), ("(010)6123.4567", "+861061234567"), ("013800000001", "+8613800000001")],
)
def test_visual_separators_are_a_dial_string_and_normalise_away(user, number):
    assert dial_input_from_invite(parse_message(invite(f"sip:{user}@gate")), {}).number == number


def test_a_from_user_with_control_characters_or_too_long_is_refused_400():
    for user in ("10%0101", "1" * 129):
        with pytest.raises(SipParseError, match="From user part") as info:
            dial_input_from_invite(parse_message(invite(from_user=user)), {})
        assert info.value.status == 400


def test_a_response_mirrors_via_from_call_id_cseq_and_adds_a_to_tag_once():
    m = parse_message(invite(via="SIP/2.0/UDP pbx.example;branch=z9hG4bK-a;rport, SIP/2.0/UDP b;branch=z9hG4bK-b"))
    resp = build_response(m, 302, ("10.0.0.9", 5099), "tag1")
    back = parse_message(resp.to_bytes())
    vias = back.vias
    assert vias[0].params == {"branch": "z9hG4bK-a", "rport": "5099", "received": "10.0.0.9"}
    assert vias[1].host == "b"
    assert (back.get("from"), back.call_id, back.get("cseq")) == (m.get("from"), "c1@pbx", "7 INVITE")
    assert back.to.tag == "tag1"


def test_an_unparseable_request_with_readable_headers_gets_a_400_with_the_reason():
    data = invite().replace(b"Content-Length: 0", b"Content-Length: 7")
    try:
        parse_message(data)
    except SipParseError as exc:
        resp = best_effort_error_response(data, exc, ("10.0.0.1", 5060))
    assert resp is not None and resp.status == 400
    assert "Content-Length" in (resp.get("warning") or "")


@pytest.mark.parametrize(
    "data",
    [
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n\r\n",  # a response: never answered
        b"ACK sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: x\r\nCSeq: 1 ACK\r\nContent-Length: 9\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 9\r\n\r\n",  # no From/To
        b"\xff\xfe garbage\r\n\r\n",
    ],
)
def test_unanswerable_garbage_is_dropped(data):
    assert best_effort_error_response(data, SipParseError("x"), ("10.0.0.1", 5060)) is None


async def test_the_service_extension_starts_nothing_without_sip_listen():
    from types import SimpleNamespace

    from adapters.sip.service import open_sip_gate

    services = SimpleNamespace(config=SimpleNamespace(section=lambda name: {}, source="<test>"), gate=None)
    async with open_sip_gate(services) as server:
        assert server is None


async def test_a_bad_sip_section_stops_the_service_with_the_key_path():
    from types import SimpleNamespace

    from adapters.sip.service import open_sip_gate
    from dialer.errors import ConfigError

    services = SimpleNamespace(
        config=SimpleNamespace(section=lambda name: {"listen": "127.0.0.1:5070", "route": "sip:nothing",
                                                     "trusted_peers": ["127.0.0.1"]}, source="cfg.toml"),
        gate=None,
    )
    with pytest.raises(ConfigError, match=r"cfg.toml: sip.route"):
        async with open_sip_gate(services):
            pass


async def test_gating_on_without_trusted_peers_stops_the_service_naming_the_key():
    from types import SimpleNamespace

    from adapters.sip.service import open_sip_gate
    from dialer.errors import ConfigError

    services = SimpleNamespace(config=SimpleNamespace(section=lambda name: {"listen": "127.0.0.1:5070"}, source="cfg.toml"),
                               gate=None)
    with pytest.raises(ConfigError, match=r"cfg.toml: sip.trusted_peers: required when sip.listen is set"):
        async with open_sip_gate(services):
            pass


def test_mainland_mobile_numbers_normalise_exactly_as_libphonenumber_says_for_every_prefix():
    import random

    import phonenumbers

    rnd = random.Random(7)
    for prefix in range(100, 200):
        for _ in range(20):
            dialed = f"{prefix}{rnd.randrange(10**8):08d}"
            try:
                parsed = phonenumbers.parse(dialed, "CN")
                expected = (
                    phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
                    if phonenumbers.is_possible_number(parsed)
                    else dialed
                )
            except phonenumbers.NumberParseException:
                expected = dialed
            assert normalize_number.__wrapped__(dialed) == expected, dialed


@pytest.mark.parametrize("header", ["Max-Forwards: 70\r\n", "Contact: <sip:1001@pbx>\r\n"])
def test_an_invite_without_max_forwards_or_contact_is_refused_400_and_never_decided(header):
    data = invite().replace(header.encode(), b"")
    with pytest.raises(SipParseError, match=header.split(":")[0] + " header is missing") as info:
        dial_input_from_invite(parse_message(data), {})
    assert info.value.status == 400
