"""Two `dialgate serve` gates on one PostgreSQL: the same INVITE (the same Call-ID, From
tag and CSeq) at both gates, at once or one after the other (the first 302 lost, the
PBX or its dispatcher trying the other gate with a Via branch of its own), is decided
and counted once, and both gates answer it with the same 302 (or the same 603)."""

from __future__ import annotations

import asyncio
import os
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
