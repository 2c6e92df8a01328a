"""How many bridged click-to-dial calls one instance carries.

For N = 1, 2, 4, … simultaneous calls through a real Kamailio, measures one-way audio
delay and loss in both directions, with the anchor side by side at the same N:

  direct   N plain pyVoIP phone-to-phone calls (agent phone → debtor phone through the
           same Kamailio; RTP flows phone to phone): what the endpoints themselves cost.
  bridged  N click-to-dial calls: the service's SipUserAgent calls the agent phone and
           the debtor phone and bridges them (recording to a file as in production):
           RTP flows phone → service → phone.

Every 20 ms frame the phones send carries a 16-bit id (bits as full-scale ±112 samples,
which survive μ-law), stamped when pyVoIP's transmitter takes it and when pyVoIP's
receiver delivers it at the far phone — same process, same monotonic clock. Loss = ids
sent and never delivered; added delay = p95(bridged one-way) − p95(direct one-way).
It stops at the first N where loss > 1 % or added delay > 60 ms, and prints the largest
N that passed: the capacity of one instance on this machine. Set
`[pbx] max_bridged_calls` below it.

    .venv/bin/python bench/bridge_bench.py [--max 64] [--seconds 5]

The phones run in the same process as the service (2 cores here): the figures are a
lower bound for a service whose endpoints are real phones elsewhere.

A run on the shared 2-CPU machine (load average 4-6 from other work):

    Phones and service in one process; GIL switch 1 ms; 5 s windows; added delay = p95
    bridged − p95 direct at the same N.

    | N | direct p50/p95 ms | bridged p50/p95 ms | bridged loss | added p95 ms | process CPU |
    |---|---|---|---|---|---|
    | 1 | 3.6 / 11.7 | 6.9 / 16.7 | 0 % | 5 | 6 % |
    | 4 | 4.4 / 10.1 | 15.3 / 49.7 | 0.22 % | 40 | 13 % |
    | 8 | 5.3 / 9.8 | 21.7 / 49.7 | 0.22 % | 40 | 22 % |
    | 12 | 4.8 / 11.4 | 18.4 / 51.7 | 0.07 % | 40 | 30 % |
    | 16 | 5.2 / 9.7 | 10.9 / 23.8 | 0 % | 14 | 40 % |
    | 20 | 5.1 / 9.9 | 24.8 / 68.6 | 1.10 % | 59 | 64 % |

    (An earlier run the same evening: 16 within limits, 24 over at 3.6 % loss / +123 ms.)
    Direct calls never lost a frame. The machine's load average was 4–6 from other work
    during both runs, so the figures are a floor.

    Maximum within 1 % loss and +60 ms: **16** simultaneous bridged calls; configured limit
    12. With CPython's default 5 ms GIL switch interval the same bench stopped at 2 (4 over: 2.1 % loss, +53 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration" / "pbx"))

import structlog  # noqa: E402

from adapters.pbx import _pyvoip as pv  # noqa: E402
from adapters.pbx.bridge import BridgeLimiter, FileSink  # noqa: E402
from adapters.pbx.originate import Originator, OriginateRequest, Recheck  # noqa: E402
from adapters.pbx.sip_ua import SipUaConfig, SipUserAgent  # noqa: E402
from pbx_kamailio import KamailioProcess, free_port_block, free_udp_port  # noqa: E402

FRAME = 160
LOSS_LIMIT = 0.01
DELAY_LIMIT_MS = 60.0


class Meter:
    """Shared id counter and stamps for one measurement run."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.next_id = 0
        self.sent: dict[int, float] = {}
        self.arrived: dict[int, float] = {}
        self.window: tuple[float, float] | None = None  # (start, end) of counting

    def new_id(self) -> int:
        with self.lock:
            self.next_id = (self.next_id + 1) & 0xFFFF
            return self.next_id


def encode(ident: int) -> bytes:
    return b"".join((b"\xf0" if (ident >> bit) & 1 else b"\x10") * 10 for bit in range(16))


def decode(frame: bytes) -> int | None:
    if len(frame) != FRAME:
        return None
    if sum(1 for b in frame if 0x40 <= b <= 0xC0) > 8:
        return None  # silence or anything that is not an id frame
    ident = 0
    for bit in range(16):
        if sum(frame[bit * 10 : bit * 10 + 10]) > 0x80 * 10:
            ident |= 1 << bit
    return ident


class MeterTx:
    """pyVoIP pmout: generates an id frame each time the transmitter asks (every 20 ms)."""

    def __init__(self, meter: Meter) -> None:
        self.m = meter

    def write(self, offset: int, data: bytes) -> None:  # noqa: ARG002
        return

    def read(self, length: int = FRAME) -> bytes:
        ident = self.m.new_id()
        now = time.monotonic()
        with self.m.lock:
            self.m.sent[ident] = now
        return encode(ident)


