"""SIP gate benchmark: sipp INVITEs against the DialGate SIP gate and, as the anchor,
Kamailio configured as a trivial static redirect server, in the same run.

    .venv/bin/python bench/sip_bench.py [--rates 500,2000] [--seconds 5]
        [--ladder 250,500,1000,...] [--ladder-seconds 4] [--capacity-p99-ms 50]
        [--closed 16,128] [--closed-calls 10000] [--targets kamailio-static,gate-memory,gate-sqlite,gate-sqlite-edge]

Targets (each started fresh by this script on free loopback ports):

* ``kamailio-static``  deploy/kamailio/start.sh --static-redirect: stateless 302 for
  every INVITE, no policy, no state (C, 2 UDP worker processes): the physical anchor.
* ``gate-memory``      the SIP gate with an in-memory authorizer (parser, transaction
  table and listener only: the SIP edge's own cost).
* ``gate-sqlite``      the SIP gate inside the real service: RequestDial on a SQLite
  file (decide, reserve the attempt, append to the decision log and the outbox in one
  write transaction; ``synchronous=FULL``, the service's default), with the service's
  structured logging on.
* ``gate-sqlite-edge``  the same service with ``[sip] edge = "process"``: the SIP
  listener (parsing, transactions, answers) in a child process, the service process
  only deciding; the target's CPU is both processes'.
* ``gate-sqlite-normal``  the same as gate-sqlite with ``sqlite_synchronous = "NORMAL"`` (opt-in with
  ``--targets``).

Every call has a distinct number (an injection CSV); for gate-sqlite each number is an
active case of its own assigned to the calling agent, so the policy allows it (302) and
no call is refused for a cap another call used up. Headers are realistic (From
extension, P-Asserted-Identity of a registered line, SDP). A call is "answered" when its
final response (302, 603 or 503) arrives, "decided" when that is a 302 or a 603 (a 503
sheds the call under overload: no decision); its latency is sipp's response time from
the INVITE to that final response (1 ms resolution). Each target gets, in this order
(and the next run starts only once the target is idle again):

1. the capacity: open-loop steps up the ``--ladder`` until one is not sustained (a call
   unanswered, shed, retransmitted or failed, p99 over ``--capacity-p99-ms``, or under
   97% of the offer decided; a failed step is run once more, ``--retries``), then one
   step between the last good and the first bad;
   the capacity is the highest sustained offered rate;
2. fixed open-loop loads (``--rates``): decided/s, p50/p99, the share of 302 and 603,
   503s, INVITE retransmissions and failed calls;
3. closed loops (``--closed``: that many calls in flight, a new one as soon as one is
   answered): the peak rate with its latency, for comparison with earlier figures.

Every run prints the CPU used by the target (all its processes and threads; also per answered
call, ``us/call``, the figure least skewed by other work) and by sipp,
each as a share of one core, and the whole machine's busy share: on a 2-core machine
sipp competes with the target, and other work on the machine skews every figure. The
summary gives each target's capacity and the gate/Kamailio ratios.
"""


from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.net import free_tcp_and_udp_port as free_port  # noqa: E402  (sipp and the gate listen on UDP and TCP)

SIPP = os.environ.get("SIPP", "/usr/bin/sipp")
FIRST_NUMBER = 13900000000  # distinct debtor numbers 139xxxxxxxx

SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<!-- One outbound call asked of a redirect server: INVITE, optional 100, final 302, 603
     (or 503 when the gate sheds load), ACK (the ACK of a non-2xx final response reuses
     the INVITE's Via/branch). -->
<scenario name="dialgate-invite">
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
P-Asserted-Identity: "Collections line" <sip:+862161234567@[local_ip]>
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS
User-Agent: DialGate-bench sipp
Content-Type: application/sdp
Content-Length: [len]

v=0
o=1001 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=sendrecv

]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="302" optional="true" rtd="1" next="ack"/>
  <recv response="503" optional="true" rtd="1" next="ack"/>
  <recv response="603" rtd="1"/>
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


def numbers(start: int, count: int) -> list[str]:
    return [str(FIRST_NUMBER + start + i) for i in range(count)]


# --------------------------------------------------------------------------------------
# Gate processes (this file re-runs itself with --serve)


async def serve(kind: str, port: int, cases: int, data_dir: str) -> None:
    import structlog

    if kind == "memory":
        from tests.support.sip_fakes import HourlyCapSipAuthorizer
        from adapters.sip.server import SipServer

        import logging

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
        async with SipServer(HourlyCapSipAuthorizer(per_hour=10**9), port=port):
            from dialer.app import freeze_long_lived

            # as `dialgate serve` (and gate-sqlite here) does: the edge measured as deployed
            freeze_long_lived()
            print("READY", flush=True)
            await asyncio.Event().wait()
        return

    async with service(kind, port, cases, data_dir):
        from dialer.app import freeze_long_lived

        freeze_long_lived()  # as `dialgate serve` does once started
        print("READY", flush=True)
        await asyncio.Event().wait()


