"""Relay wake socket benchmark (adapters/mqtt/waker.py): what a worker pool pays for a
secondary's commits waking the primary's relay at once.

Figures printed:
  1. anchors, same run: a bare non-blocking `sendto` of one byte on a UNIX datagram
     socket (the syscall floor), and `asyncio.Event.set()` (what the primary's own
     commits cost it: `bus.notify()`);
  2. the secondary's cost per committed write: `RelayWaker.wake()` with a primary
     listening (another process), and with none (the datagram dropped: ENOENT);
  3. the primary's CPU per datagram received (RelayWakeListener in its event loop,
     notify = Event.set) at a steady --rate wakes/s (each one its own loop wake-up, the
     realistic case) and under a flood (batched reads).

Run:  .venv/bin/python bench/wake_bench.py [--n 200000] [--rate 1000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog  # noqa: E402

from adapters.mqtt.waker import RelayWaker, RelayWakeListener, wake_socket_path  # noqa: E402


def _listener(path: str, ready: mp.Event, stop: mp.Event, out: mp.Queue) -> None:  # type: ignore[type-arg]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    async def main() -> None:
        woken = asyncio.Event()
        async with RelayWakeListener(Path(path), woken.set) as listener:
            ready.set()
            cpu0 = time.process_time()
            while not stop.is_set():
                await asyncio.sleep(0.05)
            cpu = time.process_time() - cpu0
            out.put((listener.received, cpu))

    asyncio.run(main())


def _per_call_ns(fn, n: int) -> float:
    t0 = time.process_time_ns()
    for _ in range(n):
        fn()
    return (time.process_time_ns() - t0) / n


def _primary_cpu(path: Path, sender, n: int | None, rate: int, seconds: float) -> tuple[int, int, float]:
    """Run a listener process; `sender` wakes it; return (sent, received, its CPU seconds)."""
    ctx = mp.get_context("spawn")
    ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_listener, args=(str(path), ready, stop, out))
    proc.start()
    assert ready.wait(30), "listener did not start"
    sent = sender(n, rate, seconds)
    time.sleep(0.3)  # let it drain what is queued
    stop.set()
    received, cpu = out.get(timeout=30)
    proc.join(30)
    return sent, received, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000, help="calls per micro figure")
    ap.add_argument("--rate", type=int, default=1_000, help="steady wakes per second")
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    run = Path(tempfile.mkdtemp(prefix=".serve-pool-bench-"))
    try:
        _bench(args, run)
    finally:
        shutil.rmtree(run, ignore_errors=True)


def _bench(args: argparse.Namespace, run: Path) -> None:
    path = wake_socket_path(run / "primary.lock")

    # 1. anchors
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sink, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as raw:
        sink_path = str(run / "sink.sock")
        sink.bind(sink_path)
        sink.setblocking(False)
        raw.setblocking(False)

        def raw_send() -> None:
            try:
                raw.sendto(b"!", sink_path)
            except BlockingIOError:
                while True:  # keep the sink empty so every send is a real send
                    try:
                        sink.recv(1)
                    except BlockingIOError:
                        break

        sendto_ns = _per_call_ns(raw_send, args.n)
    ev = asyncio.Event()
    set_ns = _per_call_ns(ev.set, args.n)
    print(f"anchor  sendto(1 byte, UNIX dgram, non-blocking)   {sendto_ns:8.0f} ns CPU/call")
    print(f"anchor  asyncio.Event.set() (the primary's notify)  {set_ns:8.0f} ns CPU/call")

    # 2. the secondary: no primary (dropped), then with one listening (3)
    with RelayWaker(path) as waker:
        missing_ns = _per_call_ns(waker.wake, args.n)
        print(f"secondary wake(), no primary (dropped)          {missing_ns:8.0f} ns CPU/call "
              f"(dropped {waker.dropped:,})")

    def steady(n: int | None, rate: int, seconds: float) -> int:
        with RelayWaker(path) as w:
            t0 = time.monotonic()
            total = int(rate * seconds)
            for i in range(total):
                due = t0 + i / rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                w.wake()
            return w.sent

    sent, received, cpu = _primary_cpu(path, steady, None, args.rate, args.seconds)
    print(f"primary at {args.rate:,} wakes/s for {args.seconds:g} s: sent {sent:,}, received {received:,}, "
          f"CPU {cpu * 1e6 / max(received, 1):6.1f} µs/datagram (loop idle time included: "
          f"{cpu / args.seconds * 100:4.1f} % of a core)")

    def flood(n: int | None, rate: int, seconds: float) -> int:
        with RelayWaker(path) as w:
            flood.ns = _per_call_ns(w.wake, n or 0)  # type: ignore[attr-defined]
            flood.dropped = w.dropped  # type: ignore[attr-defined]
            return w.sent

    sent, received, cpu = _primary_cpu(path, flood, args.n, args.rate, args.seconds)
    print(f"secondary wake(), primary listening (flood)     {flood.ns:8.0f} ns CPU/call "  # type: ignore[attr-defined]
          f"(sent {sent:,}, dropped on a full buffer {flood.dropped:,})")  # type: ignore[attr-defined]
    print(f"primary under the flood: received {received:,}, CPU {cpu * 1e6 / max(received, 1):6.2f} µs/datagram "
          "(includes its idle loop)")


if __name__ == "__main__":
    main()