class MeterRx:
    """pyVoIP pmin: stamps the arrival of every id frame."""

    def __init__(self, meter: Meter) -> None:
        self.m = meter

    def write(self, offset: int, data: bytes) -> None:  # noqa: ARG002
        ident = decode(data)
        if ident is not None:
            now = time.monotonic()
            with self.m.lock:
                self.m.arrived.setdefault(ident, now)

    def read(self, length: int = FRAME) -> bytes:
        return b"\x80" * length


class BenchPhone:
    """A pyVoIP phone answering any number of calls, every call metered."""

    def __init__(self, name: str, kam_port: int, rtp_low: int, rtp_high: int, meter: Meter) -> None:
        self.meter = meter
        self.stop_calls = threading.Event()
        self.answered = 0
        self._lock = threading.Lock()
        self.phone = pv.VoIPPhone(
            "127.0.0.1", kam_port, name, "", myIP="127.0.0.1", callCallback=self._on_call,
            sipPort=free_udp_port(), rtpPortLow=rtp_low, rtpPortHigh=rtp_high,
        )

    def start(self) -> None:
        # pyVoIP's (de)registration waits up to register_timeout (30 s) on the shared
        # socket, whose receive thread may already have taken the answer
        self.phone.sip.register_timeout = 2
        self.phone.start()

    def stop(self) -> None:
        self.stop_calls.set()
        for _ in range(3):
            try:
                self.phone.stop()  # iterates calls that its other threads delete (KeyError)
                return
            except (KeyError, OSError):
                continue

    def meter_call(self, call: "pv.VoIPCall") -> None:
        for client in call.RTPClients:
            client.pmin, client.pmout = MeterRx(self.meter), MeterTx(self.meter)

    def _on_call(self, call: "pv.VoIPCall") -> None:
        self.meter_call(call)  # before answer(): the RTP clients start there
        call.answer()
        with self._lock:
            self.answered += 1
        self.hold(call)

    def hold(self, call: "pv.VoIPCall") -> None:
        # pyVoIP forgets a call whose callback thread returned (and then ignores its BYE)
        while call.state == pv.CallState.ANSWERED and not self.stop_calls.wait(0.1):
            pass
        if call.state == pv.CallState.ANSWERED:
            call.hangup()


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 20 else max(values, default=float("nan"))


def summarise(meter: Meter, margin: float = 0.3) -> dict[str, float]:
    assert meter.window is not None
    start, end = meter.window
    with meter.lock:
        ids = [i for i, t in meter.sent.items() if start <= t <= end - margin]
        delays = [(meter.arrived[i] - meter.sent[i]) * 1000 for i in ids if i in meter.arrived]
    lost = len(ids) - len(delays)
    return {
        "frames": len(ids),
        "loss": lost / len(ids) if ids else 1.0,
        "p50_ms": statistics.median(delays) if delays else float("nan"),
        "p95_ms": p95(delays),
    }


async def until(cond, timeout: float) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def measure_window(meter: Meter, seconds: float) -> None:
    await asyncio.sleep(1.0)  # let every stream settle
    with meter.lock:
        meter.sent.clear()
        meter.arrived.clear()
    start = time.monotonic()
    await asyncio.sleep(seconds)
    meter.window = (start, time.monotonic())
    await asyncio.sleep(0.4)  # frames in flight at the end still arrive


async def run_direct(n: int, kam: KamailioProcess, base: int, seconds: float) -> dict[str, float]:
    meter = Meter()
    agent = BenchPhone("1001", kam.port, base, base + 399, meter)
    debtor = BenchPhone("13800000001", kam.port, base + 400, base + 799, meter)
    await asyncio.to_thread(agent.start)
    await asyncio.to_thread(debtor.start)
    await asyncio.sleep(1.1)  # pyVoIP starts its receive loop 1 s after start()
    calls = []
    try:
        for _ in range(n):
            call = await asyncio.to_thread(agent.phone.call, "13800000001")
            calls.append(call)
        ok = await until(lambda: all(c.state == pv.CallState.ANSWERED for c in calls), 15)
        if not ok:
            return {"frames": 0, "loss": 1.0, "p50_ms": float("nan"), "p95_ms": float("nan"), "error": 1}
        for call in calls:
            agent.meter_call(call)
        await measure_window(meter, seconds)
        return summarise(meter)
    finally:
        for call in calls:
            if call.state == pv.CallState.ANSWERED:
                await asyncio.to_thread(call.hangup)
        await asyncio.to_thread(agent.stop)
        await asyncio.to_thread(debtor.stop)


