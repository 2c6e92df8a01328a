"""The HTTP application: `build_app(config, …)` → FastAPI app over `dialer.bootstrap`.

Its lifespan opens the services (`dialer.bootstrap.open_services`: the store, migrated,
and the gate), decides who leads, enters the extensions where they run (every worker,
the pool's primary, or the leader for each term it holds), and runs the periodic
singleton jobs as named tasks until shutdown. The routers and extensions are the
composition root's (`dialer.bootstrap.routers`, `dialer.bootstrap.extensions`).
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dialer.bootstrap import Extension, extensions, open_leadership, open_services, routers
from dialer.config import Config
from dialer.errors import ApiError, BodyTooLarge
from dialer.http import problems
from dialer.http.dials import fast_dial
from dialer.http.limits import TOO_LARGE_KEY, guard_body, nul_in_address
from dialer.leadership import StaticLeadership, lead
from dialer.ports import Clock, Pbx, RecordingStore
from dialer.services import Campaign, Role, ServiceStore, Services
from dialer.worklist import Worklist

log = structlog.get_logger("dialgate.app")

Job = Callable[[], Awaitable[object]]


async def _every(seconds: float, job: Callable[[], Awaitable[Any]], stop: asyncio.Event, name: str) -> None:
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=seconds)
            return
        except TimeoutError:
            pass
        try:
            await job()
        except Exception as exc:  # noqa: BLE001 - a background job must not kill the service
            log.warning("background.failed", task=name, error=str(exc))


def heads_file(config: Config) -> Path:
    return Path(config.audit.heads_file) if config.audit.heads_file else config.paths.data_dir / "evidence-heads.jsonl"


async def _export_heads(services: Services) -> None:
    """The chain heads to `[audit] heads_file` and, as an `evidence.heads` event, to the
    log: two copies outside the database that a later rollback cannot reach."""
    from dialer.audit import export_heads

    doc = await export_heads(services.store, heads_file(services.config), services.clock.now())
    log.info("evidence.heads", key_id=doc["key_id"], heads=doc["heads"])


class RequestContext:
    """Pure ASGI middleware: a request id per request, bound for every log line; and the
    limits checked before a body is read (`dialer.http.limits`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        for k, v in scope.get("headers", ()):
            if k == b"x-request-id":
                rid = v.decode("latin-1")[:64]
                break
        rid = rid or os.urandom(16).hex()  # 32 hex digits like uuid4().hex, at a third of the cost
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=rid)
        header = (b"x-request-id", rid.encode("latin-1"))
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                if started:
                    return  # the 413 below was sent in its place
                too_large = scope.get(TOO_LARGE_KEY)
                if too_large is not None:  # a reader answered its own way: the answer is 413
                    started = True
                    await _answer_problem(scope, too_large, send_with_id_raw)
                    return
                started = True
                message["headers"] = [*message.get("headers", ()), header]
            elif scope.get(TOO_LARGE_KEY) is not None:
                return  # the body of the answer the 413 replaced
            await send(message)

        async def send_with_id_raw(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        nul = nul_in_address(scope)
        if nul is not None:
            await _answer_problem(scope, nul, send_with_id_raw)
            return
        guarded = await guard_body(scope, receive, send_with_id)
        if guarded is None:
            return  # answered (413, 401, …) without reading the body
        try:
            if scope["method"] == "POST" and scope["path"] == "/v1/dials":
                # the hot path, answered as the route would
                await fast_dial(scope["app"], self.app, scope, guarded, send_with_id)
                return
            await self.app(scope, guarded, send_with_id)
        except BodyTooLarge as exc:
            if started:
                raise
            started = True
            await _answer_problem(scope, exc, send_with_id_raw)


async def _answer_problem(scope: Scope, exc: ApiError, send: Send) -> None:
    body = problems.problem_response(exc.to_problem(problems.instance_of_scope(scope)), exc.status,
                                     {"Connection": "close"})

    async def nothing() -> Message:
        return {"type": "http.disconnect"}

    await body(scope, nothing, send)


def _document_bearer_auth(app: FastAPI) -> None:
    """Every endpoint takes `Authorization: Bearer <token>` (read from the request by
    `dialer.http.deps`, not declared per route): say so once in the OpenAPI schema,
    so /docs shows the scheme and its Authorize button."""
    from fastapi.openapi.utils import get_openapi

    def schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            doc.setdefault("components", {})["securitySchemes"] = {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The token `dialgate users add` printed once. Every endpoint needs one.",
                }
            }
            doc["security"] = [{"bearer": []}]
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = schema  # type: ignore[method-assign]


async def _first_round(leadership: Campaign, tried: asyncio.Event, timeout_s: float = 10.0) -> None:
    """Start-up waits for the first campaign round, and when it won, for the leader's
    work to be running: a lone instance then serves as it would on SQLite."""
    try:
        async with asyncio.timeout(timeout_s):
            await leadership.asked.wait()
            if leadership.token is not None:
                await tried.wait()
    except TimeoutError:
        log.warning("leader.first_round_slow", instance=leadership.instance, waited_s=timeout_s)


