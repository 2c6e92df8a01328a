"""The recordings vault as a component of the service (started by `dialer.bootstrap`,
which passes the adapters in).

`open_vault(services, build=…, watch=…)` builds the vault from ``[recordings]``, cleans
leftovers of interrupted ingests and makes "no vault → no call" part of the gate's
recording check; `run_vault_jobs` (the leader's) sweeps, watches completeness and runs
the drop-folder inbox when configured. Its HTTP routes are `dialer.http.recordings` and
its siblings.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import structlog

from dialer.services import RecordingsInbox, RecordingWatch, Services
from recordings.errors import VaultError
from recordings.model import Link
from recordings.vault import Vault

if TYPE_CHECKING:
    from recordings.config import RecordingsConfig

R = TypeVar("R")

log = structlog.get_logger("dialgate.recordings")


class VaultRecordingCheck:
    """The gate's recording check, extended: no working vault means no call.

    The vault works when its data directory is writable with room to spare (or, on
    S3, its bucket answers) and a key exists for unmatched recordings (so any
    recording can at least be kept)."""

    MIN_FREE = 256 * 1024 * 1024

    def __init__(self, vault: Vault, data_dir: Any, before: Any) -> None:
        self.vault = vault
        self.data_dir = data_dir
        self.before = before

    async def available(self) -> bool:
        def check() -> bool:
            if self.vault.blobs.remote:
                try:
                    self.vault.blobs.check()
                except VaultError:
                    return False
            elif not os.access(self.data_dir, os.W_OK):
                return False
            elif shutil.disk_usage(self.data_dir).free < self.MIN_FREE:
                return False
            try:
                self.vault.keys.active_id("_unmatched")
            except Exception:  # noqa: BLE001 - a key module that fails in any way: no recording, so no call
                return False
            return True

        if not await asyncio.to_thread(check):
            return False
        return await self.before.available() if self.before is not None else True


@asynccontextmanager
async def open_vault(
    services: Services, *, build: Callable[[RecordingsConfig], Vault], watch: Callable[[], RecordingWatch],
) -> AsyncIterator[Vault]:
    """Extension: the vault `build` makes from `[recordings]`, for the app's lifetime;
    `watch` reads which connected calls lack their recording (`expect_within`)."""
    from recordings.config import parse_recordings_config

    try:
        rcfg = parse_recordings_config(dict(_thaw(services.config.section("recordings"))), services.config.paths.data_dir)
    except VaultError as exc:
        from dialer.errors import ConfigError

        raise ConfigError(f"{services.config.source}: {exc.message}") from exc
    try:
        vault = build(rcfg)
        if vault.blobs.remote:
            # A bucket without the Object Lock asked for is refused here, not found later.
            await asyncio.to_thread(vault.blobs.check)
    except VaultError as exc:
        from dialer.errors import ConfigError

        raise ConfigError(f"{services.config.source}: {exc.message}") from exc
    await vault.anchor_register()
    if rcfg.keys != "env":
        # Unknown calls must always be keepable; a KMS answers off the loop.
        await asyncio.to_thread(vault.keys.create, "_unmatched")
    primary = services.role == "primary"
    # Recovery, the sweep and the inbox run once per data dir: in the primary worker.
    cleaned = await vault.recover(orphan_grace=timedelta(minutes=5)) if primary else {}
    _count_cleaned(cleaned)
    log.info(
        "vault.started",
        store=vault.blobs.location,
        keys=rcfg.keys,
        **cleaned,
    )
    services.vault = vault
    services.recordings_config = rcfg
    services.attach_recordings(VaultRecordingCheck(vault, rcfg.data_dir, services.gate.recordings))
    if rcfg.expect_within is not None:
        services.recording_watch = watch()  # read by every instance
    yield vault


@asynccontextmanager
async def run_vault_jobs(
    services: Services, *, inbox: Callable[[Vault, RecordingsConfig], RecordingsInbox],
) -> AsyncIterator[None]:
    """Extension entered by the leader only: the sweep, the completeness watch and the
    drop-folder inbox (`inbox` builds it), once across every instance on the store."""
    vault, rcfg = services.vault, services.recordings_config
    if vault is None or rcfg is None:
        yield
        return
    stop = asyncio.Event()
    tasks = [asyncio.create_task(_sweep(vault, stop), name="recordings-sweep")]
    watch = services.recording_watch
    if watch is not None and rcfg.expect_within is not None:
        tasks.append(
            asyncio.create_task(
                _watch_completeness(watch, services.clock.now, rcfg.expect_within, stop),
                name="recordings-completeness",
            )
        )
    if rcfg.inbox is not None:
        services.recordings_inbox = running = inbox(vault, rcfg)
        tasks.append(asyncio.create_task(_run_inbox(running, stop), name="recordings-inbox"))
    try:
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
        finally:
            services.recordings_inbox = None


def _thaw(v: Any) -> Any:
    if hasattr(v, "items"):
        return {k: _thaw(x) for k, x in v.items()}
    return v


class AttemptResolver(Generic[R]):
    """Which attempt a recorder's file belongs to, as `make` (the inbox's own type) says it."""

    def __init__(self, services: Services, make: Callable[[Link, datetime], R]) -> None:
        self.services = services
        self.make = make

    async def resolve(self, source_kind: str, source_id: str) -> R | None:
        if source_kind != "attempt":
            return None
        async with self.services.store.read() as uow:
            att = await uow.attempts.get(source_id)
        if att is None:
            return None
        return self.make(Link(att.creditor, att.case_id, att.agent_id, att.number), att.at)


def _count_cleaned(cleaned: dict[str, int]) -> None:
    from dialer.metrics import VAULT_CLEANED

    for kind, n in cleaned.items():
        if n:
            VAULT_CLEANED.labels(kind).inc(n)


async def _sweep(vault: Vault, stop: asyncio.Event, every_s: float = 900.0) -> None:
    """Leftovers of ingests that died while the service ran (temporaries, orphan
    blobs) older than five minutes, every quarter of an hour."""
    while True:
        try:
            await asyncio.wait_for(stop.wait(), timeout=every_s)
            return
        except TimeoutError:
            pass
        try:
            cleaned = await vault.recover(orphan_grace=timedelta(minutes=5))
            _count_cleaned(cleaned)
            if any(cleaned.values()):
                log.info("vault.swept", **cleaned)
        except Exception as exc:  # noqa: BLE001 - keep sweeping
            log.warning("vault.sweep_failed", error=str(exc))


async def _watch_completeness(watch: Any, now: Any, expect_within: timedelta, stop: asyncio.Event) -> None:
    """Every connected call must be recorded: alert on each one whose recording did
    not arrive within `expect_within` of the call's end (checked a few times per
    period, at least every minute)."""
    from dialer.metrics import RECORDINGS_MISSING

    every_s = min(60.0, max(1.0, expect_within.total_seconds() / 4))
    while True:
        try:
            for alert in await watch.sweep(now(), expect_within):
                RECORDINGS_MISSING.labels(alert["creditor"]).inc()
                log.warning(
                    "recording.missing", attempt_id=alert["attempt_id"], creditor=alert["creditor"],
                    case_id=alert["case_id"], agent_id=alert["agent"], number=alert["number"],
                )
        except Exception as exc:  # noqa: BLE001 - the watch must keep running
            log.warning("recording.watch_failed", error=type(exc).__name__)
        try:
            await asyncio.wait_for(stop.wait(), timeout=every_s)
            return
        except TimeoutError:
            pass


async def _run_inbox(inbox: Any, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            for outcome in await inbox.scan():
                log.info("inbox.taken", file=outcome.file, result=outcome.result, recording_id=outcome.recording_id)
        except Exception as exc:  # noqa: BLE001 - the folder must keep being watched
            log.warning("inbox.failed", error=str(exc))
        try:
            await asyncio.wait_for(stop.wait(), timeout=5.0)
        except TimeoutError:
            pass
