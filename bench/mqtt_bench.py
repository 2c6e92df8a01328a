"""MQTT event bus benchmark: outbox → relay → Mosquitto → subscriber.

Figures printed:
  1. anchor: raw aiomqtt QoS 1 publish throughput (no outbox), PUBACK-confirmed and
     received by a subscriber, same broker, same run;
  2. outbox throughput: N events committed to the outbox, relayed (per-case order,
     mark-sent after PUBACK) and received by a subscriber; ratio to the anchor;
  3. steady load: events committed at a fixed rate (default 1,000/s), end-to-end
     latency from commit to the subscriber's receipt: p50 / p99 / max.
Goals (issue 6): >= 5,000 events/s; p99 < 50 ms at 1,000 events/s.

Run:  .venv/bin/python bench/mqtt_bench.py [--events 20000] [--rate 1000] [--seconds 10]
      [--url mqtt://host:port]   (default: start a private Mosquitto on a free port)
      [--source memory|sqlite]   (sqlite: the SQLAlchemy outbox over the service's table)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiomqtt  # noqa: E402
import structlog  # noqa: E402

from adapters.mqtt.bus import MqttEventBus  # noqa: E402
from adapters.mqtt.config import load_mqtt_config  # noqa: E402
from adapters.mqtt.memory import InMemoryOutboxSource  # noqa: E402

EVENTS_FILTER = "dialgate/v1/+/events/#"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateBroker:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mqtt-bench-"))
        self.port = _free_port()
        conf = self.dir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            "max_queued_messages 1000000",
            "max_inflight_messages 1000",
            "set_tcp_nodelay true",
            "log_type error",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(
            ["/usr/sbin/mosquitto", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit("mosquitto did not start") from None
                time.sleep(0.02)

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _subscriber_process(host: str, port: int, conn) -> None:
    """Runs in its own process, as a real consumer would: counts events and records
    commit→receipt latency from the event's `t` (time.monotonic, system-wide on Linux)."""

    async def run() -> None:
        loop = asyncio.get_running_loop()
        async with aiomqtt.Client(host, port, protocol=aiomqtt.ProtocolVersion.V5) as c:
            await c.subscribe(EVENTS_FILTER, qos=1)
            await c.subscribe("bench/raw/#", qos=1)
            conn.send("ready")
            target = await loop.run_in_executor(None, conn.recv)
            count, lat = 0, []
            async for m in c.messages:
                now = time.monotonic()
                if m.topic.matches(EVENTS_FILTER):
                    t = json.loads(m.payload).get("t")
                    if t is not None:
                        lat.append(now - t)
                count += 1
                if count >= target:
                    conn.send((time.monotonic(), lat))
                    target = await loop.run_in_executor(None, conn.recv)
                    if target == 0:
                        return
                    count, lat = 0, []

    asyncio.run(run())


class Subscriber:
    """Parent-side handle of the subscriber process."""

    def __init__(self, host: str, port: int) -> None:
        parent, child = mp.Pipe()
        self.conn = parent
        self.proc = mp.get_context("fork").Process(
            target=_subscriber_process, args=(host, port, child), daemon=True
        )
        self.proc.start()
        if not parent.poll(15) or parent.recv() != "ready":
            raise SystemExit("subscriber process did not start")

    def expect(self, n: int) -> None:
        self.conn.send(n)

    async def result(self, timeout: float) -> tuple[float, list[float]]:
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(None, self.conn.poll, timeout)
        if not ok:
            raise SystemExit("subscriber did not receive everything in time")
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send(0)
        self.proc.join(10)


async def raw_anchor(host: str, port: int, sub: Subscriber, n: int, window: int) -> float:
    payload = json.dumps({"event_id": "x" * 36, "type": "attempt.state", "n": 1}).encode()
    sub.expect(n)
    async with aiomqtt.Client(
        host, port, protocol=aiomqtt.ProtocolVersion.V5, max_inflight_messages=window
    ) as c:
        c.pending_calls_threshold = window + 10  # no warning per publish: same as the adapter
        gate = asyncio.Semaphore(window)

        async def one(i: int) -> None:
            async with gate:
                await c.publish(f"bench/raw/{i % 200}", payload, qos=1)

        t0 = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(n)))
        acked = time.monotonic() - t0
        t_end, _ = await sub.result(120)
        received = t_end - t0
    print(f"  raw aiomqtt QoS 1: {n} msgs, PUBACKed in {acked:.2f} s = {n / acked:,.0f}/s; "
          f"received by subscriber in {received:.2f} s = {n / received:,.0f}/s")
    return n / received


