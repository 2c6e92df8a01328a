"""The composition root: the one module of `dialer/` that imports adapters.

    bootstrap(config, *, store=…, clock=…, pbx=…, recordings=…) → Services
        wires the gate over a store; real adapters unless the caller passes its own
        (tests pass fakes, benchmarks a tuned store). Nothing is opened yet.
    open_services(config, …) → async context manager
        bootstrap, then open the store, migrate, and drain the gate on the way out:
        what `serve`, the CLI commands, tests and benchmarks enter.
    routers() / extensions()
        the HTTP API's routers and the components started with the service, named
        by import, each extension with where it runs (every worker, the pool's
        primary, or the one leader across instances).

`dialer.app.build_app` turns these into the FastAPI application.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from dialer.clock import SystemClock
from dialer.config import Config, StoreConfig
from dialer.errors import ConfigError
from dialer.evidence import EvidenceKey, EvidenceKeyError, load_key

# The rest is imported where it is used: a child process that needs only the store
# (python -m dialer.import_worker) starts without loading the web framework.
if TYPE_CHECKING:
    from fastapi import APIRouter

    from dialer.console.ports import ConsoleQueries
    from dialer.ports import Clock, Pbx, RecordingStore, UserChanges
    from dialer.replay import ReplaySource
    from dialer.services import Campaign, RecordingWatch, Role, ServiceStore, Services
    from policy import PolicyBook
    from recordings.config import RecordingsConfig
    from recordings.model import Link
    from recordings.vault import Vault

__all__ = [
    "Extension", "bootstrap", "console_router", "events_wanted", "evidence_key", "extensions", "load_policies",
    "build_vault", "make_store", "migrate", "open_leadership", "open_services", "open_store", "replay_source", "routers", "store_for",
]


def load_policies(config: Config) -> PolicyBook:
    """The creditors' policies from `[policy]`; a bad one stops the start with its path."""
    from dialer.holidays_cli import HolidayCalendarError, read_calendar
    from policy import PolicyConfigError, load_policy

    table = config.policy_table
    try:
        return load_policy(table, read_calendar(table))
    except (PolicyConfigError, HolidayCalendarError) as exc:
        raise ConfigError(f"{config.source}: {exc}") from exc


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
    from adapters.mqtt.config import load_mqtt_config
    from adapters.mqtt.errors import MqttConfigError

    try:
        return load_mqtt_config(config.section("mqtt"), os.environ) is not None
    except MqttConfigError:
        return True


def make_store(config: Config) -> ServiceStore:
    """The configured case store, not yet opened (`async with`)."""
    return store_for(config.store, events=events_wanted(config), evidence=evidence_key(config))


def store_for(config: StoreConfig, *, events: bool, evidence: EvidenceKey | None = None) -> ServiceStore:
    """A case store over `[store]` settings alone (a child process's own connection)."""
    from adapters.db.store import SqlAlchemyCaseStore

    return SqlAlchemyCaseStore(config, events=events, evidence=evidence)


def build_vault(rcfg: RecordingsConfig, store: ServiceStore, now: Callable[[], datetime]) -> Vault:
    """The recordings vault `[recordings]` describes, its metadata in the service's store."""
    from adapters.db.recordings_repo import SqlAlchemyRecordingRepository
    from adapters.storage.compose import build_vault as compose

    vault: Vault = compose(rcfg, SqlAlchemyRecordingRepository(store), now, sealer=store.evidence)
    return vault


def replay_source(store: ServiceStore) -> ReplaySource:
    """The decision log as `dialgate simulate --from-log` reads it."""
    from adapters.db.replay_source import SqlAlchemyReplaySource

    source: ReplaySource = SqlAlchemyReplaySource(store)
    return source


async def migrate(store: ServiceStore) -> str:
    """Bring an opened store's schema to every head; the revision(s) now current."""
    from adapters.db.migrate import upgrade

    return await upgrade(store)


