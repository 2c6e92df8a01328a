"""Click-to-dial throughput and latency against a real `dialgate serve` process.

    .venv/bin/python bench/gate_bench.py                       # SQLite, 10^3 and 10^6 prior attempts
    .venv/bin/python bench/gate_bench.py --store both --pg-url postgresql+asyncpg://…

For each store and each prior-attempt count: a fresh database, the prior attempts bulk
inserted (spread over 100k numbers and the last 90 days, older than the policy's
look-back so they sit in the indexes without being counted), one `dialgate serve`
(uvicorn) process, then `--clients` concurrent HTTP clients (httpx), each a collector
clicking to dial its own cases in turn, closed loop. Printed: decisions/s, p50, p99,
and the share allowed. The anchor, run side by side through the same server and
client: `GET /healthz` (authentication only, no store write) — the ceiling the
HTTP stack and the client leave for the gate.

Goals (issue 3): ≥ 1,000 decisions/s on SQLite, p99 ≤ 25 ms, latency at 10^6 prior
attempts within 1.5× of 10^3. Note Little's law for a closed loop: mean latency =
clients / throughput, so 50 clients at 1,000/s average 50 ms; the p99 goal is
also measured open-loop (`--rate`, a fixed arrival rate) and printed separately.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

# httpcore asks `import sniffio` on every request; when sniffio is not installed that
# failed import walks sys.path each time (~1 ms of client CPU per request). Marking it
# absent makes the import fail at once; httpcore then assumes asyncio, which is right.
sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]

import httpx  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PY = sys.executable
POLICY = '[policy]\ncn_holidays = false\nwindow = { start = "00:00", end = "24:00" }\n'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(cfg: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([PY, "-m", "dialer.cli", *args, "--config", str(cfg)], capture_output=True, text=True,
                          env=env, cwd=cfg.parent, timeout=120)
    if done.returncode:
        raise SystemExit(f"dialgate {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.stdout


def cases_doc(n_cases: int, clients: int) -> list[dict[str, Any]]:
    today = date.today()
    return [
        {
            "case_id": f"K-{i}", "creditor": "bank-x", "debtor_name": "压测", "status": "active",
            "commission_start": (today - timedelta(days=30)).isoformat(),
            "commission_end": (today + timedelta(days=30)).isoformat(),
            "assigned_agent": f"agent-{i % clients}",
            "contacts": [{"number": f"+86139{i:08d}", "relation": "self"},
                         {"number": f"+86137{i:08d}", "relation": "family"}],
        }
        for i in range(n_cases)
    ]


def prior_rows(n: int, case_pks: list[int]) -> Any:
    now = datetime.now(timezone.utc)
    rnd = random.Random(7)
    for _ in range(n):
        at = now - timedelta(days=2, seconds=rnd.randrange(88 * 86400))
        yield (str(uuid.UUID(int=rnd.getrandbits(128))), rnd.choice(case_pks), "bank-x", "HIST",
               f"+86135{rnd.randrange(100_000):08d}", "self", "agent-h", "api", "completed", at,
               at + timedelta(minutes=2), str(uuid.UUID(int=rnd.getrandbits(128))), rnd.random() < 0.3)


async def seed_prior(url: str, n: int) -> float:
    """Bulk insert `n` prior attempts; returns seconds taken."""
    t0 = time.perf_counter()
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1]
        con = sqlite3.connect(path)
        pks = [r[0] for r in con.execute("SELECT id FROM cases")]
        con.execute("PRAGMA synchronous=OFF")
        batch: list[tuple[Any, ...]] = []
        for row in prior_rows(n, pks):
            at, until = row[9].replace(tzinfo=None).isoformat(" "), row[10].replace(tzinfo=None).isoformat(" ")
            batch.append((*row[:9], at, until, row[11], int(row[12])))
            if len(batch) >= 50_000:
                con.executemany("INSERT INTO attempts (id, case_pk, creditor, case_id, number, relation, agent_id, "
                                "channel, state, at, valid_until, decision_id, connected) "
                                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", batch)
                batch.clear()
        if batch:
            con.executemany("INSERT INTO attempts (id, case_pk, creditor, case_id, number, relation, agent_id, "
                            "channel, state, at, valid_until, decision_id, connected) "
                            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", batch)
        con.commit()
        con.execute("ANALYZE")
        con.close()
    else:
        import asyncpg

        dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        con = await asyncpg.connect(dsn)
        pks = [r[0] for r in await con.fetch("SELECT id FROM cases")]
        await con.copy_records_to_table(
            "attempts", records=prior_rows(n, pks),
            columns=["id", "case_pk", "creditor", "case_id", "number", "relation", "agent_id", "channel", "state",
                     "at", "valid_until", "decision_id", "connected"])
        await con.execute("ANALYZE attempts")
        await con.close()
    return time.perf_counter() - t0


async def private_pg_db(url: str) -> str:
    """A fresh database on the same server for this run (dropped by `drop_pg_db`)."""
    import asyncpg

    admin = os.environ.get("DIALGATE_TEST_PG_ADMIN") or url.rsplit("/", 1)[0] + "/postgres"
    name = f"gatebench_{uuid.uuid4().hex[:10]}"
    con = await asyncpg.connect(admin.replace("postgresql+asyncpg://", "postgresql://"))
    await con.execute(f'CREATE DATABASE "{name}"')
    await con.close()
    return url.rsplit("/", 1)[0] + "/" + name


async def drop_pg_db(url: str) -> None:
    import asyncpg

    admin = os.environ.get("DIALGATE_TEST_PG_ADMIN") or url.rsplit("/", 1)[0] + "/postgres"
    con = await asyncpg.connect(admin.replace("postgresql+asyncpg://", "postgresql://"))
    await con.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    await con.close()


async def make_users(cfg: Path, users: list[tuple[str, str]]) -> dict[str, str]:
    """Users and their tokens, in this process (one `dialgate users add` each is slow)."""
    from dialer.app import open_services
    from dialer.auth import add_user
    from dialer.config import load_config

    tokens = {}
    async with open_services(load_config(cfg), migrate=True) as svc:
        for name, role in users:
            _, tokens[name] = await add_user(svc.store, svc.clock, name, role, frozenset({"bank-x"}))
    return tokens


class Server:
    def __init__(self, cfg: Path, port: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.port = port
        self.proc = subprocess.Popen([PY, "-m", "dialer.cli", "serve", "--config", str(cfg), "--port", str(port)],
                                     env=env, cwd=cfg.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    async def ready(self, token: str) -> None:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as c:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise SystemExit(f"serve exited: {self.proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
                try:
                    if (await c.get(f"http://127.0.0.1:{self.port}/readyz",
                                    headers={"Authorization": f"Bearer {token}"})).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise SystemExit("server not ready in 60 s")

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def _client_proc(base: str, plans: list[list[tuple[str, str, Any, str]]]) -> dict[str, Any]:
    """One client process: one httpx connection per plan, each sending its requests in turn."""

    async def go() -> dict[str, Any]:
        lat: list[float] = []
        statuses: dict[int, int] = {}
        limits = httpx.Limits(max_connections=len(plans), max_keepalive_connections=len(plans))
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:

            async def worker(plan: list[tuple[str, str, Any, str]]) -> None:
                for method, path, body, token in plan:
                    t = time.perf_counter()
                    r = await client.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
                    lat.append(time.perf_counter() - t)
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

            t0 = time.time()
            await asyncio.gather(*(worker(p) for p in plans))
            return {"lat": lat, "statuses": statuses, "t0": t0, "t1": time.time()}

    return asyncio.run(go())


async def closed_loop(base: str, make_request: Any, clients: int, total: int, procs: int = 1) -> dict[str, Any]:
    """`clients` closed-loop clients (each waits for its answer before the next click),
    spread over `procs` client processes so the client is not the bottleneck."""
    plans: list[list[tuple[str, str, Any, str]]] = [[] for _ in range(clients)]
    for i in range(total):
        w = i % clients
        method, path, kw = make_request(w, i)
        plans[w].append((method, path, kw.get("json"), kw["headers"]["Authorization"].split()[1]))
    groups = [plans[k::procs] for k in range(procs)]
    loop = asyncio.get_running_loop()
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=procs, mp_context=ctx) as pool:
        parts = await asyncio.gather(*(loop.run_in_executor(pool, _client_proc, base, g) for g in groups))
    lat = [x for p in parts for x in p["lat"]]
    statuses: dict[int, int] = {}
    for p in parts:
        for k, v in p["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    wall = max(p["t1"] for p in parts) - min(p["t0"] for p in parts)
    return {"n": len(lat), "per_s": len(lat) / wall, "p50_ms": pct(lat, 50) * 1000, "p99_ms": pct(lat, 99) * 1000,
            "statuses": statuses}


async def open_loop(base: str, make_request: Any, rate: float, total: int) -> dict[str, Any]:
    """Requests arrive at a fixed rate whatever the answers (no coordinated omission)."""
    lat: list[float] = []
    statuses: dict[int, int] = {}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:

        async def one(i: int, due: float) -> None:
            method, path, kw = make_request(i % 50, i)
            try:
                r = await client.request(method, path, **kw)
                code: Any = r.status_code
            except httpx.HTTPError as exc:  # over capacity: counted, not fatal
                code = type(exc).__name__
            lat.append(time.perf_counter() - due)
            statuses[code] = statuses.get(code, 0) + 1

        t0 = time.perf_counter()
        tasks = []
        for i in range(total):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)
    return {"n": len(lat), "rate": rate, "p50_ms": pct(lat, 50) * 1000, "p99_ms": pct(lat, 99) * 1000,
            "statuses": statuses}


async def in_process(cfg: Path, args: argparse.Namespace, per_agent: list[list[int]]) -> dict[str, Any]:
    """The same decide-and-reserve without HTTP: `clients` tasks calling Gate.request_dial
    in this process on the same database (what the store and policy cost alone)."""
    from dialer.app import open_services
    from dialer.config import load_config
    from dialer.logs import configure_logging
    from dialer.usecases import RequestDial

    configure_logging("warning")
    lat: list[float] = []
    allowed = 0
    async with open_services(load_config(cfg), migrate=False) as svc:
        async with svc.store.read() as uow:
            agents = [await uow.users.by_name(f"agent-{w}") for w in range(args.clients)]
        per = max(1, args.requests // args.clients)

        async def worker(w: int) -> None:
            nonlocal allowed
            mine = per_agent[w]
            for j in range(per):
                k = mine[(j + 7) % len(mine)]
                t = time.perf_counter()
                r = await svc.gate.request_dial(RequestDial(
                    actor=agents[w], case_id=f"K-{k}", number=f"+86137{k:08d}", agent_id=f"agent-{w}"))
                lat.append(time.perf_counter() - t)
                allowed += r.allowed

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(args.clients)))
        wall = time.perf_counter() - t0
    return {"n": len(lat), "per_s": len(lat) / wall, "p50_ms": pct(lat, 50) * 1000, "p99_ms": pct(lat, 99) * 1000,
            "allowed": allowed}


async def run_one(store: str, prior: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gatebench-") as d:
        wd = Path(d)
        url = f"sqlite+aiosqlite:///{wd / 'var' / 'dialgate.db'}" if store == "sqlite" else await private_pg_db(args.pg_url)
        cfg = wd / "config.toml"
        cfg.write_text(f'[paths]\ndata_dir = "{wd / "var"}"\n[store]\nurl = "{url}"\n'
                       f'sqlite_synchronous = "{args.sqlite_synchronous}"\n'
                       f'[log]\nlevel = "warning"\n[gate]\nauth_cache_s = 300.0\n{POLICY}', encoding="utf-8")
        cli(cfg, "db", "upgrade")
        tokens = await make_users(cfg, [("data-x", "data")] + [(f"agent-{i}", "collector") for i in range(args.clients)])
        port = free_port()
        server = Server(cfg, port)
        try:
            await server.ready(tokens["data-x"])
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base, timeout=120) as c:
                r = await c.post("/v1/cases:import", json={"cases": cases_doc(args.cases, args.clients)},
                                 headers={"Authorization": f"Bearer {tokens['data-x']}"})
                assert r.status_code == 200, r.text
            seed_s = await seed_prior(url, prior)
            per_agent = [[i for i in range(args.cases) if i % args.clients == a] for a in range(args.clients)]

            def dial(w: int, i: int) -> tuple[str, str, dict[str, Any]]:
                mine = per_agent[w]
                k = mine[(i // args.clients) % len(mine)]
                number = f"+86139{k:08d}" if (i // (args.clients * len(mine))) % 2 == 0 else f"+86137{k:08d}"
                return "POST", "/v1/dials", {
                    "json": {"case_id": f"K-{k}", "number": number, "agent_id": f"agent-{w}"},
                    "headers": {"Authorization": f"Bearer {tokens[f'agent-{w}']}"}}

            def health(w: int, i: int) -> tuple[str, str, dict[str, Any]]:
                return "GET", "/healthz", {"headers": {"Authorization": f"Bearer {tokens[f'agent-{w}']}"}}

            await closed_loop(base, dial, args.clients, 200, args.client_procs)  # warm-up
            gate = await closed_loop(base, dial, args.clients, args.requests, args.client_procs)
            anchor = await closed_loop(base, health, args.clients, args.requests, args.client_procs)
            opened = await open_loop(base, dial, args.rate, args.requests) if args.rate else None
            server.stop()
            inproc = await in_process(cfg, args, per_agent) if args.inproc else None
        finally:
            server.stop()
            if store == "postgres":
                await drop_pg_db(url)
        return {"store": store, "prior": prior, "seed_s": seed_s, "gate": gate, "anchor": anchor, "open": opened,
                "inproc": inproc}


def show(r: dict[str, Any]) -> None:
    g, a, o = r["gate"], r["anchor"], r["open"]
    allowed = g["statuses"].get(201, 0) / g["n"] * 100
    print(f"{r['store']:8} prior={r['prior']:>9,}  click-to-dial: {g['per_s']:7.0f} decisions/s  "
          f"p50 {g['p50_ms']:6.1f} ms  p99 {g['p99_ms']:6.1f} ms  ({allowed:.0f}% allowed; "
          f"statuses {g['statuses']})")
    print(f"{'':8} {'':15}  anchor GET /healthz: {a['per_s']:7.0f} req/s  p50 {a['p50_ms']:6.1f} ms  "
          f"p99 {a['p99_ms']:6.1f} ms   (seeded prior attempts in {r['seed_s']:.1f} s)")
    ip = r.get("inproc")
    if ip:
        print(f"{'':8} {'':15}  anchor in-process Gate.request_dial (no HTTP, {ip['n']} calls): {ip['per_s']:7.0f} "
              f"decisions/s  p50 {ip['p50_ms']:6.1f} ms  p99 {ip['p99_ms']:6.1f} ms")
    if o:
        print(f"{'':8} {'':15}  open loop at {o['rate']:.0f}/s: p50 {o['p50_ms']:6.1f} ms  p99 {o['p99_ms']:6.1f} ms  "
              f"(statuses {o['statuses']})")
    sys.stdout.flush()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", choices=["sqlite", "postgres", "both"], default="sqlite")
    ap.add_argument("--pg-url", default=os.environ.get("DIALGATE_TEST_PG_URL", ""))
    ap.add_argument("--prior", default="1000,1000000", help="comma-separated prior attempt counts")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--client-procs", type=int, default=2, help="client processes the clients are spread over")
    ap.add_argument("--rate", type=float, default=50.0, help="open-loop arrival rate; 0 to skip")
    ap.add_argument("--sqlite-synchronous", default="FULL")
    ap.add_argument("--no-inproc", dest="inproc", action="store_false", help="skip the in-process anchor")
    ap.add_argument("--json", action="store_true", help="also print the raw results as JSON")
    args = ap.parse_args()
    stores = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    if "postgres" in stores and not args.pg_url:
        raise SystemExit("--pg-url (or DIALGATE_TEST_PG_URL) is needed for PostgreSQL")
    print(f"gate_bench: {args.clients} clients, {args.requests} requests per run, {args.cases} cases, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; client and server share "
          f"the machine; SQLite synchronous={args.sqlite_synchronous}")
    results = []
    for store in stores:
        for prior in (int(p) for p in args.prior.split(",")):
            r = await run_one(store, prior, args)
            show(r)
            results.append(r)
    for store in stores:
        rs = [r for r in results if r["store"] == store]
        if len(rs) >= 2:
            lo, hi = rs[0], rs[-1]
            print(f"{store}: p50 at {hi['prior']:,} / at {lo['prior']:,} prior = "
                  f"{hi['gate']['p50_ms'] / lo['gate']['p50_ms']:.2f}x, p99 {hi['gate']['p99_ms'] / lo['gate']['p99_ms']:.2f}x")
    if args.json:
        print(json.dumps(results, default=str))


if __name__ == "__main__":
    asyncio.run(main())
