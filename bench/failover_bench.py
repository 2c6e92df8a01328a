"""Failover figures: two `dialgate serve` gates behind Kamailio's dispatcher, on a
private PostgreSQL primary with a synchronous standby, under steady sipp load.

    .venv/bin/python bench/failover_bench.py [--rate 30] [--seconds 20] [--event-at 6]
                                             [--scenarios gate,db]

Scenarios, each on a fresh pair of gates and a fresh database pair:

* ``gate``: gate A killed with SIGKILL (the service and its SIP edge process);
* ``db``: the PostgreSQL primary killed with SIGKILL and the synchronous standby
  promoted at once (``pg_ctl promote``); both gates reconnect through their
  multi-host store URL (``target_session_attrs=read-write``) without a restart.

Every INVITE dials a number of its own on a case of its own, so every call is expected
to be placed (behind the loopback Kamailio a placed call ends in 404: no phone is
registered). Printed per scenario, beside its anchor measured in the same run: the
INVITEs not placed (603 from a gate or from Kamailio, 503) in the seconds after the
event, against the same stretch of steady load just before it (a loaded machine sheds
some calls with ``system.overloaded`` whatever happens), with their Reason texts; the
longest silence between two placed calls around the event and when decisions flowed
again, counted from the event; and every call without a final answer (sipp's receive
time-out, 10 s). The machine's load average is printed before and after: the figures
of a shared machine read as such.

Needs Kamailio, sipp (``sip-tester``) and the PostgreSQL server programs (scripts/setup.sh
--services); runs as root (the database servers run as ``postgres``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# the two-gate harness and the sipp driver are the integration tests' own
sys.path.insert(0, str(REPO / "tests" / "integration" / "sip"))
sys.path.insert(0, str(REPO / "tests" / "integration" / "store"))

from gate_store_support import free_port, one_case  # noqa: E402
from pg_ha import PgPair  # noqa: E402
from sipp_load import SippLoad, SippResult  # noqa: E402
from two_gates import CREDITOR, two_gates  # noqa: E402


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def run(kind: str, rate: int, seconds: int, event_at: float, first: int) -> tuple[SippResult, dict[str, float]]:
    pair = PgPair(free_port(), free_port())
    marks: dict[str, float] = {}
    try:
        pair.start()
        pair.psql(pair.primary_port, "CREATE DATABASE dialgate")
        url = (f"postgresql+asyncpg://postgres@/dialgate?host=127.0.0.1:{pair.primary_port}"
               f"&host=127.0.0.1:{pair.standby_port}&target_session_attrs=read-write")
        numbers = [str(13100000000 + first + i) for i in range(rate * seconds)]
        cases = [one_case(f"B-{first + i}", CREDITOR, "col-k", n) for i, n in enumerate(numbers)]
        with tempfile.TemporaryDirectory(prefix="dialgate-failover-") as tmp:
            workdir = Path(tmp)
            # as the PostgreSQL failover test: a dead primary fails a decision in 2 s, not 5
            async with two_gates(url, workdir, cases, env={"DIALGATE_STORE_TIMEOUT_S": "2"}) as world:
                sipp = SippLoad(world.kport, numbers, rate, workdir / "sipp", recv_timeout_s=10)
                sipp.start()
                await asyncio.sleep(event_at)  # steady load first
                marks["event"] = sipp.elapsed()
                if kind == "gate":
                    os.killpg(world.gates[0].pid, signal.SIGKILL)
                else:
                    pair.kill_primary()
                    began = time.monotonic()
                    await asyncio.to_thread(pair.promote)
                    marks["promotion_s"] = time.monotonic() - began
                result = await asyncio.to_thread(sipp.wait, seconds + 180)
    finally:
        pair.close()
    return result, marks


def report(kind: str, result: SippResult, marks: dict[str, float], window: float) -> str:
    t = marks["event"]
    after = result.not_placed(t, t + window)
    before = result.not_placed(t - window, t)
    reasons = collections.Counter(f"{status} {rule or '(no Reason)'}" for _, status, rule in after)
    inside = [x for x in result.placed_at if t - 0.5 <= x <= t + window]
    gaps = [(b - a, b) for a, b in zip(inside, inside[1:])]
    silence, resumed = max(gaps) if gaps else (float("nan"), float("nan"))  # its length, and when it ended
    what = {"gate": "gate A killed (SIGKILL)", "db": "PostgreSQL primary killed, synchronous standby promoted"}[kind]
    extra = f"; promotion took {marks['promotion_s']:.2f} s" if "promotion_s" in marks else ""
    return (
        f"{what}: {result.calls} INVITEs, placed {result.placed}, not placed {result.declined + result.unavailable}, "
        f"no final answer {result.failed}\n"
        f"  not placed in the {window:g} s after the event: {len(after)} ({', '.join(f'{n} x {r}' for r, n in reasons.most_common()) or 'none'})"
        f"  | anchor, the {window:g} s of steady load before it: {len(before)}\n"
        f"  longest silence between placed calls from 0.5 s before to {window:g} s after the event: {silence:.2f} s, "
        f"ending {resumed - t:.2f} s after the event (decisions flowing again){extra}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=30, help="INVITEs a second (sipp)")
    ap.add_argument("--seconds", type=int, default=20, help="length of the load")
    ap.add_argument("--event-at", type=float, default=6.0, help="seconds of steady load before the kill")
    ap.add_argument("--window", type=float, default=5.0, help="seconds after the event that are counted")
    ap.add_argument("--scenarios", default="gate,db")
    args = ap.parse_args()
    print(f"two gates behind Kamailio's dispatcher, PostgreSQL with a synchronous standby, sipp at {args.rate}/s "
          f"for {args.seconds} s, the event at {args.event_at:g} s; load average at start {load()}", flush=True)
    for n, kind in enumerate(s for s in args.scenarios.split(",") if s):
        result, marks = asyncio.run(run(kind, args.rate, args.seconds, args.event_at, n * 10**6))
        print(report(kind, result, marks, args.window), flush=True)
    print(f"load average at the end {load()}")


if __name__ == "__main__":
    main()
