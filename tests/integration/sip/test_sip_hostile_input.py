"""Input meant to break the gate, through the real service in both `[sip] edge` modes:
no INVITE takes the gate down, a number that is not a dial string is never decided, a
302 routes exactly the number decided on, a reused branch does not reuse a decision."""

from __future__ import annotations

from typing import Any, AsyncIterator

import pytest

from adapters.sip import edge_decisions, edge_link, edge_process, invites
from tests.conftest import captured_logs
from tests.support.net import free_tcp_and_udp_port as free_port
from service_app import Running, start_service
from tests.support.builders import case_doc
from sipclient import UdpClient

NUMBERS = [f"139100000{i:02d}" for i in range(45, 65)]  # 20 numbers, one case each, all col-a's
CASES = [case_doc(f"C-{n}", "bank-a", "col-a", n) for n in NUMBERS]


@pytest.fixture(params=["inline", "process"])
async def running(request: Any, tmp_path: Any) -> AsyncIterator[Running]:
    async with start_service(tmp_path, sip_port=free_port(), edge=request.param, cases=CASES) as run:
        yield run


def edge_state(run: Running) -> tuple[int | None, int]:
    """(edge pid, restarts) in process mode; (None, 0) inline."""
    edge = getattr(run.svc.sip, "edge", None)
    return (edge.pid, edge.restarts) if edge is not None else (None, 0)


def raw_invite(run: Running, user: bytes, call_id: str) -> bytes:
    """An INVITE whose Request-URI and To carry ``user`` byte for byte."""
    port = run.sip_port
    uri = b"sip:" + user + b"@127.0.0.1:" + str(port).encode()
    head = (
        b"INVITE " + uri + b" SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-" + call_id.encode() + b";rport\r\n"
        b"Max-Forwards: 70\r\nFrom: \"Agent\" <sip:1001@127.0.0.1>;tag=ft1\r\nContact: <sip:1001@127.0.0.1:5999>\r\n"
        b"To: <" + uri + b">\r\nCall-ID: " + call_id.encode() + b"\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    return head


@pytest.mark.parametrize(("user", "status"), [(b"\x01" * 15_000, None), (b"%01" * 5_000, 484)], ids=["raw-0x01", "escaped-%01"])
async def test_a_30_kb_control_character_invite_is_refused_and_the_next_20_are_all_decided(running, user, status):
    before = edge_state(running)
    client = UdpClient(running.sip_port)
    with captured_logs(edge_decisions, edge_link, edge_process, invites) as logs:
        bad = raw_invite(running, user, "ctrl-1")
        assert 29_000 < len(bad) < 65_000
        client.send(bad)
        refused = await client.recv_final() if status is not None else None
        answers = [await client.request(running.invite(n, call_id=f"ok-{n}")) for n in NUMBERS]
    client.close()
    # escaped: not a dial string (484); raw: not SIP at all, and a 400 would have to echo
    # the control characters in its To, so no answer (the next answer is the next INVITE's)
    assert (refused.status if refused else None) == status
    assert [a.call_id for a in answers] == [f"ok-{n}" for n in NUMBERS]
    assert [a.status for a in answers] == [302] * 20
    assert [a.get("contact") for a in answers] == [f"<sip:+86{n}@127.0.0.1:5080>" for n in NUMBERS]
    assert await running.decisions() == 20  # the bad INVITE was never decided
    assert edge_state(running) == before  # no restart, the same edge process
    events = {e["event"] for e in logs}
    assert not events & {"sip.edge_exited", "sip.edge_link_error", "sip.edge_bad_line", "sip.authorizer_failed"}


@pytest.mark.parametrize(
    "user",
    [
        b"ABC13910000045", b"%0013910000045", b"13910000045%7F", b"1391000%E2%80%8B0045",
        "１３９１０００００４５".encode(), b"139%2010000045", b"13910000045ext5",
    ],
    ids=["letters", "NUL", "DEL", "zero-width", "full-width", "space", "ext"],
)
async def test_a_dialed_number_that_is_not_a_dial_string_gets_484_and_no_decision(running, user):
    client = UdpClient(running.sip_port)
    resp = await client.request(raw_invite(running, user, "dirty-1"))
    client.close()
    assert resp.status == 484 and "not a dial string" in resp.get("warning")
    assert resp.get("contact") is None
    assert await running.decisions() == 0 and await running.attempts() == 0


async def test_a_302_carries_the_decided_e164_number_whatever_separators_were_dialed(running):
    client = UdpClient(running.sip_port)
    resp = await client.request(running.invite("+86-139-1000-0045"))
    client.close()
    assert resp.status == 302 and resp.get("contact") == "<sip:+8613910000045@127.0.0.1:5080>"
    async with running.svc.store.read() as uow:
        attempt = await uow.attempts.get(resp.get("x-dialgate-attempt"))
    assert attempt.number == "+8613910000045" and attempt.case_id == "C-13910000045"


async def test_an_invite_for_another_number_reusing_a_branch_is_decided_on_its_own(running):
    client = UdpClient(running.sip_port)
    first = await client.request(running.invite(NUMBERS[0], branch="z9hG4bK-reused", call_id="reuse@pbx"))
    second = await client.request(running.invite(NUMBERS[1], branch="z9hG4bK-reused", call_id="reuse@pbx"))
    client.close()
    assert first.status == second.status == 302
    assert second.get("contact") == f"<sip:+86{NUMBERS[1]}@127.0.0.1:5080>"
    assert first.get("x-dialgate-attempt") != second.get("x-dialgate-attempt")
    assert await running.attempts("sip") == 2