@contextlib.asynccontextmanager
async def service(kind: str, port: int, cases: int, data_dir: str) -> Any:
    """The real service (SQLite in ``data_dir``, SIP gate on ``port``) with ``cases``
    active cases, one per number, assigned to col-a (extension 1001); yields its services."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from dialer.app import build_app
    from dialer.auth import add_user
    from dialer.clock import FixedClock
    from dialer.config import build_config
    from dialer.imports import parse_cases_payload
    from dialer.logs import configure_logging

    cfg = build_config(
        {
            "paths": {"data_dir": data_dir},
            # FULL (the default): an allowed answer survives power loss; NORMAL is faster
            "store": {"sqlite_synchronous": "NORMAL" if kind == "service-normal" else "FULL"},
            "sip": {
                "listen": f"127.0.0.1:{port}",
                "route": "sip:{number}@127.0.0.1:5080",
                "extensions": {"1001": "col-a"},
                "registered_lines": {"bank-a": ["+862161234567"]},
                "trusted_peers": ["127.0.0.1"],
                # gate-sqlite-edge: the listener in a child process, the service decides
                "edge": "process" if kind == "service-edge" else "inline",
            },
        }
    )
    configure_logging(cfg.log.level, cfg.log.json)  # as `dialgate serve` does: one JSON line per event
    # A fixed Tuesday 10:00 in Shanghai: inside the calling window whenever the bench runs.
    clock = FixedClock(datetime(2026, 11, 24, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai")))
    app = build_app(cfg, clock=clock)
    async with app.router.lifespan_context(app):
        svc = app.state.services
        await add_user(svc.store, clock, "col-a", "collector", frozenset({"bank-a"}))
        data, _ = await add_user(svc.store, clock, "data-a", "data", frozenset({"bank-a"}))
        all_numbers = numbers(0, max(cases, 1))
        doc = {
            "case_id": "B-0", "creditor": "bank-a", "debtor_name": "压测", "status": "active",
            "commission_start": "2026-11-01", "commission_end": "2027-01-31", "assigned_agent": "col-a",
            "contacts": [{"number": all_numbers[0], "relation": "self"}],
        }
        # the first case through the import use case (creates the creditor), the rest in bulk
        await svc.gate.import_cases(data, parse_cases_payload({"cases": [doc]}, svc.region_of))
        await bulk_cases(svc, all_numbers[1:], clock.now())
        yield svc


async def bulk_cases(svc: Any, nums: list[str], now: Any) -> None:
    """Seed one active case per number (assigned to col-a) straight into the tables:
    the import use case is far slower than the benchmark itself and is not measured."""
    from datetime import date

    from sqlalchemy import func, insert, select

    from adapters.db import tables

    async with svc.store.write() as uow:
        base = (await uow.conn.execute(select(func.max(tables.cases.c.id)))).scalar_one() or 0
        for start in range(0, len(nums), 5000):
            chunk = nums[start : start + 5000]
            await uow.conn.execute(
                insert(tables.cases),
                [
                    {
                        "id": base + 1 + start + i, "creditor": "bank-a", "case_id": f"B-{n}", "debtor_name": "压测",
                        "status": "active", "commission_start": date(2026, 11, 1), "commission_end": date(2027, 1, 31),
                        "assigned_agent": "col-a", "flags": "", "follow_up_status": "new", "event_seq": 0,
                        "created_at": now, "updated_at": now,
                    }
                    for i, n in enumerate(chunk)
                ],
            )
            await uow.conn.execute(
                insert(tables.contacts),
                [
                    {"case_pk": base + 1 + start + i, "number": "+86" + n, "relation": "self", "status": "valid",
                     "do_not_call": False, "source": "creditor", "added_at": now}
                    for i, n in enumerate(chunk)
                ],
            )


@dataclass
class Target:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    workdir: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def wait_ready(proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    os.set_blocking(proc.stdout.fileno(), False)
    buf = b""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {buf[-2000:].decode(errors='replace')}")
        chunk = proc.stdout.read() or b""
        buf += chunk
        if b"READY" in buf:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready within {timeout} s")


SERVICE_KINDS = {"gate-sqlite": "service", "gate-sqlite-edge": "service-edge", "gate-sqlite-normal": "service-normal"}
SERVICE_TARGETS_BY_KIND = {kind: name for name, kind in SERVICE_KINDS.items()}


def start_gate(kind: str, workdir: Path, cases: int) -> Target:
    port = free_port()
    data_dir = workdir / f"data-{kind}"
    data_dir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--port", str(port), "--cases", str(cases), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True, cwd=REPO,
    )
    # the service logs every decision to stdout: keep reading only until READY, then drain to /dev/null
    wait_ready(proc, 600, f"gate-{kind}")
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), True)
    threading.Thread(target=_drain, args=(proc.stdout,), name=f"drain-{kind}", daemon=True).start()
    name = SERVICE_TARGETS_BY_KIND.get(kind, f"gate-{kind}")
    return Target(name, port, proc, workdir)


def _drain(stream: Any) -> None:
    while stream.read(65536):
        pass


def start_kamailio(workdir: Path) -> Target:
    port = free_port()
    run_dir = workdir / "kamailio"
    proc = subprocess.Popen(
        ["bash", str(REPO / "deploy/kamailio/start.sh"), "--static-redirect", "--foreground",
         "--port", str(port), "--run-dir", str(run_dir), "--gate", "127.0.0.1:9"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 20
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        s.bind(("127.0.0.1", 0))
        lp = s.getsockname()[1]
        n = 0
        while True:
            n += 1
            s.sendto(
                (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{lp};branch=z9hG4bKr{n}\r\n"
                 f"From: <sip:b@127.0.0.1>;tag=b\r\nTo: <sip:127.0.0.1>\r\nCall-ID: ready{n}\r\nCSeq: 1 OPTIONS\r\n"
                 "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(),
                ("127.0.0.1", port),
            )
            try:
                if s.recv(4096).startswith(b"SIP/2.0 200"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("kamailio did not start")
    return Target("kamailio-static", port, proc, workdir)


# --------------------------------------------------------------------------------------
# CPU accounting: is sipp starving the target on this machine?

CLK = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """User+system CPU seconds of every live process in the process group (threads included)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:  # pgrp
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLK


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return total - idle, total


def cpu_info() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model or 'unknown model'})"


# --------------------------------------------------------------------------------------
# sipp runs


