"""The edge's listener when the service gives no decision: a frozen or unreachable
deciding process is not a block. Such an INVITE is answered 503 with Retry-After (a
dispatcher may ask the other gate), never the final 603; what the service did decide
(a block, or its store saying it is unavailable) stays a 603.

The listener is driven without sockets on the SIP side (datagrams handed to it, its
responses collected); the link to the "service" is a real socket pair whose far end
reads the questions and answers only what the test tells it to."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any, AsyncIterator

import pytest

from adapters.sip.config import load_sip_config
from adapters.sip.edge import RemoteAuthorizer, encode_answer
from adapters.sip.gate import SipDialAnswer, fail_closed_answer
from adapters.sip.message import SipMessage, parse_message
from adapters.sip.server import SipServer
from tests.integration.sip.sipclient import GATE_CONFIG, make_invite

PBX = ("127.0.0.1", 5999)


class Service:
    """The far end of the link: the questions it was asked, and a way to answer them."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.questions: asyncio.Queue[list[Any]] = asyncio.Queue()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._reader, self._writer = await asyncio.open_unix_connection(sock=self.sock)
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self._reader is not None
        while line := await self._reader.readline():
            await self.questions.put(json.loads(line))

    async def question(self) -> list[Any]:
        return await asyncio.wait_for(self.questions.get(), 5)

    def answer(self, req_id: int, answer: SipDialAnswer) -> None:
        assert self._writer is not None
        self._writer.write(encode_answer(req_id, answer) + b"\n")

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._writer is not None:
            self._writer.close()


class Pbx:
    """What the listener sent back to the PBX, in order."""

    def __init__(self) -> None:
        self.responses: asyncio.Queue[SipMessage] = asyncio.Queue()

    def __call__(self, resp: Any) -> None:
        self.responses.put_nowait(parse_message(resp.to_bytes(), "udp"))

    async def final(self) -> SipMessage:
        while True:
            msg = await asyncio.wait_for(self.responses.get(), 5)
            if msg.status is not None and msg.status >= 200:
                return msg


@pytest.fixture
async def edge() -> AsyncIterator[tuple[SipServer, Service, RemoteAuthorizer]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    service = Service(theirs)
    await service.start()
    remote = RemoteAuthorizer()
    await remote.connect(sock=ours)
    server = SipServer(remote, load_sip_config(GATE_CONFIG), port=0, decision_timeout=0.3)
    try:
        yield server, service, remote
    finally:
        await server.close()
        remote.close()
        service.close()


def invite(server: SipServer, pbx: Pbx, number: str, call_id: str) -> None:
    server._receive(make_invite(number, call_id=call_id), "udp", pbx, PBX)


def options(server: SipServer, pbx: Pbx, n: int) -> None:
    raw = (
        f"OPTIONS sip:127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKprobe{n}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:dispatcher@127.0.0.1>;tag=p{n}\r\nTo: <sip:127.0.0.1:5070>\r\n"
        f"Call-ID: probe-{n}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    server._receive(raw, "udp", pbx, PBX)


async def test_an_invite_the_silent_service_never_answers_gets_503_with_retry_after_not_603(edge) -> None:
    server, service, _ = edge
    pbx = Pbx()
    invite(server, pbx, "+8613800000101", "frozen@pbx")
    asked = await service.question()  # the question did reach the service, which stays silent
    final = await pbx.final()
    assert asked[7] == "frozen@pbx"  # the call id, after the request id and six fields
    assert final.status == 503
    assert final.get("retry-after") == "1"
    assert final.get("reason") == 'SIP;cause=503;text="system.no_decision"'
    assert final.get("x-dialgate-attempt") is None and final.get("contact") is None


async def test_a_silent_service_makes_the_probe_answer_503_until_a_decision_comes_back(edge) -> None:
    server, service, _ = edge
    pbx = Pbx()
    options(server, pbx, 1)
    healthy = await pbx.final()
    invite(server, pbx, "+8613800000102", "stall@pbx")
    req_id = (await service.question())[0]
    assert (await pbx.final()).status == 503
    options(server, pbx, 2)
    stalled = await pbx.final()
    service.answer(req_id, SipDialAnswer(True, "allow", "Allowed", attempt_id="att-late", number="+8613800000102"))
    for _ in range(100):  # the late answer is read on the loop; wait for the listener to see it
        if not server.stalled:
            break
        await asyncio.sleep(0.01)
    options(server, pbx, 3)
    again = await pbx.final()
    assert (healthy.status, stalled.status, again.status) == (200, 503, 200)
    assert stalled.get("retry-after") == "1"


async def test_an_invite_arriving_with_the_link_down_gets_503_at_once(edge) -> None:
    server, service, remote = edge
    pbx = Pbx()
    service.close()
    await asyncio.wait_for(remote.lost.wait(), 5)
    invite(server, pbx, "+8613800000103", "nolink@pbx")
    final = await pbx.final()
    assert final.status == 503
    assert final.get("reason") == 'SIP;cause=503;text="system.no_decision"'


async def test_the_link_closing_under_a_waiting_invite_gets_it_503(edge) -> None:
    server, service, _ = edge
    pbx = Pbx()
    invite(server, pbx, "+8613800000104", "dying@pbx")
    await service.question()
    service.close()  # the service dies with the question unanswered
    final = await pbx.final()
    assert final.status == 503 and 'text="system.no_decision"' in (final.get("reason") or "")


@pytest.mark.parametrize(
    "answer, rule",
    [
        (SipDialAnswer(False, "cap.number_hourly", "Number called 2 times", retry_after=1800), "cap.number_hourly"),
        (fail_closed_answer(), "system.store_unavailable"),
    ],
)
async def test_what_the_service_decided_stays_a_final_603(edge, answer: SipDialAnswer, rule: str) -> None:
    server, service, _ = edge
    pbx = Pbx()
    invite(server, pbx, "+8613800000105", f"{rule}@pbx")
    service.answer((await service.question())[0], answer)
    final = await pbx.final()
    assert final.status == 603
    assert final.get("reason") == f'SIP;cause=603;text="{rule}"'
    assert not server.stalled
