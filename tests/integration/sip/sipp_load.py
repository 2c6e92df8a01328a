"""Steady sipp load through Kamailio's dispatcher (two_gates.py): one INVITE per
number, every number on a case of its own, so every call is expected to be placed.

Behind the loopback Kamailio an allowed call comes back to Kamailio and finds no phone:
its final answer is 404, which means "placed". A 603 (a block, `system.store_unavailable`,
`system.gate_unavailable`) or a 503 means "not placed"; a call with no final answer
within ``recv_timeout`` is sipp's failed call. sipp's round-trip trace records the time
of every placed call's answer (``placed_at``, seconds since sipp started), from which
the outage around an event is the longest silence between two placed calls.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SIPP = os.environ.get("SIPP", "/usr/bin/sipp")

SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<!-- One outbound call through the proxy: INVITE, provisional answers, then 404 (placed:
     the gate's 302 was followed and no phone is there), 503 or 603 (not placed); ACK. -->
<scenario name="dialgate-dispatcher">
  <send retrans="500" start_rtd="1">
    <![CDATA[
INVITE sip:[field0]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
From: "Agent 1001" <sip:1001@[local_ip]:[local_port]>;tag=[pid]-[call_number]
To: <sip:[field0]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:1001@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=1001 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0 8
a=rtpmap:0 PCMU/8000

]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="404" optional="true" rtd="1" next="ack">
    <action><log message="final [clock_tick] 404 -"/></action>
  </recv>
  <recv response="503" optional="true" next="ack">
    <action>
      <ereg regexp="text=.([a-z_.]+)" search_in="hdr" header="Reason:" check_it="false" assign_to="r503,why503"/>
      <log message="final [clock_tick] 503 [$why503] [$r503]"/>
    </action>
  </recv>
  <recv response="603">
    <action>
      <ereg regexp="text=.([a-z_.]+)" search_in="hdr" header="Reason:" check_it="false" assign_to="r603,why603"/>
      <log message="final [clock_tick] 603 [$why603] [$r603]"/>
    </action>
  </recv>
  <label id="ack"/>
  <send>
    <![CDATA[
ACK sip:[field0]@[remote_ip]:[remote_port] SIP/2.0
[last_Via:]
From: "Agent 1001" <sip:1001@[local_ip]:[local_port]>;tag=[pid]-[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]>
  </send>
</scenario>
"""


def sipp_available() -> bool:
    return shutil.which(SIPP) is not None or Path(SIPP).exists()


@dataclass
class SippResult:
    calls: int  # INVITEs sent
    placed: int  # final 404
    declined: int  # final 603
    unavailable: int  # final 503
    failed: int  # no final answer within the receive time-out (or another failure)
    placed_at: list[float] = field(default_factory=list)  # answer times, seconds since sipp started
    finals: list[tuple[float, int, str]] = field(default_factory=list)  # (seconds since sipp started, status, rule)

    def not_placed(self, start: float, end: float) -> list[tuple[float, int, str]]:
        """The answers other than "placed" that came between ``start`` and ``end``."""
        return [f for f in self.finals if start <= f[0] <= end and f[1] != 404]

    def outage(self, at: float, before: float = 0.5, after: float = 10.0) -> float:
        """The longest silence between placed calls from ``before`` s before ``at`` to
        ``after`` s after it (``at`` in sipp's time)."""
        inside = [t for t in self.placed_at if at - before <= t <= at + after]
        gaps = [b - a for a, b in zip(inside, inside[1:])]
        return max(gaps) if gaps else float("nan")


class SippLoad:
    """``start()`` sipp at ``rate`` calls/s over ``numbers`` against 127.0.0.1:``port``;
    ``elapsed()`` in sipp's time (seconds since it started); ``wait()`` for the result."""

    def __init__(self, port: int, numbers: list[str], rate: int, run_dir: Path, recv_timeout_s: float = 10.0) -> None:
        self.port, self.numbers, self.rate, self.run = port, numbers, rate, run_dir
        self.recv_timeout_s = recv_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> None:
        from tests.integration.store.gate_store_support import free_port

        self.run.mkdir(parents=True, exist_ok=True)
        (self.run / "scenario.xml").write_text(SCENARIO)
        with open(self.run / "numbers.csv", "w") as f:
            f.write("SEQUENTIAL\n")
            f.writelines(f"{n}\n" for n in self.numbers)
        cmd = [SIPP, f"127.0.0.1:{self.port}", "-sf", "scenario.xml", "-inf", "numbers.csv", "-i", "127.0.0.1",
               "-p", str(free_port()), "-m", str(len(self.numbers)), "-r", str(self.rate), "-rp", "1000",
               "-l", str(20 * self.rate), "-recv_timeout", str(int(self.recv_timeout_s * 1000)),
               "-trace_rtt", "-rtt_freq", "1", "-trace_stat", "-fd", "1", "-trace_counts", "-trace_logs", "-timeout", "600s",
               "-nostdin"]
        self.started = time.monotonic()
        with open(self.run / "sipp.stderr", "wb") as stderr:  # sipp keeps its own descriptor
            self.proc = subprocess.Popen(cmd, cwd=self.run, stdout=subprocess.DEVNULL, stderr=stderr)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def wait(self, timeout: float = 600) -> SippResult:
        assert self.proc is not None
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        counts = _last_row(self.run, "*_counts.csv")
        stats = _last_row(self.run, "*_.csv")
        placed_at: list[float] = []
        for path in self.run.glob("*_rtt.csv"):
            with open(path) as f:
                for row in csv.reader(f, delimiter=";"):
                    if row and row[0][:1].isdigit():
                        # sipp stamps the call's start: its answer came response_time later
                        placed_at.append((float(row[0]) + float(row[1])) / 1000)
        placed_at.sort()
        finals: list[tuple[float, int, str]] = []
        for path in self.run.glob("*_logs.log"):
            for line in path.read_text(errors="replace").splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[0] == "final" and parts[1].isdigit() and parts[2].isdigit():
                    # the Reason's rule text ("-" for a placed call; none when absent)
                    finals.append((int(parts[1]) / 1000, int(parts[2]), parts[3] if len(parts) > 3 else ""))
        finals.sort()

        def n(key: str, source: dict[str, str]) -> int:
            return int(source.get(key, "0") or 0)

        return SippResult(
            calls=n("TotalCallCreated", stats) or len(self.numbers),
            placed=n("2_404_Recv", counts), unavailable=n("3_503_Recv", counts), declined=n("4_603_Recv", counts),
            failed=n("FailedCall(C)", stats), placed_at=placed_at, finals=finals,
        )


def _last_row(run: Path, pattern: str) -> dict[str, str]:
    for path in sorted(run.glob(pattern)):
        with open(path) as f:
            rows = [r for r in csv.reader(f, delimiter=";") if r]
        if len(rows) >= 2:
            return dict(zip(rows[0], rows[-1]))
    return {}
