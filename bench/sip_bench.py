"""SIP gate benchmark: sipp INVITEs against the DialGate SIP gate and, as the anchor,
Kamailio configured as a trivial static redirect server, in the same run.

    .venv/bin/python bench/sip_bench.py [--rates 100,500,2000] [--seconds 5] [--saturate-calls 10000]
                                        [--targets kamailio-static,gate-memory,gate-sqlite]

Targets (each started fresh by this script on free loopback ports):

* ``kamailio-static``  deploy/kamailio/start.sh --static-redirect: stateless 302 for
  every INVITE, no policy, no state (C, several worker processes): the physical anchor.
* ``gate-memory``      the SIP gate with an in-memory authorizer (parser, transaction
  table and listener only: the SIP edge's own cost).
* ``gate-sqlite``      the SIP gate inside the real service: RequestDial on a SQLite
  file (decide, reserve the attempt, append to the decision log and the outbox in one
  write transaction; ``synchronous=FULL``, the service's default), with the service's
  structured logging on.
* ``gate-sqlite-normal``  the same with ``sqlite_synchronous = "NORMAL"`` (opt-in with
  ``--targets``).

For each target and each offered load sipp places calls with distinct numbers (an
injection CSV, one number per call, each number a case of its own in the store) and
realistic headers (From extension, P-Asserted-Identity, SDP). A call is "answered"
when its final response (302 or 603) arrives; its latency is sipp's response time from
the INVITE to that final response. The script prints answered INVITEs/s, p50/p99
latency, the mix of final responses (302 allowed, 603 blocked or failed closed, 503
shed under overload) and the gate/anchor ratio; then a saturation run
(offered load far above capacity, 16 calls in flight: a closed loop) gives each target's capacity.
"""

from __future__ import annotations

import argparse
import asyncio
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


def free_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise OSError("no free port")


def numbers(start: int, count: int) -> list[str]:
    return [str(FIRST_NUMBER + start + i) for i in range(count)]


# --------------------------------------------------------------------------------------
# Gate processes (this file re-runs itself with --serve)


async def serve(kind: str, port: int, cases: int, data_dir: str) -> None:
    import structlog

    if kind == "memory":
        from adapters.sip.fakes import HourlyCapSipAuthorizer
        from adapters.sip.server import SipServer

        import logging

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
        async with SipServer(HourlyCapSipAuthorizer(per_hour=10**9), port=port):
            print("READY", flush=True)
            await asyncio.Event().wait()
        return

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
        all_numbers = numbers(0, cases)
        doc = {
            "case_id": "B-0", "creditor": "bank-a", "debtor_name": "压测", "status": "active",
            "commission_start": "2026-11-01", "commission_end": "2027-01-31", "assigned_agent": "col-a",
            "contacts": [{"number": all_numbers[0], "relation": "self"}],
        }
        # the first case through the import use case (creates the creditor), the rest in bulk
        await svc.gate.import_cases(data, parse_cases_payload({"cases": [doc]}, svc.region_of))
        await bulk_cases(svc, all_numbers[1:], clock.now())
        print("READY", flush=True)
        await asyncio.Event().wait()


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
    name = {"service": "gate-sqlite", "service-normal": "gate-sqlite-normal"}.get(kind, f"gate-{kind}")
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
# sipp runs


@dataclass
class Result:
    target: str
    offered: str
    calls: int
    answered: int
    per_s: float
    p50_ms: float
    p99_ms: float
    finals: dict[str, int]


def run_sipp(target: Target, rate: int, calls: int, first: int, tag: str, limit: int = 2000, timeout_s: int = 60) -> Result:
    run = target.workdir / f"{target.name}-{tag}"
    run.mkdir()
    (run / "scenario.xml").write_text(SCENARIO)
    with open(run / "numbers.csv", "w") as f:
        f.write("SEQUENTIAL\n")
        for n in numbers(first, calls):
            f.write(f"{n}\n")
    cmd = [
        SIPP, f"127.0.0.1:{target.port}", "-sf", "scenario.xml", "-inf", "numbers.csv",
        "-i", "127.0.0.1", "-p", str(free_port()), "-m", str(calls), "-r", str(rate), "-rp", "1000",
        "-l", str(limit), "-trace_rtt", "-rtt_freq", "1", "-trace_stat", "-fd", "1", "-trace_counts",
        "-timeout", f"{timeout_s}s", "-nostdin", "-max_recv_loops", "10000", "-buff_size", str(4 * 1024 * 1024),
    ]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=run, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout_s + 60)
    wall = time.monotonic() - started
    rtt_files = list(run.glob("*_rtt.csv"))
    times: list[float] = []
    stamps: list[float] = []
    for path in rtt_files:
        with open(path) as f:
            for row in csv.reader(f, delimiter=";"):
                if not row or not row[0][:1].isdigit():
                    continue
                stamps.append(float(row[0]))  # date_ms (absolute)
                times.append(float(row[1]))  # response_time_ms (sipp resolution: 1 ms)
    stats = _last_stat(run)
    counts = _last_row(run, "*_counts.csv")
    finals = {
        "302": int(counts.get("2_302_Recv", "0") or 0),
        "503": int(counts.get("3_503_Recv", "0") or 0),
        "603": int(counts.get("4_603_Recv", "0") or 0),
        "INVITE retrans": int(counts.get("0_INVITE_Retrans", "0") or 0),
        "failed": int(stats.get("FailedCall(C)", "0") or 0),
    }
    if not times:
        raise RuntimeError(f"sipp produced no response times for {target.name} ({proc.stderr.decode()[-500:]})")
    span = (max(stamps) - min(stamps)) / 1000 if len(stamps) > 1 else wall
    times.sort()
    return Result(
        target=target.name,
        offered=f"{rate}/s" if rate < 10**5 else "saturate",
        calls=calls,
        answered=len(times),
        per_s=len(times) / span if span > 0 else float("nan"),
        p50_ms=statistics.median(times),
        p99_ms=times[min(len(times) - 1, int(0.99 * len(times)))],
        finals=finals,
    )


