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

from adapters.sip.fakes import RecordingSipAuthorizer
from sipclient import TcpClient, UdpClient, make_invite
from tests.conftest import data_dir, require_service

TORTURE = data_dir() / "sip-torture"

DROP = None
DECIDED = 302  # the recording authorizer allows every call it is asked about

# file -> expected answer over UDP (status, or DROP)
UDP_EXPECTED: dict[str, int | None] = {
    # 3.1.1 valid
    "wsinv": DECIDED, "intmeth": 501, "esc01": DECIDED, "escnull": 405, "esc02": 501,
    "lwsdisp": 200, "longreq": DECIDED, "dblreq": 405, "semiuri": 200, "transports": 200,
    "mpart01": 405, "unreason": DROP, "noreason": DROP,
    # 3.1.2 invalid
    "badinv01": 400, "clerr": 400, "ncl": 400, "scalar02": 400, "scalarlg": DROP,
    "quotbal": 400, "ltgtruri": 400, "lwsruri": 400, "lwsstart": 400, "trws": 400,
    "escruri": DECIDED,  # liberal: the escaped Route header is ignored, never applied
    "baddate": DECIDED,  # Date does not matter to a redirect decision
    "regbadct": 405, "badaspec": 200,  # liberal: spaces in the addr-spec are ignored
    "baddn": 400, "badvers": 505, "mismatch01": 400, "mismatch02": 400, "bigcode": DROP,
    # 3.2 transaction layer
    "badbranch": 200,  # RFC 2543 matching fallback
    # 3.3 application layer
    "insuf": DROP,  # no From/To/Call-ID: a response could not be addressed
    "unkscm": 416, "novelsc": 416, "unksm2": 405, "bext01": 420, "invut": DECIDED,
    "regaut01": 405, "multi01": 400, "mcl01": 400, "bcast": DROP, "zeromf": 200,
    "cparam01": 405, "cparam02": 405, "regescrt": 405, "sdp01": DECIDED,
    # 3.4 compatibility
    "inv2543": DECIDED,
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
        "dblreq": [405, DECIDED],  # on a stream the trailing INVITE is the next message
    }
)

VALID_INVITES = {"wsinv", "esc01", "longreq", "escruri", "baddate", "invut", "sdp01", "inv2543"}


def torture_files() -> list[str]:
    return sorted(p.stem for p in TORTURE.glob("*.sip"))


def test_every_torture_file_has_an_expected_outcome():
    require_service("RFC 4475 torture messages", TORTURE.is_dir(), f"expected in {TORTURE}")
    assert torture_files() == sorted(UDP_EXPECTED)


async def test_torture_messages_over_udp_get_the_expected_answer_or_are_dropped(start_gate):
    require_service("RFC 4475 torture messages", TORTURE.is_dir(), f"expected in {TORTURE}")
    auth = RecordingSipAuthorizer()
    observed: dict[str, int | None] = {}
    async with start_gate(auth) as gate:
        for name in torture_files():
            client = UdpClient(gate.port)
            # an INVITE probe: its decision is queued behind the torture message's
            probe = make_invite("+8613800000030", gate_port=gate.port, call_id=f"probe-{name}")
            client.send((TORTURE / f"{name}.sip").read_bytes())
            client.send(probe)
            first = await client.recv_final()
            if first.call_id == f"probe-{name}":
                observed[name] = DROP
            else:
                observed[name] = first.status
                assert (await client.recv_final()).call_id == f"probe-{name}"
            client.close()
        # the listener survived all of it
        ok = UdpClient(gate.port)
        after = await ok.request(make_invite("+8613800000031", gate_port=gate.port))
        ok.close()
    assert observed == UDP_EXPECTED
    asked = [i.call_id.split(".")[0] for i in auth.asked if i.call_id != after.call_id and not i.call_id.startswith("probe-")]
    assert sorted(asked) == sorted(VALID_INVITES)  # each decided exactly once, nothing else
    assert after.status == 302


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
    if name in VALID_INVITES and name != "inv2543":
        assert len(auth.asked) == 1
    elif name != "dblreq":
        assert auth.asked == []
