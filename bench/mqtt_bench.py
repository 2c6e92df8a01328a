"""MQTT event bus benchmark: outbox → relay → Mosquitto → subscriber.

Figures printed:
  1. anchor: raw aiomqtt QoS 1 publish throughput (no outbox), PUBACK-confirmed and
     received by a subscriber, same broker, same run;
  2. outbox throughput: N events committed to the outbox, relayed (per-case order,
     mark-sent after PUBACK) and received by a subscriber; ratio to the anchor;
  3. steady load: events committed at a fixed rate (default 1,000/s), end-to-end
     latency from commit to the subscriber's receipt: p50 / p99 / max.
Goals: >= 5,000 events/s; p99 < 50 ms at 1,000 events/s.

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
from tests.support.net import free_port  # noqa: E402
from tests.support.outbox import InMemoryOutboxSource  # noqa: E402

EVENTS_FILTER = "dialgate/v1/+/events/#"


class PrivateBroker:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mqtt-bench-"))
        self.port = free_port()
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


class MemoryOutbox:
    """The relay over `InMemoryOutboxSource`: the adapter's own cost, no database."""

    name = "in-memory outbox"

    async def __aenter__(self) -> MemoryOutbox:
        self.source = InMemoryOutboxSource()
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def commit(self, events: list[tuple[str, dict]]) -> None:
        for case_id, fields in events:
            self.source.append("attempt.state", "bank-a", case_id, fields)

    async def all_sent(self) -> None:
        await self.source.wait_all_sent()


class SqliteOutbox:
    """The gate's real store (SQLite file, its migrations, `SqlOutbox.add` in write
    transactions) and the relay's `SqlAlchemyOutboxSource` over its outbox table."""

    name = "SQLite outbox (gate store + SqlAlchemyOutboxSource)"

    async def __aenter__(self) -> SqliteOutbox:
        from adapters.db.outbox_source import SqlAlchemyOutboxSource
        from dialer.bootstrap import open_services
        from dialer.config import build_config

        self._dir = tempfile.mkdtemp(prefix="mqtt-bench-db-")
        self._cm = open_services(build_config({"paths": {"data_dir": self._dir}}))
        services = await self._cm.__aenter__()
        self.store = services.store
        self.source = SqlAlchemyOutboxSource(self.store)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._cm.__aexit__(None, None, None)
        shutil.rmtree(self._dir, ignore_errors=True)

    async def commit(self, events: list[tuple[str, dict]]) -> None:
        from datetime import UTC, datetime

        async with self.store.write() as uow:
            for case_id, fields in events:
                await uow.outbox.add(
                    "attempt.state", creditor="bank-a", case_pk=None, case_id=case_id,
                    occurred_at=datetime.now(UTC), payload=fields,
                )

    async def all_sent(self) -> None:
        while await self.source.unsent_count():
            await asyncio.sleep(0.05)


async def outbox_throughput(url: str, sub: Subscriber, n: int, cases: int, outbox) -> float:
    for start in range(0, n, 1000):  # committed before the relay starts: a backlog
        await outbox.commit([(f"C-{i % cases:05d}", {"n": i}) for i in range(start, min(n, start + 1000))])
    sub.expect(n)
    cfg = load_mqtt_config({"url": url, "client_id": f"dialgate-bench-tp-{os.getpid()}"})
    t0 = time.monotonic()
    async with MqttEventBus(cfg, outbox.source) as bus:
        t_end, _ = await sub.result(300)
        elapsed = t_end - t0
        await asyncio.wait_for(outbox.all_sent(), 60)
        reconnects = bus.connection.connects - 1
    print(f"  {outbox.name}: {n} events over {cases} cases received in {elapsed:.2f} s "
          f"= {n / elapsed:,.0f} events/s (includes connect; reconnects: {reconnects})")
    return n / elapsed


async def steady_latency(url: str, sub: Subscriber, rate: int, seconds: float, outbox) -> list[float]:
    total = int(rate * seconds)
    cfg = load_mqtt_config({"url": url, "client_id": f"dialgate-bench-lat-{os.getpid()}"})
    async with MqttEventBus(cfg, outbox.source) as bus:
        await bus.connection.wait_connected(10)
        sub.expect(total)
        start = time.monotonic()
        sent = 0
        while sent < total:
            # Commit the events whose scheduled time has come (fixed schedule, no drift)
            # in one transaction, then wake the relay as the gate does after a commit.
            # On SQLite a lone writer manages ~500 transactions/s here, so at 1,000/s
            # a transaction carries 1-3 events; `t` is taken before the commit.
            due = min(total, int((time.monotonic() - start) * rate) + 1)
            if due > sent:
                now = time.monotonic()
                await outbox.commit(
                    [(f"C-{n % 500:05d}", {"n": n, "t": now}) for n in range(sent, due)]
                )
                bus.notify()
                sent = due
            await asyncio.sleep(0.001)
        _, latencies = await sub.result(60)
        achieved = total / (time.monotonic() - start)
    lat = sorted(x * 1000 for x in latencies)
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
    print(f"  {outbox.name}, steady {rate}/s for {seconds:.0f} s ({total} events, "
          f"{achieved:,.0f}/s achieved): commit→subscriber latency ms p50 {p(0.50):.2f}  "
          f"p90 {p(0.90):.2f}  p99 {p(0.99):.2f}  max {lat[-1]:.2f}  mean {statistics.fmean(lat):.2f}")
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
    ap.add_argument("--source", choices=["memory", "sqlite", "both"], default="both")
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))

    broker = None
    if args.url is None:
        broker = PrivateBroker()
        url = f"mqtt://127.0.0.1:{broker.port}"
    else:
        url = args.url
    cfg = load_mqtt_config({"url": url})
    print(f"MQTT bench against {cfg.display_url} (mosquitto), "
          f"python {sys.version.split()[0]}, aiomqtt {aiomqtt.__version__}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} (other work on the machine skews the figures)")
    try:
        sub = Subscriber(cfg.host, cfg.port)
        raw = await raw_anchor(cfg.host, cfg.port, sub, args.events, args.window)
        kinds = {"memory": [MemoryOutbox], "sqlite": [SqliteOutbox],
                 "both": [SqliteOutbox, MemoryOutbox]}[args.source]
        results = []
        for kind in kinds:
            async with kind() as outbox:
                tp = await outbox_throughput(url, sub, args.events, args.cases, outbox)
            async with kind() as outbox:
                lat = await steady_latency(url, sub, args.rate, args.seconds, outbox)
            p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
            results.append((kind.name, tp, p99))
        for name, tp, p99 in results:
            print(f"RESULT {name}: {tp:,.0f} events/s (goal >= 5,000: "
                  f"{'met' if tp >= 5000 else 'NOT met'}), ratio to raw aiomqtt {tp / raw:.2f}; "
                  f"p99 {p99:.2f} ms at {args.rate}/s (goal < 50 ms: {'met' if p99 < 50 else 'NOT met'})")
        print(f"RESULT anchor raw aiomqtt QoS 1 (no outbox): {raw:,.0f} msgs/s to the subscriber")
        sub.close()
    finally:
        if broker is not None:
            broker.close()


if __name__ == "__main__":
    asyncio.run(main())