def _last_stat(run: Path) -> dict[str, str]:
    """The last line of sipp's -trace_stat file (<scenario>_<pid>_.csv) as a dict."""
    return _last_row(run, "*_.csv")


def _last_row(run: Path, pattern: str) -> dict[str, str]:
    for path in run.glob(pattern):
        with open(path) as f:
            rows = [r for r in csv.reader(f, delimiter=";") if r]
        if len(rows) >= 2:
            return dict(zip(rows[0], rows[-1]))
    return {}


def fmt(r: Result) -> str:
    f = r.finals
    return (f"{r.target:16} {r.offered:>9} {r.calls:>7} {r.answered:>8} {r.per_s:>10.0f} "
            f"{r.p50_ms:>8.0f} {r.p99_ms:>8.0f}   302={f['302']} 603={f['603']} 503={f['503']} "
            f"INVITE-retrans={f['INVITE retrans']} failed={f['failed']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="100,500,2000", help="offered loads in INVITEs/s, comma-separated")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each fixed-load run")
    ap.add_argument("--saturate-calls", type=int, default=10000, help="calls in the saturation run (0: skip)")
    ap.add_argument("--saturate-limit", type=int, default=16, help="concurrent calls in the saturation run (closed loop: capacity without retransmission storms)")
    ap.add_argument("--targets", default="kamailio-static,gate-memory,gate-sqlite")
    ap.add_argument("--serve", choices=("memory", "service", "service-normal"), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--cases", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.port, args.cases, args.data_dir))
        return
    if not Path(SIPP).exists():
        sys.exit(f"sipp not found at {SIPP} (apt-get install sip-tester)")
    rates = [int(r) for r in args.rates.split(",") if r]
    plan = [(rate, int(rate * args.seconds)) for rate in rates]
    total = sum(c for _, c in plan) + args.saturate_calls
    wanted = args.targets.split(",")
    print(f"sipp {SIPP}; {len(rates)} fixed loads x {args.seconds:g} s + saturation ({args.saturate_calls} calls, "
          f"{args.saturate_limit} concurrent); every call a distinct number; {os.cpu_count()} CPUs; "
          f"load average before: {os.getloadavg()[0]:.2f} (other work on the machine skews every figure)")
    print("latency: sipp's response time INVITE -> final response, 1 ms resolution")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="dialgate-sipbench-") as tmp:
        work = Path(tmp)
        for name in wanted:
            if name == "kamailio-static":
                target = start_kamailio(work)
            elif name == "gate-memory":
                target = start_gate("memory", work, 0)
            elif name in ("gate-sqlite", "gate-sqlite-normal"):
                target = start_gate("service" if name == "gate-sqlite" else "service-normal", work, total)
            else:
                sys.exit(f"unknown target {name}")
            try:
                first = 0
                for rate, calls in plan:
                    results.append(run_sipp(target, rate, calls, first, f"r{rate}", timeout_s=int(3 * args.seconds) + 20))
                    print(fmt(results[-1]), flush=True)
                    first += calls
                if args.saturate_calls:
                    results.append(run_sipp(target, 10**6, args.saturate_calls, first, "sat", limit=args.saturate_limit, timeout_s=120))
                    print(fmt(results[-1]), flush=True)
            finally:
                target.stop()
    print()
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"{'target':16} {'offered':>9} {'calls':>7} {'answered':>8} {'answered/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for r in results:
        print(fmt(r))
    anchor = {r.offered: r for r in results if r.target == "kamailio-static"}
    for gate in ("gate-memory", "gate-sqlite", "gate-sqlite-normal"):
        for r in results:
            if r.target == gate and r.offered in anchor:
                a = anchor[r.offered]
                print(f"ratio {gate}/kamailio-static at {r.offered}: throughput {r.per_s / a.per_s:.2f}, "
                      f"p99 {r.p99_ms / a.p99_ms if a.p99_ms else float('inf'):.1f}x")


if __name__ == "__main__":
    main()
