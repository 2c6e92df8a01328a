"""An edge process killed under load (sipp at 300 INVITEs/s) is restarted at once (from
its imported spare) and decides again: five kills in a row, each followed by one exit and one restart, no failed
restart, no link refused, and every call sipp placed answered. The outage of each kill
(from the kill to the first decision of the new edge) is printed; `bench/sip_bench.py
--restart-kills` reports it beside the normal figures."""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import time
from pathlib import Path


from adapters.sip import edge_process
from adapters.sip.edge import SipEdgeProcess
from tests.conftest import captured_logs
from tests.support.sip_fakes import RecordingSipAuthorizer, allow_all
from tests.support.net import free_tcp_and_udp_port as free_port
from sipclient import GATE_CONFIG, wait_until
from tests.conftest import require_service

SIPP = "/usr/bin/sipp"
RATE = 300
KILLS = 5

SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="dialgate-restart">
  <send retrans="500">
    <![CDATA[
INVITE sip:[field0]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
From: <sip:1001@[local_ip]:[local_port]>;tag=[pid]-[call_number]
To: <sip:[field0]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:1001@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="302" optional="true" next="ack"/>
  <recv response="503" optional="true" next="ack"/>
  <recv response="603"/>
  <label id="ack"/>
  <send>
    <![CDATA[
ACK sip:[field0]@[remote_ip]:[remote_port] SIP/2.0
[last_Via:]
From: <sip:1001@[local_ip]:[local_port]>;tag=[pid]-[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]>
  </send>
</scenario>
"""


async def test_an_edge_killed_five_times_under_300_invites_a_second_decides_again_each_time(tmp_path: Path):
    require_service("sipp", Path(SIPP).exists(), "apt-get install sip-tester")
    port = free_port()
    decided_at: list[float] = []

    def allow(invite):  # noqa: ANN001
        decided_at.append(time.monotonic())
        return allow_all(invite)

    authorizer = RecordingSipAuthorizer(allow)
    calls = RATE * 30  # more than the kills need: sipp is stopped once they are done
    (tmp_path / "scenario.xml").write_text(SCENARIO)
    (tmp_path / "numbers.csv").write_text("SEQUENTIAL\n" + "".join(f"139{i:08d}\n" for i in range(calls)))
    config = {**GATE_CONFIG, "listen": f"127.0.0.1:{port}", "edge": "process"}
    outages: list[float] = []
    with captured_logs(edge_process) as logs:
        async with SipEdgeProcess(authorizer, config, stable_after=0.5) as edge:
            sipp = await asyncio.create_subprocess_exec(
                SIPP, f"127.0.0.1:{port}", "-sf", "scenario.xml", "-inf", "numbers.csv", "-i", "127.0.0.1",
                "-p", str(free_port()), "-m", str(calls), "-r", str(RATE), "-rp", "1000", "-l", "3000",
                "-trace_stat", "-fd", "1", "-trace_counts", "-trace_err", "-nostdin", "-timeout", "120s",
                cwd=tmp_path, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                for kill in range(KILLS):
                    seen = len(decided_at)
                    await wait_until(lambda: len(decided_at) >= seen + 2 * RATE, 30, "two seconds of decisions")
                    pid = edge.pid
                    assert pid is not None
                    killed_at = time.monotonic()
                    os.kill(pid, signal.SIGKILL)
                    await wait_until(lambda: edge.restarts == kill + 1 and edge.listening, 30, "the edge's restart")
                    await wait_until(lambda: decided_at[-1] > killed_at, 30, "a decision by the new edge")
                    outages.append(min(t for t in decided_at if t > killed_at) - killed_at)
                seen = len(decided_at)
                await wait_until(lambda: len(decided_at) >= seen + RATE, 30, "decisions after the last restart")
            finally:
                sipp.send_signal(signal.SIGUSR1)  # sipp: stop placing calls, finish those in flight
                await asyncio.wait_for(sipp.wait(), 90)
    print(f"outages after each kill -9 at {RATE} INVITEs/s: {', '.join(f'{o:.2f} s' for o in outages)}; "
          f"answers dropped with the killed edges: {sum(e['event'] == 'sip.edge_answer_dropped' for e in logs)}")
    events = [e["event"] for e in logs if e["event"].startswith("sip.edge_")]
    assert events == ["sip.edge_exited", "sip.edge_restarted"] * KILLS  # never a failed restart or refused link
    assert [e["restart_in_s"] for e in logs if e["event"] == "sip.edge_exited"] == [0.05] * KILLS
    [counts] = [p for p in tmp_path.glob("*_counts.csv")]
    with counts.open() as f:
        rows = [r for r in csv.reader(f, delimiter=";") if r]
    last = dict(zip(rows[0], rows[-1]))
    with next(tmp_path.glob("*_.csv")).open() as f:
        stats = [r for r in csv.reader(f, delimiter=";") if r]
    errors = "".join(p.read_text()[-2000:] for p in tmp_path.glob("*_errors.log"))
    assert int(dict(zip(stats[0], stats[-1]))["FailedCall(C)"]) == 0, errors  # every call sipp placed got its answer
    assert int(last.get("2_302_Recv", "0")) > KILLS * RATE
