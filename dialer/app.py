"""The composition root: the one place where real adapters are plugged into the gate.

    build_app(config, clock=...) → FastAPI app. Its lifespan opens the adapters as async
    context managers (store first), migrates, builds `Services`, enters the extensions,
    and runs background work as named tasks until shutdown.

Plugging in (other components add ONE line here):
* `ROUTERS`: dotted module paths exporting `router` (an APIRouter). Handlers reach the
  services through `dialer.http.deps.Svc` (`svc.gate`, `svc.store`, `svc.config`, …).
* `EXTENSIONS`: ``"module:factory"`` where ``factory(services)`` returns an async
  context manager entered at start-up and exited at shutdown (SIP gate, MQTT relay,
  recording vault, PBX adapter). A factory reads its own raw config table with
  ``services.config.section("mqtt")`` and may replace ``services.gate.pbx`` or
  ``services.gate.recordings``; it runs its loops as named tasks it owns.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from contextlib import AsyncExitStack, asynccontextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from datetime import timedelta
from typing import Any, AsyncIterator, Awaitable, Callable

import structlog
from fastapi import FastAPI

from dialer.auth import USERS_REVISION_FILE, Authenticator, UsersRevision
from dialer.clock import SystemClock
from dialer.config import Config
from dialer.errors import ConfigError
from dialer.errors import BodyTooLarge
from dialer.evidence import EvidenceKey, EvidenceKeyError, load_key
from dialer.http import problems
from dialer.http.limits import TOO_LARGE_KEY, guard_body
from dialer.leadership import StaticLeadership, instance_name, lead
from dialer.ports import CaseStore, Clock
from dialer.usecases import Gate
from dialer.worklist import Worklist
from policy import PolicyBook, PolicyConfigError, load_policy

ROUTERS: list[str] = [
    "dialer.http.health",
    "dialer.http.docs",
    "dialer.http.cases",
    "dialer.http.case_actions",
    "dialer.http.worklist",
    "dialer.http.imports",
    "dialer.http.dials",
    "dialer.http.blocked",
    "dialer.http.recordings",
    "dialer.console.wiring",
    "dialer.http.attempts",
]

EXTENSIONS: list[str] = [
    "dialer.console.wiring:check_console_config",
    "dialer.import_jobs:open_import_jobs",
    "dialer.http.recordings:open_vault",
    "adapters.sip.service:open_sip_gate",
    "adapters.pbx.service:open_pbx",
    "adapters.mqtt.bridge:open_mqtt",
    "adapters.mqtt.bridge:open_mqtt_waker",
    "dialer.http.recordings:run_vault_jobs",
]
# What must exist once per host however many HTTP workers run (dialer/workers.py): a
# listener on a port. Only the pool's primary worker enters these.
PRIMARY_ONLY: frozenset[str] = frozenset({
    "adapters.sip.service:open_sip_gate",
})
# What must exist once across every instance on the store (dialer/leadership.py): the
# event relay and subscriptions, a registered user agent, the recordings sweep and
# inbox. Only the leader enters these (plus the expiry of stale authorisations), for as
# long as its term lasts.
LEADER_ONLY: frozenset[str] = frozenset({
    "adapters.pbx.service:open_pbx",
    "adapters.mqtt.bridge:open_mqtt",
    "dialer.http.recordings:run_vault_jobs",
})

log = structlog.get_logger("dialgate.app")


@dataclass
class Services:
    """What handlers, extensions and the CLI get: the wired application."""

    config: Config
    clock: Clock
    store: Any  # CaseStore (SqlAlchemyCaseStore: also .engine for extensions' tables)
    policies: PolicyBook
    gate: Gate
    auth: Authenticator
    # Optional components: set by their extensions while they run, None when not enabled.
    # sip / mqtt / pbx have a `health()` that /readyz and the console's health strip read.
    vault: Any = None  # recordings vault (dialer.http.recordings:open_vault)
    recordings_config: Any = None
    recordings_inbox: Any = None
    sip: Any = None  # SIP gate listener ([sip] listen)
    mqtt: Any = None  # MQTT bus ([mqtt] url)
    pbx: Any = None  # click-to-dial SIP user agent ([pbx] mode = "sip_ua")
    imports: Any = None  # import jobs (dialer.import_jobs:open_import_jobs)
    # "primary" runs everything; a "secondary" HTTP worker (dialer/workers.py) leaves
    # the once-per-host parts (PRIMARY_ONLY) to the primary.
    role: str = "primary"
    # Which instance runs LEADER_ONLY (dialer/leadership.py); /readyz reports it.
    leadership: Any = None

    def region_of(self, creditor: str) -> str:
        return self.policies.for_creditor(creditor).default_region


def load_policies(config: Config) -> PolicyBook:
    from dialer.holidays_cli import HolidayCalendarError, read_calendar

    table = config.policy_table
    try:
        return load_policy(table, read_calendar(table))
    except (PolicyConfigError, HolidayCalendarError) as exc:
        raise ConfigError(f"{config.source}: {exc}") from exc


def make_store(config: Config) -> Any:
    from adapters.db.store import SqlAlchemyCaseStore

    return SqlAlchemyCaseStore(config.store, events=events_wanted(config), evidence=evidence_key(config))


def evidence_key(config: Config) -> EvidenceKey:
    """The `[audit]` key the evidence chains are MACed with; a bad one stops the start."""
    try:
        return load_key(config.paths.data_dir, config.audit.key_file, config.audit.key_env)
    except EvidenceKeyError as exc:
        raise ConfigError(f"{config.source}: audit: {exc}") from exc


def events_wanted(config: Config) -> bool:
    """Whether units of work keep their outbox events: only when an event bus (`[mqtt]
    url`) will publish them. A bad `[mqtt]` table counts as wanted; the bus's own
    start-up refuses it with the reason."""
    from adapters.mqtt.config import MqttConfigError, load_mqtt_config

    try:
        return load_mqtt_config(config.section("mqtt"), os.environ) is not None
    except MqttConfigError:
        return True


@asynccontextmanager
async def open_services(config: Config, clock: Clock | None = None, *, migrate: bool | None = None) -> AsyncIterator[Services]:
    """Open the store (and migrate) and wire the gate; used by the app and the CLI."""
    from adapters.db.migrate import upgrade

    clock = clock or SystemClock()
    policies = load_policies(config)
    async with make_store(config) as store:
        if config.store.migrate_on_start if migrate is None else migrate:
            await upgrade(store)
            # Heads written before the evidence key existed go under it now (a
            # migration has no key): from here on their chains are keyed.
            async with store.write() as uow:
                await uow.decisions.anchor()
        gate = Gate(
            store=store,
            clock=clock,
            policies=policies,
            attempt_validity=timedelta(seconds=config.gate.attempt_validity_s),
            recorder_check_ttl_s=config.gate.recorder_check_s,
        )
        yield Services(
            config=config, clock=clock, store=store, policies=policies, gate=gate,
            auth=Authenticator(store, config.gate.auth_cache_s,
                               revision=UsersRevision(config.paths.data_dir / USERS_REVISION_FILE)),
        )
        await gate.drain()


def _load(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr or "router")


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

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
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

        async def send_with_id(message: dict[str, Any]) -> None:
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

        async def send_with_id_raw(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        guarded = await guard_body(scope, receive, send_with_id)
        if guarded is None:
            return  # answered (413, 401, …) without reading the body
        try:
            if scope["method"] == "POST" and scope["path"] == "/v1/dials":
                from dialer.http.dials import fast_dial  # the hot path, answered as the route would

                await fast_dial(scope["app"], self.app, scope, guarded, send_with_id)
                return
            await self.app(scope, guarded, send_with_id)
        except BodyTooLarge as exc:
            if started:
                raise
            started = True
            await _answer_problem(scope, exc, send_with_id_raw)


async def _answer_problem(scope: dict[str, Any], exc: Any, send: Any) -> None:
    body = problems.problem_response(exc.to_problem(problems.instance_of_scope(scope)), exc.status,
                                     {"Connection": "close"})

    async def nothing() -> dict[str, Any]:
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


def _open_leadership(config: Config, role: str) -> Any:
    """SQLite: the pool's file lock decided (a lone process leads). PostgreSQL: an
    advisory lock decides among every instance; a pool's secondary only observes."""
    if not config.store.is_postgres:
        return nullcontext(StaticLeadership(role == "primary", instance_name(config.http.port)))
    from adapters.db.leader import PgAdvisoryLeadership

    return PgAdvisoryLeadership(config.store.url, instance_name(config.http.port), campaign=role == "primary")


