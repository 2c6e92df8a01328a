"""Click-to-dial throughput and latency against a real `dialgate serve` process.

    .venv/bin/python bench/gate_bench.py                       # SQLite, 10^3 and 10^6 prior attempts
    .venv/bin/python bench/gate_bench.py --store both --pg-url postgresql+asyncpg://…
    .venv/bin/python bench/gate_bench.py --prior 1000 --sweep 250:2500:250   # find the rate p99 allows
    .venv/bin/python bench/gate_bench.py --prior 1000 --no-inproc --repeat 3  # median and range of 3 runs

For each store and each prior-attempt count: a fresh database, the prior attempts bulk
inserted (spread over 100k numbers and the last 90 days, older than the policy's
look-back so they sit in the indexes without being counted), one `dialgate serve`
(uvicorn) process, then the measured stages, each from a client process of its own
(a lean asyncio HTTP/1.1 keep-alive client on uvloop, requests pre-built):

* closed loop — `--clients` (50) connections, each a collector clicking to dial its own
  cases in turn and waiting for each answer. This answers the THROUGHPUT goal. Its
  latency is mostly queueing: by Little's law mean latency = clients / throughput, so
  50 clients at 1,000/s average 50 ms whatever the server does.
* open loop — dials arriving at fixed rates (`--rates`, default 50/s and 1,000/s; a
  `--sweep` of rates) whatever the answers, latency counted from each request's due
  time. This answers the LATENCY goal (p99 at 1,000/s offered).

Anchors, run side by side in the same run: `GET /healthz` through the same server and
client (authentication only, no store: the ceiling the HTTP stack and the client leave
for the gate), closed and open loop; and `Gate.request_dial` called in process by 50
tasks on the same database, no HTTP (what the decision path costs alone). Each stage
also prints the server's CPU (and per request), the client's, so a saturated client
shows, and the machine's CPU pressure (Linux PSI "some": the share of the stage some
runnable task, ours or anyone's, waited for a CPU; high values on a machine shared with
other work mean the latency figures carry that wait).

On a shared machine one run's figures can be off by 20-30% (other work's CPU wait lands
in them; the CPU pressure column shows how much). `--repeat N` runs everything N times,
each on a fresh database and server, and prints each stage's server CPU per request, p99
and CPU pressure as median [least..most]; the goal summary then uses the medians.

Goals: >= 1,000 decisions/s on SQLite, p99 <= 25 ms, latency at 10^6 prior
attempts within 1.5x of 10^3.
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

import httpx  # set-up only (readiness, the case import); the measured stages use the raw client below

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.net import free_port  # noqa: E402

PY = sys.executable
POLICY = '[policy]\ncn_holidays = false\nwindow = { start = "00:00", end = "24:00" }\n'


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
        # The bulk insert sits in the WAL: fold it into the database now, or the server's
        # first measured commits pay for checkpointing ~10^6 rows.
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
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
    from dialer.bootstrap import open_services
    from dialer.auth import add_user
    from dialer.config import load_config

    tokens = {}
    async with open_services(load_config(cfg), migrate=True) as svc:
        for name, role in users:
            _, tokens[name] = await add_user(svc.store, svc.clock, name, role, frozenset({"bank-x"}))
    return tokens


class Server:
    def __init__(self, cfg: Path, port: int, workers: int = 1) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.port = port
        # Its log goes to a file: a pipe nobody reads fills up at `--log-level info` (a
        # line per decision) and the server would block writing to it.
        self.log = cfg.parent / "serve.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([PY, "-m", "dialer.cli", "serve", "--config", str(cfg), "--port", str(port),
                                          "--workers", str(workers)],
                                         env=env, cwd=cfg.parent, stdout=subprocess.DEVNULL, stderr=log)

    async def ready(self, token: str) -> None:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as c:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise SystemExit(f"serve exited: {self.log.read_text(errors='replace')[-2000:]}")
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
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


# --- the load generator -------------------------------------------------------------
# A lean HTTP/1.1 keep-alive client on asyncio protocols (uvloop when installed): each
# request's bytes are built before the clock starts, a response is parsed as far as its
# status line and Content-Length body. httpx cost ~1.5 ms of client CPU per request,
# which on a 2-core machine shared with the server capped what the bench could show.


class _Conn(asyncio.Protocol):
    """One persistent connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int) -> "_Conn":
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(loop.create_connection(cls, host, port), 10)
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("server closed the connection"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        w = self.waiter
        if w is None or w.done():
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            w.set_exception(ConnectionError("response without Content-Length"))
            return
        stop = head.find(b"\r\n", at + 2)
        total = end + 4 + int(head[at + 17:stop if stop > 0 else None])
        if len(self.buf) < total:
            return
        body = bytes(self.buf[end + 4:total])
        del self.buf[:total]
        w.set_result((int(head[9:12]), body))

    def _expire(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(TimeoutError("no answer in time"))
            self.close()

    async def request(self, data: bytes, timeout: float) -> tuple[int, bytes]:
        if self.closed or self.transport is None:
            raise ConnectionError("connection closed")
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        timer = loop.call_later(timeout, self._expire)
        self.transport.write(data)
        try:
            return await self.waiter
        finally:
            timer.cancel()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def http_request(host: str, port: int, method: str, path: str, token: str, body: Any = None) -> bytes:
    """The full request's bytes (keep-alive)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
    if body is None:
        return (head + "\r\n").encode("latin-1")
    raw = json.dumps(body, separators=(",", ":")).encode("utf-8")
    return (head + f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n").encode("latin-1") + raw


def _client_loop(coro_fn: Any, *args: Any) -> dict[str, Any]:
    """Runs one client stage in a fresh process (uvloop when installed); adds its CPU time."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        runner = asyncio.run
    t = time.process_time()
    out = runner(coro_fn(*args))
    out["cpu_s"] = time.process_time() - t
    return out


def _warm() -> int:
    time.sleep(0.2)  # long enough that each client process gets one
    return os.getpid()


def _count(statuses: dict[Any, int], key: Any) -> None:
    statuses[key] = statuses.get(key, 0) + 1


async def _closed(host: str, ports: list[int], plans: list[list[bytes]], timeout: float) -> dict[str, Any]:
    """One connection per plan, the plans spread over the instances' ports in turn; each
    sends its requests in turn, waiting for each answer."""
    lat: list[float] = []
    statuses: dict[Any, int] = {}
    conns = [await _Conn.open(host, ports[k % len(ports)]) for k in range(len(plans))]

    async def worker(k: int, plan: list[bytes]) -> None:
        conn = conns[k]
        for data in plan:
            t = time.perf_counter()
            try:
                if conn.closed:
                    conn = await _Conn.open(host, ports[k % len(ports)])
                code: Any = (await conn.request(data, timeout))[0]
            except (OSError, TimeoutError) as exc:  # counted, not fatal; the next request reconnects
                code = type(exc).__name__
                conn.close()
            lat.append(time.perf_counter() - t)
            _count(statuses, code)
        conn.close()

    t0 = time.time()
    await asyncio.gather(*(worker(k, p) for k, p in enumerate(plans)))
    return {"lat": lat, "statuses": statuses, "t0": t0, "t1": time.time()}


async def _open(host: str, ports: list[int], reqs: list[bytes], rate: float, conns_max: int,
                timeout: float) -> dict[str, Any]:
    """Requests due at a fixed rate whatever the answers (connections spread over the
    instances' ports); latency counted from each one's due time, so a late send or a wait
    for a free connection counts (no coordinated omission)."""
    lat: list[float] = []
    statuses: dict[Any, int] = {}
    pool: asyncio.Queue[tuple[_Conn, int]] = asyncio.Queue()
    for k in range(conns_max):
        pool.put_nowait((await _Conn.open(host, ports[k % len(ports)]), ports[k % len(ports)]))

    async def one(data: bytes, due: float) -> None:
        conn, port = await pool.get()
        try:
            if conn.closed:
                conn = await _Conn.open(host, port)
            code: Any = (await conn.request(data, timeout))[0]
        except (OSError, TimeoutError) as exc:
            code = type(exc).__name__
            conn.close()
        finally:
            pool.put_nowait((conn, port))
        lat.append(time.perf_counter() - due)
        _count(statuses, code)

    tasks = []
    t0 = time.perf_counter() + 0.05
    for i, data in enumerate(reqs):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(data, due)))
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    while not pool.empty():
        pool.get_nowait()[0].close()
    return {"lat": lat, "statuses": statuses, "wall": wall}