def _singleton_jobs(services: Services) -> list[tuple[str, float, Job]]:
    """Periodic work that runs once across every instance (the leader's): the expiry of
    stale authorisations, the first-call sweep and the export of the evidence heads."""
    jobs: list[tuple[str, float, Job]] = [
        ("expire-attempts", 15.0, services.gate.expire_attempts),
        ("first-call-sweep", 60.0, Worklist(services.gate).sweep_first_calls),
    ]
    if services.config.audit.export_interval_s > 0:
        jobs.append(("export-heads", services.config.audit.export_interval_s, lambda: _export_heads(services)))
    return jobs


def _fenced(leadership: Campaign, token: int, work: Job) -> Job:
    async def run() -> None:
        if leadership.holds(token):  # fenced: not after the term ran out
            await work()

    return run


def _term(services: Services, leadership: Campaign, leader_only: list[Extension],
          ) -> Callable[[int], AbstractAsyncContextManager[None]]:
    """What the leader runs for one term: the leader's extensions and the singleton
    jobs; cancelled and left as soon as the term ends."""

    @asynccontextmanager
    async def enter(token: int) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for ext in leader_only:
                await stack.enter_async_context(ext.open(services))
            ended = asyncio.Event()
            jobs = [asyncio.create_task(_every(every, _fenced(leadership, token, work), ended, name), name=name)
                    for name, every, work in _singleton_jobs(services)]
            try:
                yield
            finally:
                ended.set()
                for job in jobs:
                    job.cancel()
                await asyncio.gather(*jobs, return_exceptions=True)

    return enter


def build_app(
    config: Config,
    clock: Clock | None = None,
    role: Role = "primary",
    *,
    store: ServiceStore | None = None,
    pbx: Pbx | None = None,
    recordings: RecordingStore | None = None,
) -> FastAPI:
    """The FastAPI application over `config`; the services open in its lifespan, with
    the adapters passed here in place of the configured ones. `role` "secondary" is
    an extra HTTP worker of a pool (dialer/workers.py)."""
    if role not in ("primary", "secondary"):
        raise ValueError(f"unknown role {role!r}")
    components = extensions()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            services = await stack.enter_async_context(
                open_services(config, clock, store=store, pbx=pbx, recordings=recordings, role=role))
            app.state.services = services
            leadership = await stack.enter_async_context(open_leadership(config, role))
            services.leadership = leadership
            static = isinstance(leadership, StaticLeadership)
            elected = static and leadership.token is not None
            for ext in components:
                if ext.runs == "leader" and not elected:
                    continue  # entered by `lead` below for each term this instance wins
                if ext.runs != "primary" or role == "primary":
                    await stack.enter_async_context(ext.open(services))
            stop = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                if elected:
                    for name, every, job in _singleton_jobs(services):
                        tg.create_task(_every(every, job, stop, name), name=name)
                elif not static:
                    tried = asyncio.Event()
                    leader_only = [ext for ext in components if ext.runs == "leader"]
                    tg.create_task(lead(leadership, _term(services, leadership, leader_only), stop, tried=tried),
                                   name="leader-term")
                    await _first_round(leadership, tried)
                # Decisions carry their creditor's policy version; the book's version hashes them all.
                log.info("service.started", store=config.store.url.split("://")[0],
                         policy_book_version=services.policies.version,
                         policy_versions=services.policies.versions(), role=role, pid=os.getpid())
                try:
                    yield
                finally:
                    stop.set()
            log.info("service.stopped")

    app = FastAPI(
        title="DialGate",
        version="1",
        summary="Compliance gate between a collections call center's PBX and its case store",
        lifespan=lifespan,
        # FastAPI's built-in OpenTelemetry hooks run on every request; the service
        # exports its own Prometheus metrics (/metrics) and structured logs instead.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # FastAPI's own /docs and /openapi.json would answer anyone: dialer.http.docs
        # serves both behind the bearer token instead.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    problems.install(app)
    for router in routers():
        app.include_router(router)
    _document_bearer_auth(app)
    app.add_middleware(RequestContext)
    return app


def freeze_long_lived() -> None:
    """Collect once, then keep everything alive now out of the collector's walks and
    make young collections rarer (see `frozen_after_startup`)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, 20, 20)


def frozen_after_startup(app: FastAPI) -> FastAPI:
    """Once start-up is done, everything alive (modules, the app, the store, the policy)
    stays for the life of the process: `gc.freeze()` takes it out of the collector's
    walks, so a full collection under load costs the requests' garbage, not ~10^5
    long-lived objects (a latency spike every few thousand requests otherwise). Young
    collections run less often too: each dial allocates thousands of short-lived objects."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as state:
            freeze_long_lived()
            yield state

    app.router.lifespan_context = lifespan
    return app