async def run_bridged(n: int, kam: KamailioProcess, base: int, seconds: float, tmp: Path) -> dict[str, float]:
    meter = Meter()
    agent = BenchPhone("1001", kam.port, base, base + 399, meter)
    debtor = BenchPhone("13800000001", kam.port, base + 400, base + 799, meter)
    await asyncio.to_thread(agent.start)
    await asyncio.to_thread(debtor.start)
    await asyncio.sleep(1.1)
    cfg = SipUaConfig(server="127.0.0.1", port=kam.port, local_port=0, rtp_port_low=base + 800, rtp_port_high=base + 1999)
    cpu0 = os.times()
    async with SipUserAgent(cfg) as ua:
        originator = Originator(ua, BridgeLimiter(n), agent_ring_timeout=15, callee_ring_timeout=15)
        connected = 0

        async def report(p) -> None:  # noqa: ANN001
            nonlocal connected
            if str(p.state) == "connected":
                connected += 1

        async def allow(_r: OriginateRequest) -> Recheck:
            return Recheck(True)

        async def sink(r: OriginateRequest) -> FileSink:
            return FileSink(tmp / f"{r.attempt_id}.wav")

        runs = [
            asyncio.create_task(
                originator.run(
                    originator.reserve(), OriginateRequest(f"b{n}-{i}", "1001", "13800000001"),
                    redecide=allow, report=report, sink_factory=sink,
                )
            )
            for i in range(n)
        ]
        ok = await until(lambda: connected == n, 30)
        result: dict[str, float]
        if ok:
            await measure_window(meter, seconds)
            result = summarise(meter)
        else:
            result = {"frames": 0, "loss": 1.0, "p50_ms": float("nan"), "p95_ms": float("nan"), "error": 1}
        agent.stop_calls.set()  # the agents hang up; each bridge ends its debtor leg
        done, pending = await asyncio.wait(runs, timeout=20)
        for task in pending:
            task.cancel()
        causes = [t.result().cause for t in done if not t.cancelled() and t.exception() is None]
        result["completed"] = sum(1 for c in causes if str(c) == "completed")
    cpu1 = os.times()
    result["cpu_pct"] = 100 * ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / (cpu1.elapsed - cpu0.elapsed)
    await asyncio.to_thread(agent.stop)
    await asyncio.to_thread(debtor.stop)
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max", type=int, default=64, help="largest N to try")
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring window per level")
    parser.add_argument("--levels", type=str, default="1,2,4,6,8,12,16,24,32,48,64")
    parser.add_argument("--switch-ms", type=float, default=1.0, help="sys.setswitchinterval (GIL hand-over) in ms, as the service sets it with [pbx] mode sip_ua; 5 is CPython's default")
    args = parser.parse_args()
    if args.switch_ms:
        sys.setswitchinterval(args.switch_ms / 1000)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only

    levels = [n for n in (int(x) for x in args.levels.split(",")) if n <= args.max]
    print(f"bridge_bench: pyVoIP {pv.PYVOIP_VERSION}, {os.cpu_count()} CPU, GIL switch {sys.getswitchinterval() * 1000:g} ms, {args.seconds:g} s window, limits: loss {LOSS_LIMIT:.0%}, added one-way delay {DELAY_LIMIT_MS:g} ms")
    print(f"{'N':>4} | {'direct p50/p95 ms':>18} {'loss':>6} | {'bridged p50/p95 ms':>19} {'loss':>6} {'added p95':>10} {'cpu%':>6} {'done':>5} | verdict")
    best = 0
    with KamailioProcess(children=4) as kam, tempfile.TemporaryDirectory() as tmp:
        for n in levels:
            base = free_port_block(2000)
            direct = await run_direct(n, kam, base, args.seconds)
            base = free_port_block(2000)
            bridged = await run_bridged(n, kam, base, args.seconds, Path(tmp))
            added = bridged["p95_ms"] - direct["p95_ms"]
            ok = bridged["loss"] <= LOSS_LIMIT and added <= DELAY_LIMIT_MS and not bridged.get("error")
            print(
                f"{n:>4} | {direct['p50_ms']:>8.1f}/{direct['p95_ms']:<9.1f} {direct['loss']:>6.2%} | "
                f"{bridged['p50_ms']:>8.1f}/{bridged['p95_ms']:<10.1f} {bridged['loss']:>6.2%} {added:>9.1f}  "
                f"{bridged.get('cpu_pct', 0):>5.0f} {int(bridged.get('completed', 0)):>5} | {'ok' if ok else 'OVER'}",
                flush=True,
            )
            if not ok:
                break
            best = n
    print(f"maximum simultaneous bridged calls within limits: {best}")
    print(f"suggested [pbx] max_bridged_calls: {max(1, int(best * 0.75))}")


if __name__ == "__main__":
    asyncio.run(main())