def _cpu_ticks(pid: int) -> float:
    """CPU seconds so far of a process and its live descendants (the workers of
    `serve --workers N`) (Linux /proc; 0 elsewhere)."""
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
    tree, total = {pid}, 0.0
    grew = True
    while grew:
        grew = False
        for p, f in stats.items():
            if p not in tree and int(f[1]) in tree:
                tree.add(p)
                grew = True
    for p in tree:
        f = stats.get(p)
        if f is not None:
            total += int(f[11]) + int(f[12])
    return total / os.sysconf("SC_CLK_TCK")


def _backend_cpu(database: str | None) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend serving `database` (a server on this
    machine, Linux /proc; nothing elsewhere): the database's share of a dial, apart from
    the gate's own process."""
    if not database:
        return {}
    out: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            if not title.startswith("postgres:") or f" {database} " not in title:
                continue
            f = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        out[int(entry.name)] = (int(f[11]) + int(f[12])) / tick
    return out


def _cpu_pressure_s() -> float:
    """Seconds some runnable task waited for a CPU, machine-wide (Linux PSI; 0 elsewhere).
    Per stage it tells whether figures were taken on a machine busy with other work."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return int(line.rsplit("total=", 1)[1]) / 1e6
    except (OSError, IndexError, ValueError):
        return 0.0


class Load:
    """Runs client stages in spawned processes against one server; reports the server's
    and the client's CPU per stage next to the figures."""

    def __init__(self, host: str, ports: list[int], server_pids: list[int], procs: int, timeout: float,
                 database: str | None = None) -> None:
        self.host, self.ports, self.pids, self.procs, self.timeout = host, ports, server_pids, procs, timeout
        self.database = database
        self.pool = concurrent.futures.ProcessPoolExecutor(max_workers=procs,
                                                           mp_context=multiprocessing.get_context("spawn"))

    def close(self) -> None:
        self.pool.shutdown()

    async def _stage(self, calls: list[tuple[Any, ...]]) -> tuple[list[dict[str, Any]], float, float]:
        """Each client process's part, the server's CPU seconds and the stage's wall
        seconds; each part also carries the database backends' CPU seconds ("db_cpu_s")."""
        loop = asyncio.get_running_loop()
        # every client process spawned and this module imported before the clock starts
        await asyncio.gather(*(loop.run_in_executor(self.pool, _warm) for _ in range(2 * self.procs)))
        s0, w0, p0, b0 = self._server_cpu(), time.perf_counter(), _cpu_pressure_s(), _backend_cpu(self.database)
        parts = await asyncio.gather(*(loop.run_in_executor(self.pool, _client_loop, *c) for c in calls))
        span = time.perf_counter() - w0
        b1 = _backend_cpu(self.database)
        db = sum(t - b0.get(pid, 0.0) for pid, t in b1.items())  # a backend that exited meanwhile is not counted
        for p in parts:
            p["cpu_pressure"] = (_cpu_pressure_s() - p0) / span
            p["db_cpu_s"] = db
        return parts, self._server_cpu() - s0, span

    def _server_cpu(self) -> float:
        return sum(_cpu_ticks(pid) for pid in self.pids)

    async def closed(self, plans: list[list[bytes]]) -> dict[str, Any]:
        """len(plans) closed-loop clients spread over the client processes."""
        groups = [plans[k::self.procs] for k in range(self.procs)]
        parts, server_cpu, span = await self._stage(
            [(_closed, self.host, self.ports, g, self.timeout) for g in groups if g])
        lat = [x for p in parts for x in p["lat"]]
        wall = max(p["t1"] for p in parts) - min(p["t0"] for p in parts)
        return {"n": len(lat), "per_s": len(lat) / wall, **_summary(lat), "statuses": _merge(parts),
                "cpu_pressure": parts[0]["cpu_pressure"], "server_cpu": server_cpu / span, "client_cpu": sum(p["cpu_s"] for p in parts) / span,
                "server_ms_per_req": server_cpu / max(1, len(lat)) * 1000, **self._db(parts[0], span, len(lat))}

    async def open(self, reqs: list[bytes], rate: float, conns: int) -> dict[str, Any]:
        """One client process sending `reqs` at `rate`/s over up to `conns` connections."""
        parts, server_cpu, span = await self._stage([(_open, self.host, self.ports, reqs, rate, conns, self.timeout)])
        p = parts[0]
        return {"n": len(p["lat"]), "rate": rate, "achieved": len(p["lat"]) / p["wall"], **_summary(p["lat"]),
                "statuses": p["statuses"], "cpu_pressure": p["cpu_pressure"], "server_cpu": server_cpu / span, "client_cpu": p["cpu_s"] / span,
                "server_ms_per_req": server_cpu / max(1, len(p["lat"])) * 1000, **self._db(p, span, len(p["lat"]))}

    def _db(self, part: dict[str, Any], span: float, n: int) -> dict[str, float]:
        if not self.database:
            return {}
        return {"db_cpu": part["db_cpu_s"] / span, "db_ms_per_req": part["db_cpu_s"] / max(1, n) * 1000}