@asynccontextmanager
async def open_store(config: Config, *, migrated: bool = False) -> AsyncIterator[ServiceStore]:
    """The configured store, opened (and migrated first when `migrated`), for commands
    that need the store alone."""
    async with make_store(config) as store:
        if migrated:
            await migrate(store)
        yield store


def bootstrap(
    config: Config,
    *,
    store: ServiceStore | None = None,
    clock: Clock | None = None,
    policies: PolicyBook | None = None,
    pbx: Pbx | None = None,
    recordings: RecordingStore | None = None,
    role: Role = "primary",
) -> Services:
    """The application wired over `config`: the real adapters, or those passed in."""
    from dialer.auth import USERS_REVISION_FILE, Authenticator, UserNotices, UsersRevision
    from dialer.services import Services
    from dialer.usecases import Gate

    clock = clock if clock is not None else SystemClock()
    policies = policies if policies is not None else load_policies(config)
    store = store if store is not None else make_store(config)
    gate = Gate(
        store=store,
        clock=clock,
        policies=policies,
        attempt_validity=timedelta(seconds=config.gate.attempt_validity_s),
        recorder_check_ttl_s=config.gate.recorder_check_s,
    )
    if pbx is not None:
        gate.pbx = pbx
    if recordings is not None:
        gate.recordings = recordings
    # PostgreSQL: instances on other hosts share no data directory, so changes to users
    # reach their caches as notices (`_follow_user_changes`); untrusted until listening.
    auth = Authenticator(store, config.gate.auth_cache_s,
                         revision=UsersRevision(config.paths.data_dir / USERS_REVISION_FILE),
                         notices=UserNotices() if config.store.is_postgres else None)
    return Services(config=config, clock=clock, store=store, policies=policies, gate=gate, auth=auth, role=role)


@asynccontextmanager
async def open_services(
    config: Config,
    clock: Clock | None = None,
    *,
    migrate: bool | None = None,
    store: ServiceStore | None = None,
    pbx: Pbx | None = None,
    recordings: RecordingStore | None = None,
    role: Role = "primary",
) -> AsyncIterator[Services]:
    """`bootstrap`, then open the store (migrated when `migrate`, by default as `[store]
    migrate_on_start` says) for as long as the caller needs the services."""
    services = bootstrap(config, store=store, clock=clock, pbx=pbx, recordings=recordings, role=role)
    async with services.store:
        if config.store.migrate_on_start if migrate is None else migrate:
            await _migrate_and_anchor(services.store)
        await _require_the_chains_key(services.store)
        yield services
        await services.gate.drain()


async def _migrate_and_anchor(store: ServiceStore) -> None:
    await migrate(store)
    # Heads written before the evidence key existed go under it now (a migration has
    # no key): from here on their chains are keyed.
    async with store.write() as uow:
        await uow.decisions.anchor()


async def _require_the_chains_key(store: ServiceStore) -> None:
    """Every instance on one store MACs the shared chains with one key: the first to
    start records its key's id, and one started with another key stops here rather than
    append links that every other instance's verification reports as edited."""
    key = store.evidence
    async with store.write() as uow:
        claimed = await uow.decisions.claim_key(key.key_id)
    if claimed != key.key_id:
        raise ConfigError(
            f"audit: the evidence key from {key.source or 'memory'} (id {key.key_id}) is not the key this store's "
            f"evidence chains are kept under (id {claimed}); every DialGate instance on one database needs the same "
            "key ([audit] key_file or key_env)"
        )


def open_leadership(config: Config, role: Role) -> AbstractAsyncContextManager[Campaign]:
    """SQLite: the pool's file lock decided (a lone process leads). PostgreSQL: an
    advisory lock decides among every instance; a pool's secondary only observes."""
    from dialer.leadership import StaticLeadership, instance_name

    if not config.store.is_postgres:
        return nullcontext(StaticLeadership(role == "primary", instance_name(config.http.port)))
    from adapters.db.leader import PgAdvisoryLeadership

    leadership: AbstractAsyncContextManager[Campaign] = PgAdvisoryLeadership(
        config.store.url, instance_name(config.http.port), campaign=role == "primary")
    return leadership


