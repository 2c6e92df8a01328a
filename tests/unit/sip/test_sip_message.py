"""The SIP gate's own RFC 3261 parser: what it accepts, what it refuses and why."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.sip.message import (
    MAX_HEADERS,
    SipParseError,
    SipResponse,
    StreamFramer,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
    serialize,
)


def invite(*, extra: str = "", body: bytes = b"", ruri: str = "sip:+8613800000001@gate.example", cl: bool = True) -> bytes:
    head = (
        f"INVITE {ruri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-abc\r\n"
        "From: \"Agent One\" <sip:1001@pbx.example>;tag=f1\r\n"
        "To: <sip:+8613800000001@gate.example>\r\n"
        "Call-ID: call-1@pbx\r\n"
        "CSeq: 1 INVITE\r\n"
        "Max-Forwards: 70\r\n"
        f"{extra}"
    )
    if cl:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def test_a_plain_invite_parses_into_method_uri_and_headers():
    msg = parse_message(invite())
    assert msg.method == "INVITE"
    assert msg.uri is not None and msg.uri.user == "+8613800000001"
    assert msg.call_id == "call-1@pbx"
    assert msg.cseq == (1, "INVITE")
    assert msg.from_.tag == "f1" and msg.from_.display == "Agent One"
    assert msg.to.tag is None


def test_compact_and_mixed_case_header_names_mean_the_same_header():
    data = (
        b"INVITE sip:100@gw SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n"
        b"f: <sip:1001@pbx>;tag=a\r\n"
        b"T: <sip:100@gw>\r\n"
        b"i: compact@pbx\r\n"
        b"cSeQ: 7 INVITE\r\n"
        b"c: application/sdp\r\n"
        b"l: 4\r\n\r\nv=0\n"
    )
    msg = parse_message(data)
    assert msg.get("Call-ID") == "compact@pbx"
    assert msg.get("content-type") == "application/sdp"
    assert msg.vias[0].branch == "z9hG4bK1"
    assert msg.body == b"v=0\n"


def test_folded_header_lines_are_joined_with_a_single_space():
    msg = parse_message(invite(extra="Subject: first\r\n  second\r\n\tthird\r\n"))
    assert msg.get("subject") == "first second third"


def test_a_header_folded_only_by_a_tab_is_joined_and_a_message_starting_with_a_continuation_is_refused():
    msg = parse_message(invite(extra="Subject: first\r\n\tsecond\r\n"))
    assert msg.get("subject") == "first second"
    with pytest.raises(SipParseError, match="starts with a continuation line"):
        parse_message(b"INVITE sip:1@gate.example SIP/2.0\r\n Via: SIP/2.0/UDP 10.0.0.1\r\n\r\n")


def test_comma_joined_and_repeated_via_values_are_all_kept_in_order():
    extra = "Via: SIP/2.0/TCP b.example;branch=z9hG4bK2, SIP/2.0/UDP c.example:5070;branch=z9hG4bK3\r\n"
    msg = parse_message(invite(extra=extra))
    vias = msg.vias
    assert [v.host for v in vias] == ["10.0.0.1", "b.example", "c.example"]
    assert vias[2].port == 5070 and vias[1].transport == "TCP"


def test_commas_inside_quotes_and_angle_brackets_do_not_split_values():
    extra = 'Contact: "Doe, John" <sip:a@b;x=1,2>;q=0.5, <sip:c@d>\r\n'
    msg = parse_message(invite(extra=extra))
    assert msg.values("contact") == ['"Doe, John" <sip:a@b;x=1,2>;q=0.5', " <sip:c@d>"]


def test_via_with_lws_around_every_separator_is_understood():
    via = parse_via("SIP  /   2.0 / UDP   192.0.2.2 ;  branch  =   z9hG4bK9ikj8 ; rport")
    assert via.transport == "UDP" and via.host == "192.0.2.2"
    assert via.branch == "z9hG4bK9ikj8" and "rport" in via.params


def test_udp_body_without_content_length_is_the_rest_of_the_datagram():
    msg = parse_message(invite(body=b"v=0\r\n", cl=False), "udp")
    assert msg.body == b"v=0\r\n"


def test_udp_bytes_after_content_length_are_ignored():
    msg = parse_message(invite(body=b"v=0\r\n") + b"INVITE junk", "udp")
    assert msg.body == b"v=0\r\n"


@pytest.mark.parametrize(
    ("data", "reason_part"),
    [
        (invite(cl=False), "Content-Length is required over TCP"),
    ],
)
def test_tcp_messages_must_carry_a_content_length(data, reason_part):
    with pytest.raises(SipParseError, match=reason_part):
        parse_message(data, "tcp")


@pytest.mark.parametrize(
    ("data", "reason_part", "status"),
    [
        (b"", "empty message", 400),
        (b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n", "no empty line", 400),
        (invite().replace(b"SIP/2.0\r\nVia", b"SIP/3.0\r\nVia"), "not supported", 505),
        (invite().replace(b"INVITE sip", b"INVITE  sip"), "request line", 400),
        (invite().replace(b"Content-Length: 0", b"Content-Length: -1"), "Content-Length", 400),
        (invite().replace(b"Content-Length: 0", b"Content-Length: 99"), "larger than", 400),
        (invite().replace(b"CSeq: 1 INVITE", b"CSeq: 99999999999999999999 INVITE"), "CSeq number", 400),
        (invite().replace(b"CSeq: 1 INVITE", b"CSeq: 1 OPTIONS"), "does not match", 400),
        (invite().replace(b"Call-ID: call-1@pbx\r\n", b""), "Call-ID header is missing", 400),
        (invite(extra="Call-ID: second@pbx\r\n"), "more than once", 400),
        (invite().replace(b'"Agent One"', b'"Agent One'), "unterminated", 400),
        (invite(extra="NoColonHere\r\n"), "without a colon", 400),
        (invite().replace(b";branch=z9hG4bK-abc", b";branch=z9hG4bK-abc;;,;"), "Via", 400),
        (invite(ruri="<sip:+86138@gw>"), "Request-URI", 400),
        (invite().replace(b"Agent One", "Agent \udcff".encode("utf-8", "surrogateescape")), "UTF-8", 400),
        (invite(extra="X-Bad: a\rb\r\n"), "bare CR", 400),
        (invite(extra="Max-Forwards: 70\r\n"), "more than once", 400),
        (invite(extra="".join(f"X-H{i}: v\r\n" for i in range(MAX_HEADERS + 1))), "header fields", 400),
        (invite(body=b"x" * 70000), "larger than", 413),
        (b"SIP/2.0 4294967301 big\r\nVia: SIP/2.0/UDP h\r\n\r\n", "status code", 400),
    ],
)
def test_malformed_messages_raise_sip_parse_error_with_a_reason(data, reason_part, status):
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert reason_part in info.value.reason
    assert info.value.status == status


def test_a_response_with_an_empty_reason_phrase_parses():
    msg = parse_message(b"SIP/2.0 100 \r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n")
    assert msg.status == 100 and msg.reason == "" and not msg.is_request


def test_uri_user_parts_are_unescaped_once_and_user_params_are_split_off():
    uri = parse_uri("sip:%2B8613800000001;phone-context=pbx@gw.example;user=phone", what="R-URI")
    assert uri.user == "+8613800000001;phone-context=pbx"
    assert uri.user_number == "+8613800000001"
    assert uri.params == {"user": "phone"}
    assert parse_uri("sip:value%2541@h", what="x").user == "value%41"


def test_tel_uris_give_the_number_as_user():
    uri = parse_uri("tel:+8613800000001;phone-context=+86", what="x")
    assert uri.scheme == "tel" and uri.user_number == "+8613800000001"


def test_a_bad_percent_escape_in_a_uri_is_a_parse_error():
    with pytest.raises(SipParseError, match="escape"):
        parse_uri("sip:ab%zz@h", what="Request-URI")


def test_name_addr_without_angle_brackets_takes_params_as_header_params():
    na = parse_name_addr("sip:1001@pbx.example;tag=xyz", what="From")
    assert na.uri.user == "1001" and na.tag == "xyz" and na.uri.params == {}


def test_unquoted_display_names_must_be_tokens():
    with pytest.raises(SipParseError, match="display name"):
        parse_name_addr("Bell, Alexander <sip:a@b>", what="From")


def test_stream_framer_cuts_messages_by_content_length_across_chunks():
    one = invite(body=b"v=0\r\n")
    two = invite(extra="X-N: 2\r\n")
    stream = b"\r\n\r\n" + one + two
    framer = StreamFramer()
    out: list[bytes] = []
    for i in range(0, len(stream), 7):
        out += framer.feed(stream[i : i + 7])
    assert out == [one, two]
    assert framer.pending == 0


def test_stream_framer_refuses_a_message_without_content_length():
    with pytest.raises(SipParseError, match="required over TCP"):
        StreamFramer().feed(invite(cl=False))


def test_stream_framer_refuses_an_endless_header_section():
    framer = StreamFramer(max_message_size=1000)
    with pytest.raises(SipParseError, match="larger than"):
        framer.feed(b"INVITE sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 300)


def test_stream_framer_refuses_a_content_length_beyond_the_size_limit():
    framer = StreamFramer(max_message_size=1000)
    with pytest.raises(SipParseError, match="larger than"):
        framer.feed(invite().replace(b"Content-Length: 0", b"Content-Length: 5000"))


def test_serializer_writes_headers_in_order_and_computes_content_length():
    resp = SipResponse(302, "Moved Temporarily", [("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"), ("Contact", "<sip:1@c>")])
    data = resp.to_bytes()
    assert data == (
        b"SIP/2.0 302 Moved Temporarily\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"Contact: <sip:1@c>\r\nContent-Length: 0\r\n\r\n"
    )
    back = parse_message(data)
    assert back.status == 302 and back.get("m") == "<sip:1@c>"


def test_serializer_refuses_header_values_that_would_inject_lines():
    with pytest.raises(ValueError):
        serialize("SIP/2.0 200 OK", [("Warning", "399 x\r\nVia: evil")])


def test_quoted_display_names_keep_their_text_with_and_without_escaped_quotes():
    assert parse_name_addr('"Agent One" <sip:1001@pbx>;tag=1', what="From").display == "Agent One"
    assert parse_name_addr('"Agent \\"One\\"" <sip:1001@pbx>', what="From").display == 'Agent "One"'
    assert parse_name_addr('"" <sip:1001@pbx>', what="From").display == ""
    with pytest.raises(SipParseError, match="without a <URI>"):
        parse_name_addr('"Agent One" sip:1001@pbx', what="From")
    with pytest.raises(SipParseError, match="unterminated"):
        parse_name_addr('"Agent One <sip:1001@pbx>', what="From")


def test_a_flood_of_invented_header_names_is_parsed_and_does_not_grow_the_name_cache_without_bound():
    from adapters.sip import message

    for batch in range(8):
        extra = "".join(f"X-Invented-{batch}-{i}: v\r\n" for i in range(200))
        msg = parse_message(invite(extra=extra))
        assert msg.get(f"x-invented-{batch}-199") == "v"
    assert len(message._NAME_CACHE) <= message._NAME_CACHE_MAX
    # names are still validated once the cache is full
    with pytest.raises(SipParseError, match="invalid header name"):
        parse_message(invite(extra="Bad Name: v\r\n"))


def test_the_first_p_asserted_identity_is_the_callers_line_parsed_once():
    msg = parse_message(invite(extra='P-Asserted-Identity: "Line" <sip:+862161234567@pbx>, <tel:+862161234568>\r\n'))
    assert msg.p_asserted_identity is not None and msg.p_asserted_identity.uri.user == "+862161234567"
    assert parse_message(invite()).p_asserted_identity is None


def test_a_value_seen_before_parses_to_the_same_result_and_a_bad_one_is_still_refused_every_time():
    from adapters.sip import message

    value = '"Agent One" <sip:1001@pbx.example:5060;transport=udp>;tag=f9'
    first = parse_name_addr(value, what="From")
    again = parse_name_addr(value, what="Contact")  # the same text in another header
    fresh = message._parse_name_addr(value, "From")  # no memo
    assert first == again == fresh
    assert again.uri.host == "pbx.example" and again.uri.port == 5060 and again.tag == "f9"
    assert parse_uri("sip:+8613800000001@gate.example", what="To") == message._parse_uri("sip:+8613800000001@gate.example", "To")
    via = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-memo;rport"
    assert parse_via(via) == parse_via(via) == message._parse_via(via)
    with pytest.raises(SipParseError, match="Via sent-protocol"):
        parse_via("SIP/3.0/UDP 10.0.0.1")
    for _ in range(2):  # refusals are never remembered
        with pytest.raises(SipParseError, match="unterminated '<' in Contact"):
            parse_name_addr("<sip:1001@pbx.example", what="Contact")
        with pytest.raises(SipParseError, match="Request-URI has no valid URI scheme"):
            parse_uri("1001@pbx.example", what="Request-URI")


def test_a_flood_of_distinct_uris_does_not_grow_the_parse_memo_beyond_its_bound():
    from adapters.sip import message

    for i in range(3 * message._MEMO_MAX):
        parse_name_addr(f"<sip:{i}@pbx.example>;tag=t{i}", what="From")
    long_value = "<sip:" + "1" * 300 + "@pbx.example>"
    parse_name_addr(long_value, what="To")
    assert len(message._NAME_ADDR_MEMO) <= message._MEMO_MAX
    assert len(message._URI_MEMO) <= message._MEMO_MAX
    for i in range(2 * message._MEMO_MAX):
        parse_via(f"SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-{i}")
    assert len(message._VIA_MEMO) <= message._MEMO_MAX
    assert long_value not in message._NAME_ADDR_MEMO  # long values are not kept


def _split_reference(text: str, sep: str) -> list[str] | str:
    """split_outside's rule, character by character (the error as a string)."""
    parts, cur, quoted, angle, i = [], "", False, False, 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\":
                if i + 1 >= len(text):
                    return "unterminated quoted-pair"
                cur += text[i : i + 2]
                i += 2
                continue
            quoted = ch != '"'
        elif angle:
            angle = ch != ">"
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle = True
        elif ch == sep:
            parts.append(cur)
            cur = ""
            i += 1
            continue
        cur += ch
        i += 1
    if quoted:
        return "unterminated quoted string"
    if angle:
        return "unterminated '<'"
    return parts + [cur]