def make_source(kind: str):
    if kind == "memory":
        return InMemoryOutboxSource()
    raise SystemExit(f"--source {kind}: not available in this build")


async def outbox_throughput(url: str, sub: Subscriber, n: int, cases: int, source: str) -> float:
    outbox = make_source(source)
    for i in range(n):
        outbox.append("attempt.state", "bank-a", f"C-{i % cases:05d}", {"n": i})
    sub.expect(n)
    cfg = load_mqtt_config({"url": url, "client_id": "dialgate-bench-tp"})
    t0 = time.monotonic()
    async with MqttEventBus(cfg, outbox) as bus:
        t_end, _ = await sub.result(300)
        elapsed = t_end - t0
        await asyncio.wait_for(outbox.wait_all_sent(), 30)
        reconnects = bus.connection.connects - 1
    print(f"  outbox relay: {n} events over {cases} cases received in {elapsed:.2f} s "
          f"= {n / elapsed:,.0f} events/s (includes connect; reconnects: {reconnects})")
    return n / elapsed


async def steady_latency(url: str, sub: Subscriber, rate: int, seconds: float, source: str) -> list[float]:
    outbox = make_source(source)
    total = int(rate * seconds)
    cfg = load_mqtt_config({"url": url, "client_id": "dialgate-bench-lat"})
    async with MqttEventBus(cfg, outbox) as bus:
        outbox.on_commit(bus.notify)
        await bus.connection.wait_connected(10)
        sub.expect(total)
        start = time.monotonic()
        sent = 0
        while sent < total:
            # Commit every event whose scheduled time has come (fixed schedule, no drift).
            due = min(total, int((time.monotonic() - start) * rate) + 1)
            while sent < due:
                outbox.append("attempt.state", "bank-a", f"C-{sent % 500:05d}",
                              {"n": sent, "t": time.monotonic()})
                sent += 1
            await asyncio.sleep(0.001)
        _, latencies = await sub.result(60)
    lat = sorted(x * 1000 for x in latencies)
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
    print(f"  steady {rate}/s for {seconds:.0f} s ({total} events): latency ms "
          f"p50 {p(0.50):.2f}  p90 {p(0.90):.2f}  p99 {p(0.99):.2f}  max {lat[-1]:.2f}  "
          f"mean {statistics.fmean(lat):.2f}")
    return lat


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=None)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--cases", type=int, default=1_000)
    ap.add_argument("--rate", type=int, default=1_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--window", type=int, default=64,
                    help="raw anchor: publishes in flight (the adapter's default max_inflight)")
    ap.add_argument("--source", choices=["memory", "sqlite"], default="memory")
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))

    broker = None
    if args.url is None:
        broker = PrivateBroker()
        url = f"mqtt://127.0.0.1:{broker.port}"
    else:
        url = args.url
    cfg = load_mqtt_config({"url": url})
    print(f"MQTT bench against {cfg.display_url} (mosquitto), source={args.source}, "
          f"python {sys.version.split()[0]}, aiomqtt {aiomqtt.__version__}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} (other work on the machine skews the figures)")
    try:
        sub = Subscriber(cfg.host, cfg.port)
        raw = await raw_anchor(cfg.host, cfg.port, sub, args.events, args.window)
        tp = await outbox_throughput(url, sub, args.events, args.cases, args.source)
        lat = await steady_latency(url, sub, args.rate, args.seconds, args.source)
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        print(f"  ratio outbox/raw: {tp / raw:.2f}")
        print(f"RESULT throughput {tp:,.0f} events/s (goal >= 5,000: "
              f"{'met' if tp >= 5000 else 'NOT met'}); p99 {p99:.2f} ms at {args.rate}/s "
              f"(goal < 50 ms: {'met' if p99 < 50 else 'NOT met'}); anchor raw {raw:,.0f}/s")
        sub.close()
    finally:
        if broker is not None:
            broker.close()


if __name__ == "__main__":
    asyncio.run(main())