# -- what the service runs -----------------------------------------------------------

Runs = Literal["every", "primary", "leader"]


@dataclass(frozen=True)
class Extension:
    """A component started with the service: `open(services)` is entered at start-up
    and exited at shutdown; it runs its loops as named tasks it owns.

    `runs`: "every" worker; the pool's "primary" only (what must exist once per host:
    a listener on a port); or the "leader" only (what must exist once across every
    instance on the store, for as long as its term lasts)."""

    name: str
    open: Callable[[Services], AbstractAsyncContextManager[object]]
    runs: Runs = "every"


def routers() -> list[APIRouter]:
    """The HTTP API, in the order its routes are matched."""
    from dialer.http import (
        attempts, blocked, case_actions, cases, dials, docs, health, imports, recording_retention,
        recording_uploads, recordings, worklist,
    )

    return [
        health.router, docs.router, cases.router, case_actions.router, worklist.router, imports.router,
        dials.router, blocked.router, recording_uploads.router, recordings.router, recording_retention.router,
        console_router(), attempts.router,
    ]


def console_router() -> APIRouter:
    """The console's pages over the service's store (`dialer.console`)."""
    from dialer.console.wiring import console_router_over

    return console_router_over(_console_queries)


def extensions() -> list[Extension]:
    """The components, in the order they start (the store and the gate are already open)."""
    from adapters.mqtt.bridge import open_mqtt, open_mqtt_waker
    from adapters.pbx.service import open_pbx
    from adapters.sip.service import open_sip_gate
    from dialer.console.wiring import check_console_config
    from dialer.import_jobs import open_import_jobs

    return [
        Extension("user-changes", _follow_user_changes),
        Extension("console-config", check_console_config),
        Extension("import-jobs", open_import_jobs),
        Extension("recordings-vault", _open_vault),
        Extension("sip-gate", open_sip_gate, runs="primary"),
        Extension("pbx", open_pbx, runs="leader"),
        Extension("mqtt", open_mqtt, runs="leader"),
        Extension("mqtt-waker", open_mqtt_waker),
        Extension("recordings-jobs", _run_vault_jobs, runs="leader"),
    ]


def _follow_user_changes(services: Services) -> AbstractAsyncContextManager[object]:
    """Extension: PostgreSQL, every worker LISTENs for changes to users committed by any
    instance and empties its token cache on each; nothing elsewhere."""
    notices = services.auth.notices
    if notices is None:
        return nullcontext()
    from adapters.db.leader import asyncpg_dsn
    from adapters.db.users_notify import PgUserChanges

    changes: UserChanges = PgUserChanges(asyncpg_dsn(services.config.store.url))
    return changes.follow(notices.changed, notices.lost)


def _console_queries(services: Services, vault: Vault | None) -> ConsoleQueries:
    from adapters.db.console_queries import SqlAlchemyConsoleQueries

    queries: ConsoleQueries = SqlAlchemyConsoleQueries(services, vault)
    return queries


def _open_vault(services: Services) -> AbstractAsyncContextManager[object]:
    from adapters.db.recordings_repo import SqlAlchemyRecordingWatch
    from dialer.vault_extension import open_vault

    def build(rcfg: RecordingsConfig) -> Vault:
        return build_vault(rcfg, services.store, services.clock.now)

    def watch() -> RecordingWatch:
        watching: RecordingWatch = SqlAlchemyRecordingWatch(services.store)
        return watching

    return open_vault(services, build=build, watch=watch)


def _run_vault_jobs(services: Services) -> AbstractAsyncContextManager[object]:
    from adapters.storage.inbox import Inbox, Resolved
    from dialer.vault_extension import AttemptResolver, run_vault_jobs

    def resolved(link: Link, at: datetime) -> Resolved:
        return Resolved(link, at)

    def inbox(vault: Vault, rcfg: RecordingsConfig) -> Inbox:
        assert rcfg.inbox is not None
        return Inbox(vault, rcfg.inbox, AttemptResolver(services, resolved), services.clock.now)

    return run_vault_jobs(services, inbox=inbox)