@given(st.text(alphabet='<>",;\\a ', max_size=12), st.sampled_from([",", ";"]))
def test_splitting_outside_quotes_and_angle_brackets_follows_the_character_by_character_rule(text, sep):
    from adapters.sip.message import split_outside

    expected = _split_reference(text, sep)
    if isinstance(expected, str):
        with pytest.raises(SipParseError, match=expected):
            split_outside(text, sep, what="X")
    else:
        assert split_outside(text, sep, what="X") == expected


@pytest.mark.parametrize(
    "extra",
    [
        "Contact: <sip:1001@pbx\x01.example>\r\n",
        "Subject: hello\x1b[31m\r\n",
        "X-Agent-ID: a1\x7f\r\n",
        "Organization: \x00\r\n",
    ],
)
def test_a_control_character_anywhere_in_the_header_section_is_refused(extra):
    with pytest.raises(SipParseError, match="control character"):
        parse_message(invite(extra=extra))


@pytest.mark.parametrize("header", ["Call-ID: call\x01@pbx", "From: <sip:10\x0201@pbx>;tag=f", "To: <sip:+86138\x03@gate>"])
def test_a_control_character_in_call_id_from_or_to_is_refused(header):
    name = header.split(":", 1)[0]
    data = invite().decode().replace(next(line for line in invite().decode().split("\r\n") if line.startswith(name + ":")), header)
    with pytest.raises(SipParseError, match="control character"):
        parse_message(data.encode())


@pytest.mark.parametrize("host", ["10.10.10.256", "10.10.10", "1.2.3.4.5", "999.1.1.1"])
def test_a_via_host_that_looks_like_an_ipv4_address_but_is_not_one_is_refused(host):
    data = invite().replace(b"Via: SIP/2.0/UDP 10.0.0.1:5060", f"Via: SIP/2.0/UDP {host}:5060".encode())
    with pytest.raises(SipParseError, match="invalid IPv4"):
        parse_message(data)