def _summary(lat: list[float]) -> dict[str, float]:
    return {"p50_ms": pct(lat, 50) * 1000, "p99_ms": pct(lat, 99) * 1000, "max_ms": max(lat, default=0) * 1000}


def _merge(parts: list[dict[str, Any]]) -> dict[Any, int]:
    statuses: dict[Any, int] = {}
    for p in parts:
        for k, v in p["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    return statuses


async def in_process(cfg: Path, args: argparse.Namespace, per_agent: list[list[int]]) -> dict[str, Any]:
    """The same decide-and-reserve without HTTP: `clients` tasks calling Gate.request_dial
    in this process on the same database (what the store and policy cost alone)."""
    from dialer.bootstrap import open_services
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


P99_GOAL_MS = 25.0
RATE_GOAL = 1000.0


def pgbench_anchor(url: str, clients: int, seconds: float) -> dict[str, Any]:
    """`pgbench -N` (a durable three-statement transaction) with the gate's client count,
    on the same server in the run's own database: what the engine does on this machine
    with no application in front of it."""
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    init = subprocess.run(["pgbench", "-i", "-q", "-s", "1", dsn], capture_output=True, text=True)
    if init.returncode != 0:
        return {"error": init.stderr.strip()[-300:]}
    run = subprocess.run(["pgbench", "-N", "-n", "-c", str(clients), "-j", "2", "-T", str(int(seconds)), dsn],
                         capture_output=True, text=True)
    tps = [line for line in run.stdout.splitlines() if line.startswith("tps =")]
    lat = [line for line in run.stdout.splitlines() if line.startswith("latency average")]
    if run.returncode != 0 or not tps:
        return {"error": (run.stderr or run.stdout).strip()[-300:]}
    return {"tps": float(tps[0].split()[2]), "latency_avg_ms": float(lat[0].split()[3]) if lat else None,
            "clients": clients}


async def run_one(store: str, prior: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gatebench-") as d:
        wd = Path(d)
        url = f"sqlite+aiosqlite:///{wd / 'var' / 'dialgate.db'}" if store == "sqlite" else await private_pg_db(args.pg_url)
        cfg = wd / "config.toml"
        cfg.write_text(f'[paths]\ndata_dir = "{wd / "var"}"\n[store]\nurl = "{url}"\n'
                       f'sqlite_synchronous = "{args.sqlite_synchronous}"\nchain_shards = {args.chain_shards}\n'
                       f'[log]\nlevel = "{args.log_level}"\n[gate]\nauth_cache_s = 300.0\n{POLICY}', encoding="utf-8")
        cli(cfg, "db", "upgrade")
        tokens = await make_users(cfg, [("data-x", "data")] + [(f"agent-{i}", "collector") for i in range(args.clients)])
        ports = [free_port() for _ in range(args.instances)]
        port = ports[0]
        servers = [Server(cfg, p, args.workers) for p in ports]
        load = Load("127.0.0.1", ports, [x.proc.pid for x in servers], args.client_procs, args.timeout,
                    url.rsplit("/", 1)[1] if store == "postgres" else None)
        try:
            for server in servers:
                await server.ready(tokens["data-x"])
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base, timeout=120) as c:
                r = await c.post("/v1/cases:import", json={"cases": cases_doc(args.cases, args.clients)},
                                 headers={"Authorization": f"Bearer {tokens['data-x']}"})
                assert r.status_code == 200, r.text
            seed_s = await seed_prior(url, prior)
            per_agent = [[i for i in range(args.cases) if i % args.clients == a] for a in range(args.clients)]

            def dial(w: int, i: int) -> bytes:
                """Collector w's i-th click: its own cases in turn, the debtor's number, then the family one."""
                mine = per_agent[w]
                k = mine[(i // args.clients) % len(mine)]
                number = f"+86139{k:08d}" if (i // (args.clients * len(mine))) % 2 == 0 else f"+86137{k:08d}"
                return http_request("127.0.0.1", port, "POST", "/v1/dials", tokens[f"agent-{w}"],
                                    {"case_id": f"K-{k}", "number": number, "agent_id": f"agent-{w}"})

            def health(w: int, i: int) -> bytes:
                return http_request("127.0.0.1", port, "GET", "/healthz", tokens[f"agent-{w}"])

            seq = iter(range(10**9))  # one click sequence across stages: no stage repeats another's clicks

            def plans(make: Any, total: int) -> list[list[bytes]]:
                out: list[list[bytes]] = [[] for _ in range(args.clients)]
                for _ in range(total):
                    i = next(seq)
                    out[i % args.clients].append(make(i % args.clients, i))
                return out

            def stream(make: Any, total: int) -> list[bytes]:
                return [make(i % args.clients, i) for i in (next(seq) for _ in range(total))]

            res: dict[str, Any] = {"store": store, "prior": prior, "seed_s": seed_s, "open": [], "sweep": []}
            await load.closed(plans(dial, 500))  # warm-up
            res["gate"] = await load.closed(plans(dial, args.requests))
            res["anchor"] = await load.closed(plans(health, args.requests))
            for rate in args.rates:
                n = max(200, int(rate * args.open_seconds))
                res["open"].append(await load.open(stream(dial, n), rate, args.clients))
            top = max(args.rates, default=0)
            if top:
                n = max(200, int(top * args.open_seconds))
                res["open_anchor"] = await load.open(stream(health, n), top, args.clients)
            for rate in args.sweep:
                o = await load.open(stream(dial, max(200, int(rate * args.open_seconds))), rate, args.clients)
                res["sweep"].append(o)
                if o["p99_ms"] > 4 * P99_GOAL_MS or any(not isinstance(k, int) for k in o["statuses"]):
                    break  # past saturation: the queue only grows from here
            for server in servers:
                server.stop()
            res["inproc"] = await in_process(cfg, args, per_agent) if args.inproc else None
            res["instances"] = args.instances
            if store == "postgres" and args.pgbench:
                res["pgbench"] = pgbench_anchor(url, args.clients, args.pgbench_seconds)
        finally:
            load.close()
            for server in servers:
                server.stop()
            if store == "postgres":
                await drop_pg_db(url)
        return res


def _cpu(x: dict[str, Any]) -> str:
    db = (f"PostgreSQL backends {x['db_cpu'] * 100:3.0f}% ({x['db_ms_per_req']:.2f} ms/request), "
          if "db_cpu" in x else "")
    return (f"server CPU {x['server_cpu'] * 100:3.0f}% ({x['server_ms_per_req']:.2f} ms/request), {db}"
            f"client CPU {x['client_cpu'] * 100:3.0f}% of a core; CPU pressure {x['cpu_pressure'] * 100:3.0f}%")


def _lat(x: dict[str, Any]) -> str:
    return f"p50 {x['p50_ms']:6.1f} ms  p99 {x['p99_ms']:6.1f} ms"


def _statuses(x: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(x["statuses"].items(), key=lambda kv: str(kv[0])))


def show(r: dict[str, Any], args: argparse.Namespace) -> None:
    g, a = r["gate"], r["anchor"]
    n = r.get("instances", 1)
    print(f"\n{r['store']}, {r['prior']:,} prior attempts (seeded in {r['seed_s']:.1f} s)"
          + (f", {n} `dialgate serve` instances on the one database, clients spread over them" if n > 1 else ""))
    print(f"  closed loop, {args.clients} clients each waiting for its answer — the THROUGHPUT figure "
          f"(goal >= {RATE_GOAL:,.0f}/s); latency here is queueing, mean = clients / throughput:")
    allowed = g["statuses"].get(201, 0) / max(1, g["n"]) * 100
    print(f"    POST /v1/dials         {g['per_s']:7.0f} decisions/s  {_lat(g)}  [{_cpu(g)}]  "
          f"({allowed:.0f}% allowed; {_statuses(g)})")
    print(f"    anchor GET /healthz    {a['per_s']:7.0f} req/s        {_lat(a)}  [{_cpu(a)}]")
    if r["open"]:
        print(f"  open loop, requests arriving at a fixed rate whatever the answers — the LATENCY figure "
              f"(goal p99 <= {P99_GOAL_MS:.0f} ms at {RATE_GOAL:,.0f}/s):")
        for o in r["open"]:
            print(f"    POST /v1/dials at {o['rate']:5.0f}/s  {_lat(o)}  max {o['max_ms']:6.1f} ms  "
                  f"(achieved {o['achieved']:5.0f}/s; {_statuses(o)}) [{_cpu(o)}]")
        oa = r.get("open_anchor")
        if oa:
            print(f"    anchor GET /healthz at {oa['rate']:5.0f}/s  {_lat(oa)}  max {oa['max_ms']:6.1f} ms  "
                  f"(achieved {oa['achieved']:5.0f}/s) [{_cpu(oa)}]")
    if r["sweep"]:
        print(f"  open-loop sweep, POST /v1/dials:")
        for o in r["sweep"]:
            print(f"    at {o['rate']:5.0f}/s  {_lat(o)}  (achieved {o['achieved']:5.0f}/s; {_statuses(o)}) [{_cpu(o)}]")
        ok = [o["rate"] for o in r["sweep"] if o["p99_ms"] <= P99_GOAL_MS
              and all(isinstance(k, int) for k in o["statuses"])]
        print(f"    highest swept rate with p99 <= {P99_GOAL_MS:.0f} ms: {max(ok):,.0f}/s" if ok
              else f"    no swept rate kept p99 <= {P99_GOAL_MS:.0f} ms")
    pb = r.get("pgbench")
    if pb:
        if "tps" in pb:
            print(f"  anchor pgbench -N, {pb['clients']} clients, same server: {pb['tps']:7.0f} transactions/s "
                  f"(latency average {pb['latency_avg_ms']} ms); the gate's closed loop is "
                  f"{g['per_s'] / pb['tps']:.2f}x of it (goal >= 0.5x)")
        else:
            print(f"  anchor pgbench -N: failed: {pb['error']}")
    ip = r.get("inproc")
    if ip:
        print(f"  anchor in-process Gate.request_dial, {args.clients} tasks, no HTTP ({ip['n']} calls): "
              f"{ip['per_s']:7.0f} decisions/s  {_lat(ip)}")
    sys.stdout.flush()


_FIGURES = ("per_s", "achieved", "p50_ms", "p99_ms", "max_ms", "server_ms_per_req", "server_cpu", "client_cpu",
            "cpu_pressure", "db_cpu", "db_ms_per_req")


def _median_stage(stages: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(stages[0])
    for k in _FIGURES:
        if k in out:
            out[k] = statistics.median(x[k] for x in stages)
    return out


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One result whose figures are the runs' medians (each figure on its own)."""
    if len(runs) == 1:
        return runs[0]
    out = dict(runs[0])
    for key in ("gate", "anchor", "open_anchor"):
        if runs[0].get(key):
            out[key] = _median_stage([r[key] for r in runs])
    out["open"] = [_median_stage([r["open"][i] for r in runs]) for i in range(len(runs[0]["open"]))]
    return out


def show_spread(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Each stage's server CPU per request and p99 over the runs: median [least..most]."""

    def spread(stages: list[dict[str, Any]], key: str, fmt: str) -> str:
        v = sorted(x[key] for x in stages)
        return f"{fmt.format(statistics.median(v))} [{fmt.format(v[0])}..{fmt.format(v[-1])}]"

    def line(label: str, stages: list[dict[str, Any]]) -> None:
        print(f"    {label:28} server {spread(stages, 'server_ms_per_req', '{:.2f}')} ms/request, "
              f"p99 {spread(stages, 'p99_ms', '{:.1f}')} ms, CPU pressure {spread(stages, 'cpu_pressure', '{:.0%}')}")

    r0 = runs[0]
    print(f"\n{r0['store']}, {r0['prior']:,} prior attempts: {len(runs)} runs, median [least..most]")
    line("closed POST /v1/dials", [r["gate"] for r in runs])
    line("closed anchor GET /healthz", [r["anchor"] for r in runs])
    for i, o in enumerate(r0["open"]):
        line(f"open POST /v1/dials {o['rate']:.0f}/s", [r["open"][i] for r in runs])
    if r0.get("open_anchor"):
        line(f"open GET /healthz {r0['open_anchor']['rate']:.0f}/s", [r["open_anchor"] for r in runs])
    sys.stdout.flush()


def _floats(text: str) -> list[float]:
    if ":" in text:  # start:stop:step
        a, b, c = (float(x) for x in text.split(":"))
        return [a + k * c for k in range(int((b - a) / c) + 1)]
    return [float(x) for x in text.split(",") if x.strip() and float(x) > 0]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", choices=["sqlite", "postgres", "both"], default="sqlite")
    ap.add_argument("--pg-url", default=os.environ.get("DIALGATE_TEST_PG_URL", ""))
    ap.add_argument("--prior", default="1000,1000000", help="comma-separated prior attempt counts")
    ap.add_argument("--clients", type=int, default=50, help="closed-loop clients; connections in the open loop")
    ap.add_argument("--requests", type=int, default=5000, help="requests per closed-loop stage")
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--client-procs", type=int, default=1, help="client processes the closed-loop clients use")
    ap.add_argument("--rate", "--rates", dest="rates", type=_floats, default=[50.0, 1000.0],
                    help="open-loop arrival rates per second, comma-separated ('' or 0 to skip)")
    ap.add_argument("--sweep", type=_floats, default=[],
                    help="open-loop rate sweep START:STOP:STEP (e.g. 250:3000:250); stops past saturation")
    ap.add_argument("--open-seconds", type=float, default=8.0, help="length of each open-loop stage")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (counted as an error)")
    ap.add_argument("--workers", type=int, default=1, help="`dialgate serve --workers N` (HTTP worker processes)")
    ap.add_argument("--instances", type=int, default=1,
                    help="`dialgate serve` instances on the one database (PostgreSQL), clients spread over them")
    ap.add_argument("--no-pgbench", dest="pgbench", action="store_false",
                    help="skip the `pgbench -N` anchor of a PostgreSQL run")
    ap.add_argument("--pgbench-seconds", type=float, default=10.0)
    ap.add_argument("--sqlite-synchronous", default="FULL")
    ap.add_argument("--chain-shards", type=int, default=1,
                    help="`[store] chain_shards`: PostgreSQL chains per creditor (the bench's cases are one creditor's)")
    ap.add_argument("--log-level", default="warning", help="the server's [log] level")
    ap.add_argument("--no-inproc", dest="inproc", action="store_false", help="skip the in-process anchor")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per store and prior count (a fresh database and server each); with more than one, "
                         "the summary gives each figure's median and range: on a shared machine one run's "
                         "figures can be off by 20-30%%")
    ap.add_argument("--json", action="store_true", help="also print the raw results as JSON")
    args = ap.parse_args()
    if args.repeat < 1:
        raise SystemExit("--repeat: at least 1")
    stores = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    if "postgres" in stores and not args.pg_url:
        raise SystemExit("--pg-url (or DIALGATE_TEST_PG_URL) is needed for PostgreSQL")
    print(f"gate_bench: {args.clients} clients, {args.requests} requests per closed-loop stage, "
          f"{args.open_seconds:.0f} s per open-loop rate, {args.cases} cases, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at start; client ({args.client_procs} process, raw asyncio HTTP/1.1 keep-alive) "
          f"and server (one `dialgate serve`, {args.workers} HTTP worker process{'es' if args.workers > 1 else ''}) "
          f"share the machine; SQLite synchronous={args.sqlite_synchronous}, chain_shards={args.chain_shards}, "
          f"server log level {args.log_level}")
    results = []
    per_prior: list[dict[str, Any]] = []  # one (median) result per store and prior count
    for store in stores:
        for prior in (int(p) for p in args.prior.split(",")):
            runs = []
            for rep in range(args.repeat):
                if args.repeat > 1:
                    print(f"\n[run {rep + 1} of {args.repeat}]", end="")
                r = await run_one(store, prior, args)
                show(r, args)
                runs.append(r)
            results.extend(runs)
            if args.repeat > 1:
                show_spread(runs, args)
            per_prior.append(median_run(runs))
    print()
    for store in stores:
        rs = [r for r in per_prior if r["store"] == store]
        if args.repeat > 1:
            print(f"(medians of {args.repeat} runs each)")
        for r in rs:
            at = [o for o in r["open"] if o["rate"] == RATE_GOAL]
            lat = f"p99 {at[0]['p99_ms']:.1f} ms at {RATE_GOAL:,.0f}/s open loop" if at else "no open loop at 1,000/s"
            print(f"{store}, {r['prior']:,} prior: throughput {r['gate']['per_s']:,.0f}/s "
                  f"({'meets' if r['gate']['per_s'] >= RATE_GOAL else 'misses'} >= {RATE_GOAL:,.0f}/s); {lat}"
                  + (f" ({'meets' if at[0]['p99_ms'] <= P99_GOAL_MS else 'misses'} <= {P99_GOAL_MS:.0f} ms)" if at else ""))
        if len(rs) >= 2:
            lo, hi = rs[0], rs[-1]
            line = (f"{store}: latency at {hi['prior']:,} / at {lo['prior']:,} prior (goal <= 1.5x): closed loop "
                    f"p50 {hi['gate']['p50_ms'] / lo['gate']['p50_ms']:.2f}x, p99 {hi['gate']['p99_ms'] / lo['gate']['p99_ms']:.2f}x")
            for oh, ol in zip(hi["open"], lo["open"]):
                line += (f"; open loop at {oh['rate']:.0f}/s p50 {oh['p50_ms'] / ol['p50_ms']:.2f}x, "
                         f"p99 {oh['p99_ms'] / ol['p99_ms']:.2f}x")
            print(line)
    if args.json:
        print(json.dumps(results, default=str))


if __name__ == "__main__":
    asyncio.run(main())
