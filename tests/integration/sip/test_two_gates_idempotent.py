"""Two `dialgate serve` gates on one PostgreSQL: the same INVITE (the same Call-ID, From
tag and CSeq) at both gates, at once or one after the other (the first 302 lost, the
PBX or its dispatcher trying the other gate with a Via branch of its own), is decided
and counted once, and both gates answer it with the same 302 (or the same 603); behind
the reference Kamailio, a gate whose 302 is lost on the wire makes the dispatcher ask
the other gate, and the call is still one decision and one attempt."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sipclient import UdpClient, make_invite
from tests.integration.store.gate_store_support import DIALGATE, REPO, one_case, pg_url, workdir  # noqa: F401
from two_gates import CREDITOR, two_gates

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

NUMBER = "13700008888"
E164 = "+86" + NUMBER


async def _ask(port: int, call_id: str, branch: str, case_id: str) -> Any:
    """The INVITE, from a socket of its own (a retransmitted 302 is never read as the
    answer to the next try)."""
    client = UdpClient(port)
    try:
        me = client.sock.getsockname()[1]
        invite = make_invite(NUMBER, gate_port=port, from_user="1002", from_tag=f"t-{call_id}", call_id=call_id,
                             cseq=7, branch=branch, via_host=f"127.0.0.1:{me}", extra=f"X-Case-ID: {case_id}\r\n")
        return await client.request(invite, timeout=10)  # the gate answers within its decision time-out
    finally:
        client.close()


def _final(answer: Any) -> tuple[Any, ...]:
    return answer.status, answer.get("contact"), answer.get("x-dialgate-attempt"), answer.get("reason")


async def test_one_invite_at_both_gates_is_one_decision_one_attempt_and_the_same_answer(
    pg_url: str, workdir: Path,
) -> None:
    cases = [one_case("IDEM-1", CREDITOR, "col-s", NUMBER), one_case("IDEM-2", CREDITOR, "col-s", NUMBER)]
    async with two_gates(pg_url, workdir, cases, kamailio=False) as world:
        a, b = world.sip_ports
        # at once, the same branch: the two gates race on one identity
        raced = await asyncio.gather(_ask(a, "idem-race@pbx", "z9hG4bK-idem-1", "IDEM-1"),
                                     _ask(b, "idem-race@pbx", "z9hG4bK-idem-1", "IDEM-1"))
        # one after the other, a new branch on the second gate (its first 302 was lost)
        first = await _ask(a, "idem-retry@pbx", "z9hG4bK-idem-2", "IDEM-2")
        retried = await _ask(b, "idem-retry@pbx", "z9hG4bK-idem-2.1", "IDEM-2")

        assert [r.status for r in raced] == [302, 302], [(r.status, r.get("reason")) for r in raced]
        assert _final(raced[0]) == _final(raced[1]) and raced[0].get("x-dialgate-attempt")
        assert first.status == 302 and _final(retried) == _final(first)
        assert first.get("x-dialgate-attempt") != raced[0].get("x-dialgate-attempt")  # another call: another attempt

        attempts = await world.rows("SELECT id, case_id FROM attempts WHERE number = $1 ORDER BY case_id", E164)
        assert [(r["id"], r["case_id"]) for r in attempts] == [
            (raced[0].get("x-dialgate-attempt"), "IDEM-1"), (first.get("x-dialgate-attempt"), "IDEM-2")]
        decisions = await world.rows("SELECT case_id, allowed FROM decisions WHERE kind = 'dial' ORDER BY case_id")
        assert [(d["case_id"], d["allowed"]) for d in decisions] == [("IDEM-1", True), ("IDEM-2", True)]
        assert await world.count("SELECT count(*) FROM dial_requests") == 2

        # the cap (2 an hour) is reached: a third call's INVITE is blocked, and its retry
        # on the other gate is the same 603, logged once
        blocked = await _ask(a, "idem-block@pbx", "z9hG4bK-idem-3", "IDEM-1")
        blocked_again = await _ask(b, "idem-block@pbx", "z9hG4bK-idem-3.1", "IDEM-1")
        assert blocked.status == 603 and _final(blocked_again) == _final(blocked)
        assert await world.count("SELECT count(*) FROM decisions WHERE kind = 'dial' AND NOT allowed") == 1
        assert await world.count("SELECT count(*) FROM attempts WHERE number = $1", E164) == 2

        for config in world.configs:
            done = subprocess.run([*DIALGATE, "audit", "verify", "--config", str(config)], cwd=config.parent,
                                  capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


class LossyFront(asyncio.DatagramProtocol):
    """Gate A as Kamailio sees it: requests pass to A, and A's answers to INVITEs are
    lost on the wire (a 302 that never arrives); the probes' answers pass, so A stays
    in the dispatcher's rotation. Records the attempt of every 302 it lost."""

    def __init__(self, gate_port: int) -> None:
        self.gate = ("127.0.0.1", gate_port)
        self.kamailio: tuple[str, int] | None = None
        self.lost: dict[str, str] = {}  # Call-ID -> the attempt of A's lost 302
        self.probe_answered = asyncio.Event()
        self.front: asyncio.DatagramTransport | None = None
        self.back: asyncio.DatagramTransport | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        front = self

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                front.from_gate(data)

        self.back, _ = await loop.create_datagram_endpoint(Back, local_addr=("127.0.0.1", 0))
        self.front, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        return int(self.front.get_extra_info("sockname")[1])

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.kamailio = addr
        assert self.back is not None
        self.back.sendto(data, self.gate)

    def from_gate(self, data: bytes) -> None:
        head = data.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
        cseq = re.search(r"(?im)^CSeq:\s*\d+\s+(\w+)", head)
        if cseq and cseq.group(1).upper() == "INVITE":
            if head.startswith("SIP/2.0 302"):
                call_id = re.search(r"(?im)^(?:Call-ID|i):\s*(\S+)", head)
                attempt = re.search(r"(?im)^X-DialGate-Attempt:\s*(\S+)", head)
                assert call_id and attempt, head
                self.lost[call_id.group(1)] = attempt.group(1)
            return
        if cseq and cseq.group(1).upper() == "OPTIONS" and head.startswith("SIP/2.0 200"):
            self.probe_answered.set()
        if self.front is not None and self.kamailio is not None:
            self.front.sendto(data, self.kamailio)

    def close(self) -> None:
        for t in (self.front, self.back):
            if t is not None:
                t.close()


