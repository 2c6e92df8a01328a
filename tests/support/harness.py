"""The gate service under test: one harness for every suite that runs it whole.

In-process, `in_process(config, users=..., cases=...)`: the real app and its lifespan
(the composition root, the store on a real SQLite file or the PostgreSQL the config
names, the extensions the config enables), a fixed clock, users added through
`dialer.auth`, cases imported through `POST /v1/cases:import`; requests go through
httpx's ASGI transport. It yields a `Service` (or the subclass a suite passes as
`handle`), whose `svc` is the running `Services` for reading rows back.

As processes: a config file (`write_config`), users added with `dialgate users add`
(`add_users`), `dialgate serve` on a free port (`serve`), ready once `/readyz` answers
200 (`wait_ready`), ended by `stop` or `terminate`; `start_cluster(config, n, users)`
does all of it for `n` processes sharing one database, `stop_cluster` ends them.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlalchemy import func, select

from tests.support.builders import ALL_DAY_POLICY, TUESDAY_10AM, User
from tests.support.net import free_port

REPO = Path(__file__).resolve().parents[2]
DIALGATE = [sys.executable, "-m", "dialer.cli"]


@dataclass
class Service:
    """A running gate seen through its HTTP API as the users in `tokens`."""

    client: httpx.AsyncClient
    tokens: dict[str, str]
    svc: Any = None  # the in-process `Services`: the store, the gate, the vault
    clock: Any = None  # the in-process `FixedClock` a test may move
    app: Any = None

    def auth(self, who: str, **headers: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}", **headers}

    async def get(self, path: str, who: str, **kw: Any) -> httpx.Response:
        return await self.client.get(path, headers=self.auth(who, **kw.pop("headers", {})), **kw)

    async def post(self, path: str, who: str, json: Any = None, **kw: Any) -> httpx.Response:
        return await self.client.post(path, json=json, headers=self.auth(who, **kw.pop("headers", {})), **kw)

    async def delete(self, path: str, who: str, **kw: Any) -> httpx.Response:
        return await self.client.delete(path, headers=self.auth(who, **kw.pop("headers", {})), **kw)

    async def dial(self, who: str, case_id: str, number: str, agent: str | None = None) -> httpx.Response:
        return await self.post("/v1/dials", who, {"case_id": case_id, "number": number, "agent_id": agent or who})

    async def import_cases(self, who: str, cases: Sequence[Mapping[str, Any]]) -> None:
        r = await self.post("/v1/cases:import", who, {"cases": list(cases)})
        assert r.status_code == 200, r.text

    async def rows(self, table: Any, *where: Any) -> int:
        """How many rows of `table` (matching `where`) the store holds."""
        async with self.svc.store.read() as uow:
            return (await uow.conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one()

    async def outbox(self) -> list[Any]:
        """The outbox's rows in the order the relay publishes them."""
        from adapters.db import tables

        async with self.svc.store.read() as uow:
            return list((await uow.conn.execute(select(tables.outbox).order_by(tables.outbox.c.id))).all())


S = TypeVar("S", bound=Service)


@asynccontextmanager
async def in_process(
    config: Mapping[str, Any],
    *,
    users: Iterable[User],
    cases: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    at: datetime = TUESDAY_10AM,
    handle: Callable[..., S] = Service,  # type: ignore[assignment]
    prepare: Callable[[Any], Awaitable[None] | None] | None = None,
    with_app: Callable[[Any], None] | None = None,
    client_address: tuple[str, int] | None = None,
    drain: bool = True,
) -> AsyncIterator[S]:
    """The real app on `config` (as `build_config` takes it) with a clock fixed at `at`.

    `prepare(services)` runs once the lifespan has started, before any user is added
    (waiting for the broker, creating a creditor's key); `with_app(app)` before it
    starts (another router). `cases` maps the importing user to the documents it
    imports. `client_address` is the peer the service sees; `drain` waits for the
    gate's background work before the lifespan ends."""
    from dialer.app import build_app
    from dialer.auth import add_user
    from dialer.clock import FixedClock
    from dialer.config import build_config

    clock = FixedClock(at)
    app = build_app(build_config(dict(config)), clock=clock)
    if with_app is not None:
        with_app(app)
    async with app.router.lifespan_context(app):
        svc = app.state.services
        if prepare is not None:
            done = prepare(svc)
            if inspect.isawaitable(done):
                await done
        tokens = {}
        for name, role, creditors in users:
            _, tokens[name] = await add_user(svc.store, clock, name, role, frozenset(creditors))
        peer = {"client": client_address} if client_address else {}
        transport = httpx.ASGITransport(app=app, **peer)
        async with httpx.AsyncClient(transport=transport, base_url="http://gate", timeout=30) as client:
            service = handle(client=client, tokens=tokens, svc=svc, clock=clock, app=app)
            for who, docs in (cases or {}).items():
                await service.import_cases(who, docs)
            yield service
        if drain:
            await svc.gate.drain()


# --------------------------------------------------------------------------------------
# `dialgate serve` processes


