"""RFC 4475 torture messages (tests/data/sip-torture/) against the gate, over UDP and TCP.

Expected handling comes from the RFC (summarised in that folder's README) for a redirect
server that answers INVITEs with its decision: valid messages get their correct answer,
invalid ones a 400 (505 for the unknown version) or a drop; responses are never
answered; the authorizer is asked about exactly the well-formed INVITEs.

"Dropped" over UDP is observed without sleeping: after each torture datagram the test
sends a valid INVITE probe from the same socket; loopback keeps the order and the gate
answers in arrival order, so if the first answer is the probe's, the torture message got
none. Over TCP the test half-closes the
connection and reads everything the gate sends until it closes its side.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest


from adapters.sip import edge_link, edge_process
from adapters.sip.edge import SipEdgeProcess
from tests.support.sip_fakes import RecordingSipAuthorizer
from adapters.sip.message import SipMessage
from tests.support.net import free_tcp_and_udp_port as free_port
from sipclient import GATE_CONFIG, TcpClient, UdpClient, make_invite
from tests.conftest import captured_logs, data_dir, require_service

TORTURE = data_dir() / "sip-torture"

DROP = None
# Every INVITE of RFC 4475 dials a user name (sip:user@example.com), not a number: valid
# SIP, but not a dial string the gate decides on, so 484 and never a decision.
NOT_A_NUMBER = 484

# file -> expected answer over UDP (status, or DROP)
UDP_EXPECTED: dict[str, int | None] = {
    # 3.1.1 valid
    "wsinv": NOT_A_NUMBER,
    # valid RFC 3261, but BEL/NUL/DEL (as quoted-pairs) in To: refused on purpose, and
    # unanswerable without echoing them, so dropped (adapters/sip/README.md, Strictness)
    "intmeth": DROP, "esc01": NOT_A_NUMBER, "escnull": 405, "esc02": 501,
    "lwsdisp": 200, "longreq": NOT_A_NUMBER, "dblreq": 405, "semiuri": 200, "transports": 200,
    "mpart01": 405, "unreason": DROP, "noreason": DROP,
    # 3.1.2 invalid
    "badinv01": 400, "clerr": 400, "ncl": 400, "scalar02": 400, "scalarlg": DROP,
    "quotbal": 400, "ltgtruri": 400, "lwsruri": 400, "lwsstart": 400, "trws": 400,
    "escruri": NOT_A_NUMBER,  # liberal: the escaped Route header is ignored, never applied
    "baddate": NOT_A_NUMBER,  # Date does not matter to a redirect decision
    "regbadct": 405, "badaspec": 200,  # liberal: spaces in the addr-spec are ignored
    "baddn": 400, "badvers": 505, "mismatch01": 400, "mismatch02": 400, "bigcode": DROP,
    # 3.2 transaction layer
    "badbranch": 200,  # RFC 2543 matching fallback
    # 3.3 application layer
    "insuf": DROP,  # no From/To/Call-ID: a response could not be addressed
    "unkscm": 416, "novelsc": 416, "unksm2": 405, "bext01": 420, "invut": NOT_A_NUMBER,
    "regaut01": 405, "multi01": 400, "mcl01": 400, "bcast": DROP, "zeromf": 200,
    "cparam01": 405, "cparam02": 405, "regescrt": 405, "sdp01": NOT_A_NUMBER,
    # 3.4 compatibility
    "inv2543": NOT_A_NUMBER,
    # not in the RFC text
    "test": DROP,  # no SIP-Version and a header without a colon: nothing to mirror
}

# Over TCP framing is by Content-Length only (RFC 3261 18.3), which changes a few:
TCP_EXPECTED: dict[str, list[int]] = {
    name: ([] if status is None else [status]) for name, status in UDP_EXPECTED.items()
}
TCP_EXPECTED.update(
    {
        "inv2543": [400],  # no Content-Length: cannot be framed on a stream
        "clerr": [],  # waits for 9999 body bytes, then the peer closes: nothing to answer
        "baddn": [],  # no empty line: the header section never ends
        "dblreq": [405, NOT_A_NUMBER],  # on a stream the trailing INVITE is the next message
    }
)

def torture_files() -> list[str]:
    return sorted(p.stem for p in TORTURE.glob("*.sip"))


def test_every_torture_file_has_an_expected_outcome():
    require_service("RFC 4475 torture messages", TORTURE.is_dir(), f"expected in {TORTURE}")
    assert torture_files() == sorted(UDP_EXPECTED)


async def send_torture_over_udp(port: int) -> tuple[dict[str, int | None], SipMessage]:
    """Each torture datagram followed by a probe INVITE; what each got, and the answer
    to a valid INVITE sent after all of them."""
    observed: dict[str, int | None] = {}
    for name in torture_files():
        client = UdpClient(port)
        # an INVITE probe: its decision is queued behind the torture message's
        probe = make_invite("+8613800000030", gate_port=port, call_id=f"probe-{name}")
        client.send((TORTURE / f"{name}.sip").read_bytes())
        client.send(probe)
        first = await client.recv_final()
        if first.call_id == f"probe-{name}":
            observed[name] = DROP
        else:
            observed[name] = first.status
            assert (await client.recv_final()).call_id == f"probe-{name}"
        client.close()
    ok = UdpClient(port)
    after = await ok.request(make_invite("+8613800000031", gate_port=port))
    ok.close()
    return observed, after


async def test_torture_messages_over_udp_get_the_expected_answer_or_are_dropped(start_gate):
    require_service("RFC 4475 torture messages", TORTURE.is_dir(), f"expected in {TORTURE}")
    auth = RecordingSipAuthorizer()
    async with start_gate(auth) as gate:
        observed, after = await send_torture_over_udp(gate.port)
    assert observed == UDP_EXPECTED
    asked = [i.call_id for i in auth.asked if i.call_id != after.call_id and not i.call_id.startswith("probe-")]
    assert asked == []  # the valid INVITEs dial user names (484): only the probes were decided
    assert after.status == 302  # the listener survived all of it


async def test_torture_messages_through_the_edge_process_leave_its_link_and_process_up():
    require_service("RFC 4475 torture messages", TORTURE.is_dir(), f"expected in {TORTURE}")
    auth = RecordingSipAuthorizer()
    port = free_port()
    with captured_logs(edge_link, edge_process) as logs:
        async with SipEdgeProcess(auth, {**GATE_CONFIG, "listen": f"127.0.0.1:{port}", "edge": "process"}) as edge:
            pid = edge.pid
            observed, after = await send_torture_over_udp(port)
            assert (edge.pid, edge.restarts, edge.listening) == (pid, 0, True)
    assert observed == UDP_EXPECTED
    assert after.status == 302
    assert [i.call_id for i in auth.asked] == [f"probe-{n}" for n in torture_files()] + [after.call_id]
    assert not {e["event"] for e in logs} & {"sip.edge_exited", "sip.edge_link_error", "sip.edge_bad_line"}


@pytest.mark.parametrize("name", sorted(UDP_EXPECTED))
async def test_torture_message_over_tcp_gets_the_expected_answers(start_gate, name):
    require_service("RFC 4475 torture messages", TORTURE.is_dir(), f"expected in {TORTURE}")
    auth = RecordingSipAuthorizer()
    async with start_gate(auth) as gate:
        conn = await TcpClient.connect(gate.port)
        await conn.send((TORTURE / f"{name}.sip").read_bytes())
        conn.writer.write_eof()
        statuses: list[int] = []
        while (msg := await conn.recv(timeout=5)) is not None:
            if msg.status is not None and msg.status >= 200:
                statuses.append(msg.status)
        await conn.close()
    assert statuses == TCP_EXPECTED[name]
    assert auth.asked == []  # valid INVITEs dial user names (484); the rest are refused earlier
