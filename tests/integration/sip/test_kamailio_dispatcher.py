"""Two `dialgate serve` gates on one PostgreSQL behind a real Kamailio dispatcher
(deploy/kamailio/start.sh --gate A --gate2 B): with gate A frozen (SIGSTOP), then
killed (SIGKILL), every INVITE still gets its final answer from B, decided once; a gate's 603 is never asked
again of the other gate; with no gate left Kamailio declines with 603
`system.gate_unavailable`. With only A's service process frozen and its SIP edge
process alive (the edge answers, the decisions do not come), the calls still go to B:
the edge's 503 is no block."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kamailio_proc import kamailio_available
from sipclient import UdpClient, make_invite
from tests.conftest import require_service
from tests.integration.store.gate_store_support import one_case, pg_url, workdir  # noqa: F401 - fixtures
from two_gates import CREDITOR, two_gates

pytestmark = [pytest.mark.kamailio, pytest.mark.slow]


async def _ask(kport: int, number: str, timeout: float = 8.0) -> Any:
    """One INVITE through Kamailio; its final response."""
    client = UdpClient(kport)
    try:
        me = client.sock.getsockname()[1]
        return await client.request(make_invite(number, gate_port=kport, via_host=f"127.0.0.1:{me}"), timeout)
    finally:
        client.close()


async def test_a_frozen_gate_is_skipped_a_block_is_final_and_no_gate_means_603(pg_url: str, workdir: Path) -> None:
    require_service("kamailio", kamailio_available(), "apt-get install kamailio (scripts/setup.sh --services)")
    numbers = [f"1370000{i:04d}" for i in range(60)]
    cases = [one_case(f"K-{i}", CREDITOR, "col-k", n) for i, n in enumerate(numbers)]
    async with two_gates(pg_url, workdir, cases) as world:
        kport, gates, run_dir = world.kport, world.gates, world.run_dir
        # Both gates up: calls are placed (round robin), each decided once.
        answers = [await _ask(kport, n) for n in numbers[:6]]
        assert [a.status for a in answers] == [404] * 6, [a.get("Reason") for a in answers]
        # A block is final: the 603 of whichever gate decided goes back as is, and the
        # other gate is never asked (one decision per INVITE, not two).
        decided = await world.count("SELECT count(*) FROM decisions")
        blocked = [await _ask(kport, f"1360000{i:04d}") for i in range(4)]
        assert [b.status for b in blocked] == [603] * 4
        assert all("system.gate_unavailable" not in (b.get("Reason") or "") for b in blocked)
        assert await world.count("SELECT count(*) FROM decisions") == decided + 4

        # The whole instance: the service and its SIP edge process.
        os.killpg(gates[0].pid, signal.SIGSTOP)
        before = await world.count("SELECT count(*) FROM attempts")
        started = asyncio.get_running_loop().time()
        answers = await asyncio.gather(*(_ask(kport, n) for n in numbers[6:26]))
        print(f"gate A frozen: 20 INVITEs answered in {asyncio.get_running_loop().time() - started:.2f} s, "
              f"{sum(a.status != 404 for a in answers)} not placed")
        assert [a.status for a in answers] == [404] * 20, (Path(run_dir) / "kamailio.log").read_text(errors="replace")[-3000:]  # all placed, by B
        assert await world.count("SELECT count(*) FROM attempts") == before + 20

        # Gate A dies outright (kill -9): its port is closed, B still places every call.
        os.killpg(gates[0].pid, signal.SIGKILL)
        gates[0].wait(timeout=10)
        answers = await asyncio.gather(*(_ask(kport, n) for n in numbers[26:30]))
        assert [a.status for a in answers] == [404] * 4
        assert await world.count("SELECT count(*) FROM attempts") == before + 24
        before += 24

        os.killpg(gates[1].pid, signal.SIGSTOP)
        none_left = await _ask(kport, numbers[30])
        assert none_left.status == 603 and "system.gate_unavailable" in (none_left.get("Reason") or "")
        assert await world.count("SELECT count(*) FROM attempts") == before  # none placed


def _children(pid: int) -> list[int]:
    done = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in done.stdout.split()]


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


async def _stopped(pid: int) -> bool:
    """Whether ``pid`` reached the stopped state (the signal is delivered asynchronously)."""
    for _ in range(500):
        if _state(pid) == "T":
            return True
        await asyncio.sleep(0.01)
    return False


async def test_a_gate_whose_service_is_frozen_behind_its_live_edge_is_skipped_not_taken_for_a_block(
    pg_url: str, workdir: Path,
) -> None:
    require_service("kamailio", kamailio_available(), "apt-get install kamailio (scripts/setup.sh --services)")
    numbers = [f"1350000{i:04d}" for i in range(30)]
    cases = [one_case(f"F-{i}", CREDITOR, "col-k", n) for i, n in enumerate(numbers)]
    async with two_gates(pg_url, workdir, cases) as world:
        main = world.gates[0].pid
        edges = [p for p in _children(main) if _state(p) != "T"]
        assert edges, "gate A runs its SIP edge in a child process"
        os.kill(main, signal.SIGSTOP)  # the service only: its edge keeps answering SIP
        try:
            assert await _stopped(main) and all(_state(p) != "T" for p in edges)
            before = await world.count("SELECT count(*) FROM attempts")
            first = await _ask(world.kport, numbers[0], timeout=15)  # round robin may pick A first
            rest = await asyncio.gather(*(_ask(world.kport, n, timeout=15) for n in numbers[1:20]))
            placed = await world.count("SELECT count(*) FROM attempts")
        finally:
            os.kill(main, signal.SIGCONT)
        answers = [first, *rest]
        # every call placed (by B), none declined: on the old edge A's 603 store_unavailable came back as final
        assert [(a.status, a.get("Reason")) for a in answers] == [(404, None)] * 20, world.kamailio_log()
        assert placed == before + 20