@dataclass
class Result:
    target: str
    kind: str  # "fixed", "ladder", "closed"
    offered: int  # calls/s asked of sipp (0: closed loop, as fast as answers come)
    limit: int  # sipp -l: calls in flight at most
    calls: int
    answered: int
    per_s: float  # decisions (302 or 603) per second, from the first to the last final response
    p50_ms: float
    p99_ms: float
    finals: dict[str, int]
    cpu_sipp: float  # share of one core
    cpu_target: float  # share of one core (all its processes and threads)
    cpu_machine: float  # share of all cores, everything on the machine
    cpu_target_s: float = 0.0  # CPU seconds the target used during the run

    @property
    def cpu_us_per_call(self) -> float:
        """The target's CPU per answered call (INVITE and its ACK), all threads: the
        figure least skewed by other work on the machine."""
        return self.cpu_target_s / self.answered * 1e6 if self.answered else float("nan")

    @property
    def label(self) -> str:
        return f"{self.offered}/s" if self.offered else f"closed-{self.limit}"

    def passes(self, p99_bound_ms: float) -> bool:
        """Sustained: every call answered (no 503 shed, no failure, no INVITE
        retransmission), p99 within the bound, answered rate keeping up with the offer."""
        f = self.finals
        return (
            self.answered == self.calls
            and f["503"] == 0
            and f["failed"] == 0
            and f["INVITE retrans"] == 0
            and self.p99_ms <= p99_bound_ms
            and self.per_s >= 0.97 * self.offered
        )


def run_sipp(target: Target, rate: int, calls: int, first: int, tag: str, kind: str, limit: int, timeout_s: int = 60) -> Result:
    run = target.workdir / f"{target.name}-{tag}"
    run.mkdir()
    (run / "scenario.xml").write_text(SCENARIO)
    with open(run / "numbers.csv", "w") as f:
        f.write("SEQUENTIAL\n")
        for n in numbers(first, calls):
            f.write(f"{n}\n")
    cmd = [
        SIPP, f"127.0.0.1:{target.port}", "-sf", "scenario.xml", "-inf", "numbers.csv",
        "-i", "127.0.0.1", "-p", str(free_port()), "-m", str(calls), "-r", str(rate or 10**6), "-rp", "1000",
        "-l", str(limit), "-trace_rtt", "-rtt_freq", "1", "-trace_stat", "-fd", "1", "-trace_counts",
        "-timeout", f"{timeout_s}s", "-nostdin", "-max_recv_loops", "10000", "-buff_size", str(4 * 1024 * 1024),
    ]
    target_cpu0 = group_cpu_seconds(target.proc.pid)
    busy0, total0 = machine_cpu()
    started = time.monotonic()
    with open(run / "sipp.stderr", "wb") as err:
        proc = subprocess.Popen(cmd, cwd=run, stdout=subprocess.DEVNULL, stderr=err)
        deadline = started + timeout_s + 60
        usage = None
        while usage is None:
            pid, _status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                usage = ru
                proc.returncode = 0  # reaped here (wait4 gives sipp's own CPU use)
            elif time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise TimeoutError(f"sipp did not finish against {target.name} ({tag})")
            else:
                time.sleep(0.02)
    wall = time.monotonic() - started
    busy1, total1 = machine_cpu()
    cpu_target_s = group_cpu_seconds(target.proc.pid) - target_cpu0
    cpu_target = cpu_target_s / wall
    cpu_sipp = (usage.ru_utime + usage.ru_stime) / wall
    cpu_machine = (busy1 - busy0) / (total1 - total0) if total1 > total0 else float("nan")
    times: list[float] = []
    stamps: list[float] = []
    for path in run.glob("*_rtt.csv"):
        with open(path) as f:
            for row in csv.reader(f, delimiter=";"):
                if not row or not row[0][:1].isdigit():
                    continue
                stamps.append(float(row[0]) / 1000)  # when the final response came (ms since sipp started)
                times.append(float(row[1]))  # response_time_ms (sipp resolution: 1 ms)
    stats = _last_row(run, "*_.csv")
    counts = _last_row(run, "*_counts.csv")
    finals = {
        "302": int(counts.get("2_302_Recv", "0") or 0),
        "503": int(counts.get("3_503_Recv", "0") or 0),
        "603": int(counts.get("4_603_Recv", "0") or 0),
        "INVITE retrans": int(counts.get("0_INVITE_Retrans", "0") or 0),
        "failed": int(stats.get("FailedCall(C)", "0") or 0),
    }
    if not times:
        raise RuntimeError(f"sipp produced no response times for {target.name} ({(run / 'sipp.stderr').read_text()[-500:]})")
    span = max(stamps) - min(stamps) if len(stamps) > 1 else wall
    times.sort()
    decided = finals["302"] + finals["603"]  # a 503 (shed under overload) is no decision
    return Result(
        target=target.name, kind=kind, offered=rate, limit=limit, calls=calls, answered=len(times),
        per_s=decided / span if span > 0 else float("nan"),
        p50_ms=statistics.median(times), p99_ms=times[min(len(times) - 1, int(0.99 * len(times)))],
        finals=finals, cpu_sipp=cpu_sipp, cpu_target=cpu_target, cpu_machine=cpu_machine, cpu_target_s=cpu_target_s,
    )


def _last_row(run: Path, pattern: str) -> dict[str, str]:
    """The last line of one of sipp's CSV traces (-trace_stat: <scenario>_<pid>_.csv) as a dict."""
    for path in run.glob(pattern):
        with open(path) as f:
            rows = [r for r in csv.reader(f, delimiter=";") if r]
        if len(rows) >= 2:
            return dict(zip(rows[0], rows[-1]))
    return {}