async def _first_round(leadership: Any, tried: asyncio.Event, timeout_s: float = 10.0) -> None:
    """Start-up waits for the first campaign round, and when it won, for the leader's
    work to be running: a lone instance then serves as it would on SQLite."""
    try:
        async with asyncio.timeout(timeout_s):
            await leadership.asked.wait()
            if leadership.token is not None:
                await tried.wait()
    except TimeoutError:
        log.warning("leader.first_round_slow", instance=leadership.instance, waited_s=timeout_s)


def _singleton_jobs(services: Services, config: Config) -> list[tuple[str, float, Callable[[], Any]]]:
    """Periodic work that runs once across every instance (the leader's, beside the
    expiry job): the first-call sweep and the export of the evidence heads."""
    jobs: list[tuple[str, float, Callable[[], Any]]] = [
        ("first-call-sweep", 60.0, Worklist(services.gate).sweep_first_calls),
    ]
    if config.audit.export_interval_s > 0:
        jobs.append(("export-heads", config.audit.export_interval_s, lambda: _export_heads(services)))
    return jobs


def _fenced(services: Services, token: int, work: Callable[[], Any]) -> Callable[[], Any]:
    async def run() -> None:
        if services.leadership.holds(token):  # fenced: not after the term ran out
            await work()

    return run