async def test_a_302_lost_between_a_gate_and_kamailio_is_retried_on_the_other_gate_and_counted_once(
    pg_url: str, workdir: Path,
) -> None:
    calls = [(f"LOST-{i}", f"1370000777{i}") for i in range(1, 5)]
    cases = [one_case(case_id, CREDITOR, "col-s", number) for case_id, number in calls]
    front: LossyFront | None = None

    async def in_front_of_a(port: int) -> int:
        nonlocal front
        front = LossyFront(port)
        return await front.start()

    try:
        async with two_gates(pg_url, workdir, cases, front_a=in_front_of_a) as world:
            assert front is not None
            answers = {}
            for case_id, number in calls:
                # A back in the rotation (it answered a probe) before each call, so the
                # round robin sends some calls to A first.
                front.probe_answered.clear()
                await asyncio.wait_for(front.probe_answered.wait(), 10)
                client = UdpClient(world.kport)
                try:
                    me = client.sock.getsockname()[1]
                    invite = make_invite(number, gate_port=world.kport, from_user="1002", call_id=f"{case_id}@pbx",
                                         via_host=f"127.0.0.1:{me}", extra=f"X-Case-ID: {case_id}\r\n")
                    answers[case_id] = await client.request(invite, timeout=15)
                finally:
                    client.close()

            # Kamailio followed a 302 for every call (its own routing finds no phone: 404).
            assert {c: a.status for c, a in answers.items()} == {c: 404 for c, _ in calls}, world.kamailio_log()
            assert front.lost, "no call went to gate A first"
            attempts = await world.rows("SELECT id, case_id FROM attempts WHERE case_id LIKE 'LOST-%' ORDER BY case_id")
            assert [r["case_id"] for r in attempts] == [c for c, _ in calls]
            by_case = {r["case_id"]: r["id"] for r in attempts}
            for call_id, attempt in front.lost.items():
                assert by_case[call_id.removesuffix("@pbx")] == attempt  # B answered with A's attempt
            decisions = await world.rows(
                "SELECT case_id, allowed FROM decisions WHERE kind = 'dial' AND case_id LIKE 'LOST-%' ORDER BY case_id")
            assert [(d["case_id"], d["allowed"]) for d in decisions] == [(c, True) for c, _ in calls]
    finally:
        if front is not None:
            front.close()