def ms(value: float) -> str:
    return "<1" if value < 1 else f"{value:.0f}"


HEADER = (f"{'target':18} {'run':>11} {'calls':>6} {'decided/s':>10} {'p50 ms':>6} {'p99 ms':>6}  "
          f"{'302%':>5} {'603%':>5} {'503':>5} {'retr':>5} {'fail':>4}  {'cpu target':>10} {'us/call':>7} {'sipp':>5} {'machine':>7}")


def fmt(r: Result) -> str:
    f = r.finals
    share = (lambda n: f"{100 * n / r.calls:5.1f}") if r.calls else (lambda n: "    -")
    return (f"{r.target:18} {r.kind + ' ' + r.label:>11} {r.calls:>6} {r.per_s:>10.0f} {ms(r.p50_ms):>6} {ms(r.p99_ms):>6}  "
            f"{share(f['302'])} {share(f['603'])} {f['503']:>5} {f['INVITE retrans']:>5} {f['failed']:>4}  "
            f"{100 * r.cpu_target:>9.0f}% {r.cpu_us_per_call:>7.0f} {100 * r.cpu_sipp:>4.0f}% {100 * r.cpu_machine:>6.0f}%")


def settle(target: Target, quiet: float = 0.1, longest: float = 15.0) -> None:
    """Wait until the target is idle (under ``quiet`` of a core over 0.5 s): an overload
    run leaves late decisions and queued datagrams that would skew the next run."""
    deadline = time.monotonic() + longest
    while time.monotonic() < deadline:
        before = group_cpu_seconds(target.proc.pid)
        time.sleep(0.5)
        if group_cpu_seconds(target.proc.pid) - before < quiet * 0.5:
            return


# --------------------------------------------------------------------------------------
# The SIP edge's own cost, in this process: no sockets, no sipp, no store


_SDP = ("v=0\r\no=1001 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")


def invite_bytes(i: int) -> bytes:
    """The bench's INVITE (as sipp sends it) for number FIRST_NUMBER + i."""
    n = FIRST_NUMBER + i
    return (f"INVITE sip:{n}@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-{i}-1-0;rport\r\n"
            f"From: \"Agent 1001\" <sip:1001@127.0.0.1:6000>;tag=77-{i}\r\nTo: <sip:{n}@127.0.0.1:5070>\r\n"
            f"Call-ID: {i}-77@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:1001@127.0.0.1:6000>\r\nMax-Forwards: 70\r\n"
            "P-Asserted-Identity: \"Collections line\" <sip:+862161234567@127.0.0.1>\r\n"
            "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\nUser-Agent: DialGate-bench sipp\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(_SDP)}\r\n\r\n{_SDP}").encode()


