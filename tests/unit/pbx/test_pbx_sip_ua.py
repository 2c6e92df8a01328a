"""The SIP user agent's transaction handling, against a scripted peer on loopback.

These are the cases where pyVoIP 1.6.8 alone hangs or loses the call: final responses
without any provisional, ring timeouts (it has no CANCEL), OPTIONS (it cannot parse
them), a 200 crossing our CANCEL, Route sets on in-dialog requests.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from pbx_fake import FakePbx, header, headers, respond, sdp  # noqa: E402

from adapters.pbx.errors import PbxUnavailable  # noqa: E402
from adapters.pbx.sip_ua import LegCause, LegState, SipUaConfig, SipUserAgent, build_response, cause_for_status  # noqa: E402


@pytest.fixture
def pbx() -> Iterator[FakePbx]:
    fake = FakePbx()
    yield fake
    fake.close()


def free_rtp_block(size: int = 40) -> int:
    """A base with `size` consecutive free loopback UDP ports (the UA binds RTP there)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1] & ~1
        if base + size >= 65000:
            continue
        held = []
        try:
            for port in range(base, base + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no free block of UDP ports on loopback")


def config(pbx: FakePbx, **kw: object) -> SipUaConfig:
    base_port = free_rtp_block()
    base: dict[str, object] = dict(
        server="127.0.0.1", port=pbx.port, username="dialgate", local_port=0,
        rtp_port_low=base_port, rtp_port_high=base_port + 39, register_timeout=1.0,
    )
    base.update(kw)
    return SipUaConfig(**base)  # type: ignore[arg-type]


@pytest.fixture
async def ua(pbx: FakePbx) -> AsyncIterator[SipUserAgent]:
    async with SipUserAgent(config(pbx)) as agent:
        yield agent


def is_method(method: str):  # noqa: ANN201
    return lambda m: m.startswith(f"{method} ")


async def wait_for(pbx: FakePbx, method: str, timeout: float = 5.0) -> str:
    return await asyncio.to_thread(pbx.wait_for, is_method(method), timeout)


@pytest.mark.parametrize(
    ("status", "reason", "role", "cause"),
    [
        (486, "Busy Here", "callee", LegCause.BUSY),
        (600, "Busy Everywhere", "callee", LegCause.BUSY),
        (603, "Decline", "callee", LegCause.DECLINED),
        (480, "Temporarily Unavailable", "callee", LegCause.CALLEE_NO_ANSWER),
        (480, "Temporarily Unavailable", "agent", LegCause.AGENT_NO_ANSWER),
        (404, "Not Found", "callee", LegCause.FAILED),
        (503, "Service Unavailable", "callee", LegCause.FAILED),
    ],
)
async def test_a_final_response_without_any_provisional_ends_the_leg_with_its_cause_and_is_acknowledged(
    pbx: FakePbx, ua: SipUserAgent, status: int, reason: str, role: str, cause: LegCause
) -> None:
    pbx.script["INVITE"] = lambda r: [respond(r, status, reason)]
    leg = await ua.place_call("13800000001", 5, role=role)
    assert await asyncio.wait_for(leg.wait_ended(), 3) is cause
    assert leg.sip_status == status and not leg._answered.is_set()
    invite = await wait_for(pbx, "INVITE")
    ack = await wait_for(pbx, "ACK")
    # the ACK of a non-2xx response belongs to the INVITE transaction (RFC 3261 17.1.1.3)
    assert header(ack, "Via") == header(invite, "Via")
    assert header(ack, "CSeq") == header(invite, "CSeq").replace("INVITE", "ACK")  # type: ignore[union-attr]
    assert ";tag=fake1" in (header(ack, "To") or "")


async def test_a_leg_that_rings_past_its_timeout_is_cancelled_and_ends_as_no_answer(pbx: FakePbx, ua: SipUserAgent) -> None:
    pbx.script["INVITE"] = lambda r: [respond(r, 100, "Trying", to_tag=None), respond(r, 180, "Ringing")]
    pbx.script["CANCEL"] = lambda r: [respond(r, 200, "OK")]
    leg = await ua.place_call("13800000001", 0.8, role="callee")
    await asyncio.wait_for(leg.wait_ringing(), 3)
    assert leg.state is LegState.RINGING
    assert await asyncio.wait_for(leg.wait_ended(), 3) is LegCause.CALLEE_NO_ANSWER
    invite, cancel = await wait_for(pbx, "INVITE"), await wait_for(pbx, "CANCEL")
    assert cancel.split(" ")[1] == invite.split(" ")[1]  # same Request-URI
    assert header(cancel, "Via") == header(invite, "Via")  # same branch
    assert header(cancel, "Call-ID") == header(invite, "Call-ID")
    assert header(cancel, "CSeq") == header(invite, "CSeq").replace("INVITE", "CANCEL")  # type: ignore[union-attr]
    # the 487 that follows is acknowledged and changes nothing
    pbx.send(respond(invite, 487, "Request Terminated"))
    await wait_for(pbx, "ACK")
    assert leg.cause is LegCause.CALLEE_NO_ANSWER


async def test_an_invite_nobody_answers_is_retransmitted_then_fails_without_hanging(pbx: FakePbx, ua: SipUserAgent) -> None:
    leg = await ua.place_call("1001", 1.2, role="agent")
    assert await asyncio.wait_for(leg.wait_ended(), 4) is LegCause.FAILED
    assert leg.detail == "no_response_from_pbx"
    assert pbx.count(is_method("INVITE")) >= 2
    assert pbx.count(is_method("CANCEL")) == 0  # no CANCEL before any provisional (RFC 3261 9.1)


async def test_an_answered_leg_is_acknowledged_to_its_contact_along_the_route_set_and_a_remote_bye_ends_it_completed(
    pbx: FakePbx, ua: SipUserAgent
) -> None:
    rr = "Record-Route: <sip:10.0.0.2;lr>\r\nRecord-Route: <sip:10.0.0.1;lr>"
    pbx.script["INVITE"] = lambda r: [
        respond(r, 180, "Ringing", to_tag="dlg1"),
        respond(r, 200, "OK", to_tag="dlg1", extra=f"Contact: <sip:debtor@127.0.0.1:5999>\r\n{rr}", body=sdp(47998)),
    ]
    leg = await ua.place_call("13800000001", 5, role="callee")
    assert await asyncio.wait_for(leg.wait_answered(), 3)
    ack = await wait_for(pbx, "ACK")
    assert ack.startswith("ACK sip:debtor@127.0.0.1:5999 SIP/2.0")
    assert headers(ack, "Route") == ["<sip:10.0.0.1;lr>", "<sip:10.0.0.2;lr>"]  # Record-Route reversed (UAC)
    invite = await wait_for(pbx, "INVITE")
    bye = (
        f"BYE sip:dialgate@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{pbx.port};branch=z9hG4bKbye1\r\n"
        f"From: {header(invite, 'To')};tag=dlg1\r\nTo: {header(invite, 'From')}\r\n"
        f"Call-ID: {header(invite, 'Call-ID')}\r\nCSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n"
    )
    pbx.send(bye.encode())
    assert await asyncio.wait_for(leg.wait_ended(), 3) is LegCause.COMPLETED
    assert leg.hangup_by == "remote"
    ok = await asyncio.to_thread(pbx.wait_for, lambda m: m.startswith("SIP/2.0 200") and "BYE" in (header(m, "CSeq") or ""))
    assert header(ok, "Via") == f"SIP/2.0/UDP 127.0.0.1:{pbx.port};branch=z9hG4bKbye1"


async def test_hanging_up_an_answered_leg_sends_bye_in_the_dialog(pbx: FakePbx, ua: SipUserAgent) -> None:
    pbx.script["INVITE"] = lambda r: [respond(r, 200, "OK", to_tag="dlg2", extra="Contact: <sip:agent@127.0.0.1:5998>", body=sdp(47996))]
    pbx.script["BYE"] = lambda r: [respond(r, 200, "OK")]
    leg = await ua.place_call("1001", 5, role="agent")
    assert await asyncio.wait_for(leg.wait_answered(), 3)
    await asyncio.wait_for(leg.hangup(), 3)
    assert leg.cause is LegCause.COMPLETED and leg.hangup_by == "local"
    invite, bye = await wait_for(pbx, "INVITE"), await wait_for(pbx, "BYE")
    assert bye.startswith("BYE sip:agent@127.0.0.1:5998 SIP/2.0")
    assert header(bye, "To", ).endswith(";tag=dlg2")  # type: ignore[union-attr]
    assert int(header(bye, "CSeq").split()[0]) == int(header(invite, "CSeq").split()[0]) + 1  # type: ignore[union-attr]
    assert header(bye, "Via") != header(invite, "Via")  # a new transaction, not pyVoIP's reused branch


async def test_a_200_that_crosses_our_cancel_is_acknowledged_and_then_ended_with_bye(pbx: FakePbx, ua: SipUserAgent) -> None:
    def late_answer(r: str) -> list[bytes]:
        pbx.late_invite = r  # type: ignore[attr-defined]
        return [respond(r, 180, "Ringing", to_tag="dlg3")]

    pbx.script["INVITE"] = late_answer
    pbx.script["CANCEL"] = lambda r: [
        respond(r, 200, "OK"),
        respond(pbx.late_invite, 200, "OK", to_tag="dlg3", extra="Contact: <sip:x@127.0.0.1:5997>", body=sdp(47994)),  # type: ignore[attr-defined]
    ]
    leg = await ua.place_call("13800000001", 0.6, role="callee")
    assert await asyncio.wait_for(leg.wait_ended(), 3) is LegCause.CALLEE_NO_ANSWER
    await wait_for(pbx, "ACK")
    bye = await wait_for(pbx, "BYE")
    assert ";tag=dlg3" in (header(bye, "To") or "")
    assert leg.state is LegState.ENDED


async def test_options_from_the_pbx_are_answered_200_with_allow(pbx: FakePbx, ua: SipUserAgent) -> None:
    await wait_for(pbx, "REGISTER")
    pbx.send(
        b"OPTIONS sip:dialgate@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKopt1\r\n"
        b"From: <sip:pbx@127.0.0.1>;tag=p1\r\nTo: <sip:dialgate@127.0.0.1>\r\nCall-ID: opt-1\r\nCSeq: 3 OPTIONS\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    ok = await asyncio.to_thread(pbx.wait_for, lambda m: "opt-1" in m and m.startswith("SIP/2.0 "))
    assert ok.startswith("SIP/2.0 200 OK")
    assert "OPTIONS" in (header(ok, "Allow") or "")
    assert header(ok, "CSeq") == "3 OPTIONS" and ";tag=" in (header(ok, "To") or "")


async def test_an_incoming_call_is_refused_busy_and_an_unknown_method_gets_405(pbx: FakePbx, ua: SipUserAgent) -> None:
    await wait_for(pbx, "REGISTER")
    base = (
        "{m} sip:dialgate@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bK{cid}\r\n"
        "From: <sip:x@127.0.0.1>;tag=x1\r\nTo: <sip:dialgate@127.0.0.1>\r\nCall-ID: {cid}\r\nCSeq: 1 {m}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    pbx.send(base.format(m="INVITE", cid="in-1").encode())
    pbx.send(base.format(m="INFO", cid="in-2").encode())
    busy = await asyncio.to_thread(pbx.wait_for, lambda m: "in-1" in m and m.startswith("SIP/2.0 "))
    nope = await asyncio.to_thread(pbx.wait_for, lambda m: "in-2" in m and m.startswith("SIP/2.0 "))
    assert busy.startswith("SIP/2.0 486") and nope.startswith("SIP/2.0 405") and header(nope, "Allow")


async def test_registration_answers_a_digest_challenge_with_credentials(pbx: FakePbx) -> None:
    def challenge(r: str) -> bytes:
        if header(r, "Authorization"):
            return respond(r, 200, "OK")
        return respond(r, 401, "Unauthorized", extra='WWW-Authenticate: Digest realm="pbx", nonce="abc123"')

    pbx.register_reply = challenge
    async with SipUserAgent(config(pbx, password="s3cret")) as agent:
        assert agent.registered
    auth = await asyncio.to_thread(pbx.wait_for, lambda m: m.startswith("REGISTER") and "Authorization" in m)
    assert 'nonce="abc123"' in auth and "s3cret" not in auth


async def test_a_pbx_refusing_registration_raises_pbx_unavailable_naming_the_status(pbx: FakePbx) -> None:
    pbx.register_reply = lambda r: respond(r, 403, "Forbidden")
    agent = SipUserAgent(config(pbx))
    with pytest.raises(PbxUnavailable) as exc:
        await asyncio.wait_for(agent.start(), 5)
    assert "403" in exc.value.reason
    assert not agent.registered and agent.health()["state"] == "failed"


async def test_a_call_target_with_sip_syntax_in_it_is_refused_before_anything_is_sent(pbx: FakePbx, ua: SipUserAgent) -> None:
    with pytest.raises(ValueError, match="invalid call target"):
        await ua.place_call("1001@evil.example;transport=tcp", 5)
    assert pbx.count(is_method("INVITE")) == 0


@pytest.mark.parametrize(("status", "cause"), [(486, "busy"), (603, "declined"), (408, "callee_no_answer"), (500, "failed"), (302, "failed")])
def test_final_status_codes_map_to_the_attempt_causes(status: int, cause: str) -> None:
    assert cause_for_status(status, "callee") == cause


def test_a_built_response_mirrors_every_via_and_adds_a_to_tag() -> None:
    raw = (
        b"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP p1;branch=z9hG4bK1\r\nv: SIP/2.0/UDP p2;branch=z9hG4bK2\r\n"
        b"f: <sip:x@y>;tag=1\r\nt: <sip:a@b>\r\ni: cid\r\nCSeq: 2 BYE\r\n\r\n"
    )
    text = build_response(raw, 200, "OK", to_tag="T").decode()
    assert text.startswith("SIP/2.0 200 OK\r\n")
    assert headers(text, "Via") == ["SIP/2.0/UDP p1;branch=z9hG4bK1", "SIP/2.0/UDP p2;branch=z9hG4bK2"]
    assert header(text, "To") == "<sip:a@b>;tag=T" and header(text, "Call-ID") == "cid"


async def test_registration_is_refreshed_within_what_the_registrar_granted(pbx: FakePbx) -> None:
    pbx.register_reply = lambda r: respond(r, 200, "OK", extra=f"Contact: {header(r, 'Contact')};expires=3")
    async with SipUserAgent(config(pbx)) as agent:  # asks for 600 s, is granted 3 s
        await asyncio.to_thread(pbx.wait_for, lambda m: m.startswith("REGISTER") and pbx.count(is_method("REGISTER")) >= 2, 10)
        assert agent.registered