def _term(services: Services, stop: asyncio.Event) -> Callable[[int], Any]:
    """What the leader runs for one term: LEADER_ONLY, the expiry job and the other
    singleton jobs; cancelled and left as soon as the term ends."""

    @asynccontextmanager
    async def enter(token: int) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for ext in EXTENSIONS:
                if ext in LEADER_ONLY:
                    await stack.enter_async_context(_load(ext)(services))
            ended = asyncio.Event()

            async def expire() -> None:
                if services.leadership.holds(token):  # fenced: not after the term ran out
                    await services.gate.expire_attempts()

            jobs = [asyncio.create_task(_every(15.0, expire, ended, "expire-attempts"), name="expire-attempts")]
            for name, every, work in _singleton_jobs(services, services.config):
                jobs.append(asyncio.create_task(_every(every, _fenced(services, token, work), ended, name), name=name))
            try:
                yield
            finally:
                ended.set()
                for job in jobs:
                    job.cancel()
                await asyncio.gather(*jobs, return_exceptions=True)

    return enter


def build_app(config: Config, clock: Clock | None = None, role: str = "primary") -> FastAPI:
    """The FastAPI application over `config`; adapters open in its lifespan. `role`
    "secondary" is an extra HTTP worker of a pool (dialer/workers.py)."""
    if role not in ("primary", "secondary"):
        raise ValueError(f"unknown role {role!r}")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            services = await stack.enter_async_context(open_services(config, clock))
            services.role = role
            app.state.services = services
            leadership = await stack.enter_async_context(_open_leadership(config, role))
            services.leadership = leadership
            static = isinstance(leadership, StaticLeadership)
            elected = static and leadership.token is not None
            for ext in EXTENSIONS:
                if ext in LEADER_ONLY and not elected:
                    continue  # entered by `lead` below for each term this instance wins
                if role == "primary" or ext not in PRIMARY_ONLY:
                    await stack.enter_async_context(_load(ext)(services))
            stop = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                if elected:
                    tg.create_task(
                        _every(15.0, services.gate.expire_attempts, stop, "expire-attempts"), name="expire-attempts"
                    )
                    for name, every, job in _singleton_jobs(services, config):
                        tg.create_task(_every(every, job, stop, name), name=name)
                elif not static:
                    tried = asyncio.Event()
                    tg.create_task(lead(leadership, _term(services, stop), stop, tried=tried), name="leader-term")
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
    for path in ROUTERS:
        app.include_router(_load(path))
    _document_bearer_auth(app)
    app.add_middleware(RequestContext)
    return app