def ack_bytes(i: int) -> bytes:
    n = FIRST_NUMBER + i
    return (f"ACK sip:{n}@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-{i}-1-0;rport\r\n"
            f"From: \"Agent 1001\" <sip:1001@127.0.0.1:6000>;tag=77-{i}\r\nTo: <sip:{n}@127.0.0.1:5070>;tag=x\r\n"
            f"Call-ID: {i}-77@127.0.0.1\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()


class _Collect:
    """Stands in for the UDP transport: counts final answers (and which were 302)."""

    def __init__(self) -> None:
        self.finals = 0
        self.moved = 0
        self.wake: asyncio.Event | None = None

    def is_closing(self) -> bool:
        return False

    def sendto(self, data: bytes, _addr: Any) -> None:
        if not data.startswith(b"SIP/2.0 100"):
            self.finals += 1
            self.moved += data.startswith(b"SIP/2.0 302")
            if self.wake is not None:
                self.wake.set()

    def close(self) -> None:
        pass


async def _drive_sip(server: Any, first: int, calls: int, batch: int = 32) -> tuple[float, float, float, int]:
    """INVITE+ACK for numbers first..first+calls straight into the listener's datagram
    handler, ``batch`` decisions in flight; (process CPU, main-thread CPU, wall, 302s)."""
    out = _Collect()
    saved, server._udp = server._udp, out  # answers go here, not to a socket
    invites = [invite_bytes(first + i) for i in range(calls)]
    acks = [ack_bytes(first + i) for i in range(calls)]
    peer = ("127.0.0.1", 6000)
    cpu0, thread0, wall0 = time.process_time(), time.thread_time(), time.perf_counter()
    try:
        for s in range(0, calls, batch):
            end = min(calls, s + batch)
            for i in range(s, end):
                server.on_datagram(invites[i], peer)
            while out.finals < end:
                out.wake = asyncio.Event()
                try:
                    await asyncio.wait_for(out.wake.wait(), 30)
                except (TimeoutError, asyncio.TimeoutError):
                    raise RuntimeError(f"the listener answered {out.finals} of {end} INVITEs within 30 s") from None
            for i in range(s, end):
                server.on_datagram(acks[i], peer)
    finally:
        server._udp = saved
    return time.process_time() - cpu0, time.thread_time() - thread0, time.perf_counter() - wall0, out.moved


def edge_cost(calls: int) -> str:
    """CPU per INVITE + its ACK through the listener (parse, transaction table, decision
    task with the in-memory authorizer, 302 serialised) with datagrams handed straight to
    the protocol handler and answers collected by a stand-in transport; and the parser
    alone. Every INVITE is a new transaction with a new number (nothing cached)."""
    import logging

    import structlog

    from tests.support.sip_fakes import HourlyCapSipAuthorizer
    from adapters.sip.message import parse_message
    from adapters.sip.server import SipServer

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    async def drive() -> float:
        async with SipServer(HourlyCapSipAuthorizer(per_hour=10**9), port=0) as server:
            cpu, _thread, _wall, _moved = await _drive_sip(server, 0, calls)
            return cpu

    spent = asyncio.run(drive())
    sample_invite, sample_ack = invite_bytes(calls + 1), ack_bytes(calls + 1)
    started = time.process_time()
    for _ in range(5000):
        parse_message(sample_invite)
    p_invite = (time.process_time() - started) / 5000
    started = time.process_time()
    for _ in range(5000):
        parse_message(sample_ack)
    p_ack = (time.process_time() - started) / 5000
    return (f"SIP edge in-process ({calls} INVITE+ACK, in-memory authorizer, no sockets): "
            f"{spent / calls * 1e6:.0f} us CPU per INVITE+ACK ({calls / spent:.0f}/s on one core); "
            f"parse alone: INVITE {p_invite * 1e6:.0f} us, ACK {p_ack * 1e6:.0f} us")


def service_edge_cost(calls: int, rounds: int) -> str:
    """The SIP gate over the real service (SQLite, synchronous=FULL, JSON logs to
    /dev/null) in this process, no sockets: CPU per INVITE+ACK through the listener and
    GateSipAuthorizer, against the same RequestDial (the command the authorizer builds)
    asked of Gate.request_dial directly, 32 in flight either way, and asked again with a
    request identity of its own, as every INVITE carries one (its row looked up and
    stored with the decision, so a retry at either gate gets the same answer).
    Alternated ``rounds`` times on fresh numbers; SIP minus the keyed direct call is what
    the SIP side adds to the shared decision path."""
    import gc

    from adapters.sip.service import SIP_ACTOR
    from dialer.app import freeze_long_lived
    from dialer.usecases import RequestDial

    Run = tuple[float, float, float, int]

    async def drive() -> tuple[list[Run], list[Run], list[Run]]:
        sip_runs: list[Run] = []
        direct_runs: list[Run] = []
        keyed_runs: list[Run] = []
        with tempfile.TemporaryDirectory(prefix="dialgate-sipedge-") as tmp, open(os.devnull, "w") as null, \
                contextlib.redirect_stderr(null):
            async with service("service", free_port(), 3 * rounds * calls + 1, tmp) as svc:
                server = svc.sip.server
                lines = server._authorizer._config.registered_lines
                freeze_long_lived()
                # warm-up: first use of every code path, caches, the SQLite page cache
                await _drive_sip(server, 3 * rounds * calls - 200, 200)

                async def direct(first: int, keyed: bool = False) -> Run:
                    cmds = [RequestDial(actor=SIP_ACTOR, case_id="", number=f"+86{FIRST_NUMBER + first + i}",
                                        agent_id="col-a", channel="sip", match_pending=True,
                                        caller_line="+862161234567", lines_by_creditor=lines,
                                        request_key=f"{first + i:064x}" if keyed else None)
                            for i in range(calls)]
                    cpu0, thread0, wall0 = time.process_time(), time.thread_time(), time.perf_counter()
                    allowed = 0
                    for s in range(0, calls, 32):
                        for r in await asyncio.gather(*(svc.gate.request_dial(c) for c in cmds[s : s + 32])):
                            allowed += r.allowed
                    return time.process_time() - cpu0, time.thread_time() - thread0, time.perf_counter() - wall0, allowed

                for k in range(rounds):
                    gc.collect()
                    sip_runs.append(await _drive_sip(server, 3 * k * calls, calls))
                    gc.collect()
                    direct_runs.append(await direct((3 * k + 1) * calls))
                    gc.collect()
                    keyed_runs.append(await direct((3 * k + 2) * calls, keyed=True))
        return sip_runs, direct_runs, keyed_runs

    sip_runs, direct_runs, keyed_runs = asyncio.run(drive())

    def us(runs: list[Run], i: int) -> str:
        vals = sorted(r[i] / calls * 1e6 for r in runs)
        return f"{vals[0]:.0f} us (median {statistics.median(vals):.0f})"

    ok = sum(r[3] for r in sip_runs), sum(r[3] for r in direct_runs), sum(r[3] for r in keyed_runs)
    # the least CPU of the rounds: other work on a shared machine only ever adds to it
    gap = min(r[0] for r in sip_runs) - min(r[0] for r in keyed_runs)
    return (f"SIP gate over the service in-process (SQLite FULL, {rounds} x {calls} INVITE+ACK, 32 in flight, no sockets; "
            f"least (median) per call): SIP: CPU {us(sip_runs, 0)}, event-loop thread {us(sip_runs, 1)}, "
            f"wall {us(sip_runs, 2)}; Gate.request_dial alone: CPU {us(direct_runs, 0)}, event-loop thread "
            f"{us(direct_runs, 1)}, wall {us(direct_runs, 2)}; with a request identity: CPU {us(keyed_runs, 0)}; "
            f"the SIP side adds {gap / calls * 1e6:.0f} us CPU per call to the keyed call "
            f"(allowed: {ok[0]}/{rounds * calls} via SIP, {ok[1]}/{rounds * calls} direct, {ok[2]}/{rounds * calls} keyed)")


def heavy_number_cost(prior: int, calls: int, rounds: int) -> str:
    """Gate.request_dial in this process (SQLite FULL) for a number with ``prior``
    attempts in its look-back, against the same for a number with none (the anchor,
    same run), and against the heavy number read without the history bound (all its
    attempts, as an unbounded read takes them). Alternated ``rounds`` times; least of the rounds."""
    import gc
    from datetime import timedelta, timezone

    from sqlalchemy import insert, select

    from adapters.db import tables
    from adapters.sip.service import SIP_ACTOR
    from dialer.app import freeze_long_lived
    from dialer.usecases import RequestDial

    async def drive() -> dict[str, list[float]]:
        times: dict[str, list[float]] = {"fresh": [], "heavy": [], "heavy-unbounded": []}
        with tempfile.TemporaryDirectory(prefix="dialgate-heavy-") as tmp, open(os.devnull, "w") as null, \
                contextlib.redirect_stderr(null), contextlib.redirect_stdout(null):
            async with service("service", free_port(), rounds * calls + 2, tmp) as svc:
                heavy = f"+86{FIRST_NUMBER}"
                now = svc.gate.clock.now().astimezone(timezone.utc)
                async with svc.store.read() as uow:
                    [case] = await uow.cases.by_number(heavy, None)
                # spread over the look-back (7 days here): each counts, as a debtor's
                # number dialed all week would
                lookback = svc.gate.policies.for_creditor(case.creditor).lookback
                async with svc.store.write() as uow:
                    await uow.conn.execute(insert(tables.attempts), [
                        {"id": f"prior-{i}", "case_pk": case.pk, "creditor": case.creditor, "case_id": case.case_id,
                         "number": heavy, "relation": "self", "agent_id": "col-a", "channel": "api",
                         "state": "dialing", "at": now - lookback * (i + 1) / (prior + 1),
                         "valid_until": now, "decision_id": f"prior-{i}", "connected": i % 3 == 0}
                        for i in range(prior)])
                freeze_long_lived()
                window = svc.gate._window()  # noqa: SLF001 - the bound is what is measured

                def cmd(number: str) -> RequestDial:
                    return RequestDial(actor=SIP_ACTOR, case_id="", number=number, agent_id="col-a", channel="sip",
                                       match_pending=True, caller_line="+862161234567",
                                       lines_by_creditor=svc.sip.server._authorizer._config.registered_lines)

                async def timed(numbers: list[str]) -> float:
                    gc.collect()
                    t0 = time.perf_counter()
                    for n in numbers:
                        await svc.gate.request_dial(cmd(n))
                    return (time.perf_counter() - t0) / len(numbers)

                await timed([heavy] * 3)  # warm-up
                for k in range(rounds):
                    times["fresh"].append(await timed([f"+86{FIRST_NUMBER + 1 + k * calls + i}" for i in range(calls)]))
                    times["heavy"].append(await timed([heavy] * calls))
                    svc.gate._window_cache = (window[0], None)  # type: ignore[assignment]  # noqa: SLF001 - every attempt
                    try:
                        times["heavy-unbounded"].append(await timed([heavy] * max(1, calls // 10)))
                    finally:
                        svc.gate._window_cache = window  # noqa: SLF001
                async with svc.store.read() as uow:
                    n = len((await uow.conn.execute(select(tables.attempts.c.id).where(
                        tables.attempts.c.number == heavy))).all())
                assert n == prior, n  # every heavy decision was a refusal: nothing added
        return times

    times = asyncio.run(drive())
    ms_ = {k: min(v) * 1000 for k, v in times.items()}
    return (f"decision time, Gate.request_dial one at a time in-process (SQLite FULL; least of {rounds} rounds of {calls}): "
            f"a number with {prior:,} prior attempts in its look-back {ms_['heavy']:.2f} ms (refused by its caps) "
            f"vs a number with none {ms_['fresh']:.2f} ms (anchor, same run): {ms_['heavy'] / ms_['fresh']:.2f}x; "
            f"the same heavy number with the whole history read (no bound) {ms_['heavy-unbounded']:.1f} ms")


def restart_outages(target: "Target", kills: int, rate: int) -> str:
    """sipp at ``rate`` INVITEs/s against the edge-mode service; the edge child killed
    (SIGKILL) ``kills`` times, 8 s apart (an edge that ran 5 s is restarted at once; one
    that dies younger is a crash loop and backs off): per kill, the time until the next final
    answer sipp received (sipp's response timestamps, 1 ms resolution)."""
    run = target.workdir / f"{target.name}-restart"
    run.mkdir()
    (run / "scenario.xml").write_text(SCENARIO)
    calls = rate * (8 * kills + 8)
    with open(run / "numbers.csv", "w") as f:
        f.write("SEQUENTIAL\n")
        for n in numbers(10**7, calls):
            f.write(f"{n}\n")
    cmd = [SIPP, f"127.0.0.1:{target.port}", "-sf", "scenario.xml", "-inf", "numbers.csv", "-i", "127.0.0.1",
           "-p", str(free_port()), "-m", str(calls), "-r", str(rate), "-rp", "1000", "-l", str(10 * rate),
           "-trace_rtt", "-rtt_freq", "1", "-trace_stat", "-fd", "1", "-trace_counts", "-timeout", "120s", "-nostdin"]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with open(run / "sipp.stderr", "wb") as err:
        proc = subprocess.Popen(cmd, cwd=run, stdout=subprocess.DEVNULL, stderr=err)
        started = time.monotonic()
        kills_at: list[float] = []
        time.sleep(3)
        for _ in range(kills):
            kids = [int(c) for c in Path(f"/proc/{target.proc.pid}/task/{target.proc.pid}/children").read_text().split()
                    if b"adapters.sip.edge" in Path(f"/proc/{c}/cmdline").read_bytes()]
            if not kids:
                break
            kills_at.append(time.monotonic() - started)
            os.kill(kids[0], signal.SIGKILL)
            time.sleep(8)
        proc.wait(timeout=600)
    stamps = []
    for path in run.glob("*_rtt.csv"):
        with open(path) as f:
            for row in csv.reader(f, delimiter=";"):
                if row and row[0][:1].isdigit():
                    # sipp stamps the call's start: its answer came response_time later
                    stamps.append((float(row[0]) + float(row[1])) / 1000)
    stamps.sort()
    # sipp's clock starts when it does (a few ms after ours): each outage is the longest
    # silence between answers from 0.5 s before to 2.5 s after the kill
    outages = []
    for k in kills_at:
        inside = [t for t in stamps if k - 0.5 <= t <= k + 2.5]
        gaps = [b - a for a, b in zip(inside, inside[1:])]
        outages.append(max(gaps) if gaps else float("nan"))
    counts = _last_row(run, "*_counts.csv")
    return (f"restart under load: {rate} INVITEs/s (sipp), the edge process killed -9 {len(kills_at)} times: longest "
            f"silence between answers after each kill {', '.join(f'{o:.2f}' for o in outages)} s (goal: deciding again "
            f"within 2 s); 302 {counts.get('2_302_Recv', '?')}, 503 {counts.get('3_503_Recv', '?')}, 603 "
            f"{counts.get('4_603_Recv', '?')}; load average at start {load}")


@dataclass
class Capacity:
    target: str
    rate: int  # highest offered rate that passed (0: none)
    result: Result | None  # that run
    first_fail: Result | None  # the lowest rate that failed (None: the ladder's top passed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="500,2000", help="fixed offered loads in INVITEs/s, comma-separated")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each fixed-load run")
    ap.add_argument("--ladder", default="250,500,1000,1500,2000,3000,4000,6000,8000,12000,16000",
                    help="offered loads tried in turn for the capacity (stops at the first that fails; 0: skip)")
    ap.add_argument("--ladder-seconds", type=float, default=4.0, help="length of each capacity step")
    ap.add_argument("--capacity-p99-ms", type=float, default=50.0, help="the latency bound of a sustained step")
    ap.add_argument("--max-cases", type=int, default=150000,
                    help="cases seeded for gate-sqlite (calls past them get 603 case.not_found: see the 603 share)")
    ap.add_argument("--retries", type=int, default=1, help="times a failed capacity step is run again before it counts as failed")
    ap.add_argument("--closed", default="16,128", help="calls in flight for closed-loop peak runs (comma-separated; empty: skip)")
    ap.add_argument("--closed-calls", type=int, default=10000, help="calls in each closed-loop run")
    ap.add_argument("--targets", default="kamailio-static,gate-memory,gate-sqlite,gate-sqlite-edge")
    ap.add_argument("--edge-calls", type=int, default=20000, help="INVITEs for the in-process SIP edge cost (0: skip)")
    ap.add_argument("--service-edge-calls", type=int, default=1000,
                    help="INVITEs per round for the in-process SIP-over-the-service cost against RequestDial alone (0: skip)")
    ap.add_argument("--service-edge-rounds", type=int, default=6, help="alternating rounds of that measurement")
    ap.add_argument("--restart-kills", type=int, default=5,
                    help="gate-sqlite-edge: kill -9 its edge this many times under --restart-rate (0: skip)")
    ap.add_argument("--restart-rate", type=int, default=300, help="INVITEs/s offered while the edge is killed")
    ap.add_argument("--heavy-attempts", type=int, default=10000,
                    help="prior attempts of one number for the in-process decision-time figure (0: skip)")
    ap.add_argument("--serve", choices=("memory", *SERVICE_TARGETS_BY_KIND), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--cases", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        # On uvloop when it is installed, as `dialgate serve` runs (uvicorn's "auto" loop):
        # the SIP gate measured as deployed.
        try:
            import uvloop

            run: Any = uvloop.run
        except ImportError:
            run = asyncio.run
        run(serve(args.serve, args.port, args.cases, args.data_dir))
        return
    if not Path(SIPP).exists():
        sys.exit(f"sipp not found at {SIPP} (apt-get install sip-tester)")
    rates = [int(r) for r in args.rates.split(",") if r]
    ladder = sorted(int(r) for r in args.ladder.split(",") if r and int(r) > 0)
    closed = [int(n) for n in args.closed.split(",") if n]
    fixed_plan = [(rate, int(rate * args.seconds)) for rate in rates]
    step = lambda rate: int(rate * args.ladder_seconds)  # noqa: E731
    # every call of every run a distinct number with a case of its own (worst case: the
    # whole ladder passes and one refinement step is run)
    total = ((sum(c for _, c in fixed_plan) + (1 + args.retries) * (sum(step(r) for r in ladder) + (step(ladder[-1]) if ladder else 0)))
             + len(closed) * args.closed_calls)
    wanted = [t for t in args.targets.split(",") if t]  # empty: only the in-process figures
    print(f"sipp {SIPP}; {cpu_info()}; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          "(other work on the machine skews every figure)")
    print(f"runs per target: fixed loads {', '.join(f'{r}/s x {args.seconds:g} s' for r in rates)}; capacity ladder "
          f"{', '.join(map(str, ladder))}/s x {args.ladder_seconds:g} s (sustained: all answered, no 503/retransmission/failure, "
          f"p99 <= {args.capacity_p99_ms:g} ms, >= 97% of the offer; a failed step tried {1 + args.retries} times), one refinement step; closed loops with "
          f"{', '.join(map(str, closed))} calls in flight x {args.closed_calls} calls")
    print("every call a distinct number (gate-sqlite: each an active case of its own, so the policy allows it: 302); "
          "latency: sipp's INVITE -> final response, 1 ms resolution ('<1' = under 1 ms); cpu: share of one core "
          "(target: all its processes/threads; machine: share of all cores)")
    print("kamailio-static: C, 2 UDP worker processes (children=2), stateless 302; gate-*: one Python asyncio process (on uvloop, as `dialgate serve` runs), gate-sqlite-edge two (the SIP edge and the service)")
    edge = edge_cost(args.edge_calls) if args.edge_calls else ""
    if edge:
        print(edge, flush=True)
    if args.service_edge_calls:
        edge += ("\n" if edge else "") + service_edge_cost(args.service_edge_calls, args.service_edge_rounds)
        print(edge.splitlines()[-1], flush=True)
    if args.heavy_attempts:
        edge += ("\n" if edge else "") + heavy_number_cost(args.heavy_attempts, 100, 3)
        print(edge.splitlines()[-1], flush=True)
    print()
    print(HEADER, flush=True)
    results: list[Result] = []
    capacities: dict[str, Capacity] = {}
    with tempfile.TemporaryDirectory(prefix="dialgate-sipbench-") as tmp:
        work = Path(tmp)
        for name in wanted:
            if name == "kamailio-static":
                target = start_kamailio(work)
            elif name == "gate-memory":
                target = start_gate("memory", work, 0)
            elif name in SERVICE_KINDS:
                target = start_gate(SERVICE_KINDS[name], work, min(total, args.max_cases))
            else:
                sys.exit(f"unknown target {name}")
            first = 0

            def run(rate: int, calls: int, kind: str, limit: int) -> Result:
                nonlocal first
                settle(target)
                timeout = int(3 * calls / rate) + 20 if rate else 120
                r = run_sipp(target, rate, calls, first, f"{len(results):03d}-{kind}-{rate}-{limit}", kind, limit, timeout_s=timeout)
                first += calls
                results.append(r)
                print(fmt(r), flush=True)
                return r

            try:
                if ladder:
                    passed: Result | None = None
                    failed: Result | None = None
                    def attempt(rate: int) -> Result:
                        # a failed step is tried again (--retries): on a shared machine one
                        # scheduling stall of another process's making spoils a p99
                        r = run(rate, step(rate), "ladder", max(1000, rate))
                        for _ in range(args.retries):
                            if r.passes(args.capacity_p99_ms):
                                break
                            r = run(rate, step(rate), "ladder", max(1000, rate))
                        return r

                    for rate in ladder:
                        r = attempt(rate)
                        if not r.passes(args.capacity_p99_ms):
                            failed = r
                            break
                        passed = r
                    if failed is not None:
                        low = passed.offered if passed else 0
                        mid = (low + failed.offered) // 2 // 50 * 50
                        if mid > low:
                            r = attempt(mid)
                            if r.passes(args.capacity_p99_ms):
                                passed = r
                            else:
                                failed = r
                    capacities[target.name] = Capacity(target.name, passed.offered if passed else 0, passed, failed)
                for rate, calls in fixed_plan:
                    run(rate, calls, "fixed", max(1000, rate))
                for limit in closed:
                    run(0, args.closed_calls, "closed", limit)
                if name == "gate-sqlite-edge" and args.restart_kills:
                    settle(target)
                    restart = restart_outages(target, args.restart_kills, args.restart_rate)
                    edge += ("\n" if edge else "") + restart
                    print(restart, flush=True)
            finally:
                target.stop()
    print()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if edge:
        print(edge)
    print(HEADER)
    for r in results:
        print(fmt(r))
    print()
    for c in capacities.values():
        if c.result is None:
            print(f"capacity {c.target}: below the ladder's first step ({c.first_fail.label if c.first_fail else '?'} failed)")
            continue
        top = "" if c.first_fail else " (the ladder's top step: the real capacity may be higher)"
        sipp_busy = " sipp was near a full core: the figure is sipp's limit" if c.result.cpu_sipp > 0.9 else ""
        print(f"capacity {c.target}: {c.rate}/s offered sustained, {c.result.per_s:.0f} decided/s, p50 {ms(c.result.p50_ms)} ms, "
              f"p99 {ms(c.result.p99_ms)} ms{top}; next step {c.first_fail.label if c.first_fail else '-'} failed"
              f"{' (' + fmt_fail(c.first_fail, args.capacity_p99_ms) + ')' if c.first_fail else ''}{sipp_busy}")
    anchor = {(r.kind, r.offered, r.limit): r for r in results if r.target == "kamailio-static"}
    cap_anchor = capacities.get("kamailio-static")
    for gate in ("gate-memory", *SERVICE_KINDS):
        cap = capacities.get(gate)
        if cap is not None and cap_anchor is not None and cap_anchor.rate:
            print(f"ratio {gate}/kamailio-static capacity: {cap.rate / cap_anchor.rate:.2f} ({cap.rate}/s vs {cap_anchor.rate}/s)")
        for r in results:
            a = anchor.get((r.kind, r.offered, r.limit))
            if r.target == gate and a is not None and r.kind != "ladder":
                print(f"ratio {gate}/kamailio-static {r.kind} {r.label}: decided/s {r.per_s / a.per_s:.2f}; "
                      f"p50 {ms(r.p50_ms)} vs {ms(a.p50_ms)} ms, p99 {ms(r.p99_ms)} vs {ms(a.p99_ms)} ms; "
                      f"CPU per call {r.cpu_us_per_call:.0f} vs {a.cpu_us_per_call:.0f} us ({r.cpu_us_per_call / a.cpu_us_per_call:.1f}x)")


def fmt_fail(r: Result, bound: float) -> str:
    why = []
    f = r.finals
    if r.answered < r.calls:
        why.append(f"{r.calls - r.answered} unanswered")
    if f["503"]:
        why.append(f"{f['503']} shed with 503")
    if f["INVITE retrans"]:
        why.append(f"{f['INVITE retrans']} INVITE retransmissions")
    if f["failed"]:
        why.append(f"{f['failed']} failed")
    if r.p99_ms > bound:
        why.append(f"p99 {ms(r.p99_ms)} ms")
    if r.per_s < 0.97 * r.offered:
        why.append(f"{r.per_s:.0f} decided/s")
    return ", ".join(why) or "?"


if __name__ == "__main__":
    main()