def process_env(*, hermetic: bool = False) -> dict[str, str]:
    """The environment of a `dialgate` process; `hermetic` drops every `DIALGATE_`
    variable, so a developer's own settings cannot change what the test sees."""
    env = {k: v for k, v in os.environ.items() if not (hermetic and k.startswith("DIALGATE_"))}
    return {**env, "PYTHONPATH": str(REPO)}


def cli(config: Path, *args: str, timeout: float = 120, env: Mapping[str, str] | None = None) -> str:
    """`dialgate <args> --config <config>`'s standard output; an AssertionError with its
    standard error when it fails."""
    done = subprocess.run(
        [*DIALGATE, *args, "--config", str(config)], cwd=config.parent,
        env=dict(env) if env is not None else process_env(),
        capture_output=True, text=True, timeout=timeout,
    )
    if done.returncode != 0:
        raise AssertionError(f"dialgate {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def add_users(config: Path, users: Iterable[User], *, env: Mapping[str, str] | None = None,
              workers: int = 1) -> dict[str, str]:
    """`dialgate users add` for each `(name, role, creditors)`; their tokens by name.
    With `workers` > 1 the first is added alone (it may create and migrate the
    database), the rest side by side."""

    def add(user: User) -> tuple[str, str]:
        name, role, creditors = user
        args = ["users", "add", "--name", name, "--role", role]
        for creditor in creditors:
            args += ["--creditor", creditor]
        return name, cli(config, *args, env=env).strip().splitlines()[-1]

    todo = list(users)
    if workers <= 1 or len(todo) < 2:
        return dict(add(u) for u in todo)
    tokens = dict([add(todo[0])])
    with ThreadPoolExecutor(max_workers=workers) as pool:
        tokens.update(pool.map(add, todo[1:]))
    return tokens


def serve(config: Path, port: int, *, env: Mapping[str, str] | None = None,
          log: Path | None = None) -> subprocess.Popen[bytes]:
    """`dialgate serve` on `port`. Standard error is kept for `wait_ready` to report,
    or, with `log`, both outputs go to that file (a long run never fills a pipe)."""
    args = [*DIALGATE, "serve", "--config", str(config), "--port", str(port)]
    penv = dict(env) if env is not None else process_env()
    if log is None:
        return subprocess.Popen(args, cwd=config.parent, env=penv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with open(log, "wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(args, cwd=config.parent, env=penv, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL when it has not stopped within `timeout` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    if proc.stderr:
        proc.stderr.close()


def write_config(directory: Path, store_url: str, extra: str = "") -> Path:
    """`directory/config.toml`: data under `directory/var`, the given store, warnings
    only, `extra` TOML, and every creditor callable at any hour (the processes run on
    the wall clock)."""
    cfg = directory / "config.toml"
    cfg.write_text(
        f'[paths]\ndata_dir = "{directory / "var"}"\n[store]\nurl = "{store_url}"\n'
        f'[log]\nlevel = "warning"\n{extra}{ALL_DAY_POLICY}',
        encoding="utf-8",
    )
    return cfg


async def wait_ready(client: httpx.AsyncClient, url: str, token: str, proc: subprocess.Popen[bytes],
                     timeout: float = 60) -> None:
    """Poll `/readyz` until the process answers 200 (bounded; fails at once if the
    process dies): a starting service gives no other sign of being ready."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if proc.poll() is not None:
            said = proc.stderr.read().decode()[-2000:] if proc.stderr is not None else "(stderr not captured)"
            raise AssertionError(f"dialgate serve exited with {proc.returncode}: {said}")
        try:
            r = await client.get(url + "/readyz", headers={"Authorization": f"Bearer {token}"}, timeout=2)
            if r.status_code == 200:
                return
        except httpx.TransportError:
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{url} not ready within {timeout:.0f} s")
        await asyncio.sleep(0.1)


@dataclass
class Cluster:
    """N `dialgate serve` processes sharing one database."""

    config: Path
    ports: list[int]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i % len(self.ports)]}"


async def start_cluster(config: Path, n: int, users: list[tuple[str, str, str]]) -> Cluster:
    """Migrate, add `users` as `(name, role, creditor)`, start `n` processes on free
    ports and wait until each is ready."""
    cli(config, "db", "upgrade")
    cluster = Cluster(config=config, ports=[free_port() for _ in range(n)])
    cluster.tokens = add_users(config, [(name, role, (creditor,)) for name, role, creditor in users])
    cluster.procs = [serve(config, port) for port in cluster.ports]
    token = next(iter(cluster.tokens.values()))
    async with httpx.AsyncClient() as client:
        await asyncio.gather(*(wait_ready(client, cluster.url(i), token, p) for i, p in enumerate(cluster.procs)))
    return cluster


def terminate(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM `proc` and return its exit code; killed (and TimeoutExpired re-raised)
    when it has not stopped within `timeout` seconds."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def stop_cluster(cluster: Cluster) -> None:
    for p in cluster.procs:  # all signalled first: they stop side by side
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in cluster.procs:
        stop(p)
