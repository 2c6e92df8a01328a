"""The vault's metadata in the service database: the same behaviour on the in-memory
fake, on SQLite and on PostgreSQL, and a migration that builds exactly the tables the
repository queries.

PostgreSQL: `DIALGATE_TEST_PG_ADMIN` (preferred: the tests use their own database,
dialgate_test_recordings_<xdist worker>) or `DIALGATE_TEST_PG_URL`; missing → `require_service`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import AsyncIterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from adapters.db.migrate import head_revision, upgrade
from adapters.db.recordings_repo import SqlAlchemyRecordingRepository, metadata
from adapters.db.store import SqlAlchemyCaseStore
from dialer.config import build_config
from recordings import register
from recordings.errors import AlreadyDestroyed, DualControlViolation, DuplicateSource, RecordingHeld
from recordings.memory import InMemoryBlobStore, InMemoryKeyProvider, InMemoryRecordingRepository
from recordings.model import DestructionEntry, RecordingFilter
from recordings.testing import ADMIN, COMPLIANCE, PBX, QA_A, SUP_A, ingest_as_of, request, wav_bytes
from recordings.vault import Vault

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # `tests` is not installed
from tests.conftest import require_service  # noqa: E402

SHANGHAI = timezone(timedelta(hours=8))
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI)
OLD = datetime(2024, 1, 5, 10, 0, tzinfo=SHANGHAI)


async def _own_database(admin: str) -> str | None:
    """A database of our own, when the admin URL may create one (else None)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    # One per pytest-xdist worker: each test empties it, so two workers must never share one.
    name = f"dialgate_test_recordings_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    engine = create_async_engine(admin, isolation_level="AUTOCOMMIT", connect_args={"timeout": 3})
    try:
        async with engine.connect() as conn:
            exists = (await conn.exec_driver_sql(
                "SELECT 1 FROM pg_database WHERE datname = $1", (name,))).first()
            if not exists:
                await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        return admin.rsplit("/", 1)[0] + "/" + name
    except Exception:  # noqa: BLE001 - no CREATEDB right: use the shared test database
        return None
    finally:
        await engine.dispose()


async def _pg_url() -> str:
    admin = os.environ.get("DIALGATE_TEST_PG_ADMIN", "")
    url = (await _own_database(admin) if admin else None) or os.environ.get("DIALGATE_TEST_PG_URL", "")
    if not url:
        require_service("PostgreSQL", False, "set DIALGATE_TEST_PG_URL (scripts/services.sh)")
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, connect_args={"timeout": 3})
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("DROP SCHEMA public CASCADE")
            await conn.exec_driver_sql("CREATE SCHEMA public")
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        require_service("PostgreSQL", False, f"{type(exc).__name__}: {exc}")
    finally:
        await engine.dispose()
    return url


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def repo(request, tmp_path: Path) -> AsyncIterator[object]:
    if request.param == "memory":
        yield InMemoryRecordingRepository()
        return
    url = f"sqlite+aiosqlite:///{tmp_path / 'gate.db'}" if request.param == "sqlite" else await _pg_url()
    cfg = build_config({"paths": {"data_dir": str(tmp_path)}, "store": {"url": url}})
    async with SqlAlchemyCaseStore(cfg.store) as store:
        await upgrade(store)
        yield SqlAlchemyRecordingRepository(store)


@pytest.fixture
def vault(repo) -> Vault:
    keys = InMemoryKeyProvider()
    for s in ("bank-a", "bank-b", "_unmatched"):
        keys.create(s)
    return Vault(repo, InMemoryBlobStore(), keys, clock=lambda: NOW)


async def test_a_recording_round_trips_through_the_repository_with_every_column(vault, repo) -> None:
    rec = (await vault.ingest(request("db-1", started_at=OLD), [wav_bytes(2)], PBX)).recording
    back = await repo.get(rec.recording_id)
    assert back == rec.evolve(started_at=back.started_at, created_at=back.created_at)
    assert back.started_at == OLD and back.created_at == NOW  # same instants, whatever the offset
    assert await repo.by_source("attempt", "db-1") == back


async def test_the_source_id_is_unique_in_the_database(vault, repo) -> None:
    rec = (await vault.ingest(request("db-dup"), [wav_bytes(1)], PBX)).recording
    with pytest.raises(DuplicateSource):
        await repo.add(rec.evolve(recording_id="f" * 32))


async def test_filters_select_by_creditor_case_agent_number_dates_and_state(vault) -> None:
    day = lambda d: datetime(2026, 11, d, 9, tzinfo=timezone.utc)  # noqa: E731
    r1 = (await vault.ingest(request("f1", case_id="C-1", agent="ag-1", started_at=day(20)), [wav_bytes(1)], PBX)).recording
    r2 = (await vault.ingest(request("f2", case_id="C-2", agent="ag-2", number="+8613900000009", started_at=day(22)), [wav_bytes(1)], PBX)).recording
    r3 = (await vault.ingest(request("f3", creditor="bank-b", case_id="B-1", started_at=day(21)), [wav_bytes(1)], PBX)).recording
    u = (await vault.ingest(request("f4", kind="call", creditor=None, started_at=day(23)), [wav_bytes(1)], PBX)).recording

    async def ids(actor=ADMIN, number=None, **kw):
        return [r.recording_id for r in await vault.list(actor, RecordingFilter(**kw), number=number)]

    assert await ids() == [r1.recording_id, r3.recording_id, r2.recording_id, u.recording_id]
    assert await ids(QA_A) == [r1.recording_id, r2.recording_id]
    assert await ids(case_id="C-2") == [r2.recording_id]
    assert await ids(agent="ag-1") == [r1.recording_id]
    assert await ids(number="+8613900000009") == [r2.recording_id]
    assert await ids(started_from=day(21), started_to=day(22)) == [r3.recording_id]
    assert await ids(state="unmatched") == [u.recording_id]
    assert await ids(limit=2) == [r1.recording_id, r3.recording_id]


async def test_holds_access_log_purge_and_register_persist(vault, repo) -> None:
    gone = await ingest_as_of(vault, request("p1", started_at=OLD, case_id="C-1"))
    held = await ingest_as_of(vault, request("p2", started_at=OLD, case_id="C-2"))
    case_held = await ingest_as_of(vault, request("p3", started_at=OLD, case_id="C-3"))
    await vault.place_hold(held.recording_id, COMPLIANCE, "投诉 complaint")
    await vault.place_case_hold("bank-a", "C-3", SUP_A, "诉讼 lawsuit")
    (await vault.open_audio(gone.recording_id, QA_A, reason="before purge", byte_range=(0, 99), client="10.0.0.1")).read_all()
    [entry] = await repo.access_log(gone.recording_id)
    assert (entry.user, entry.reason, entry.range_start, entry.range_end, entry.client, entry.at) == (
        "qa-li", "before purge", 0, 99, "10.0.0.1", NOW)

    plan = await vault.request_purge(ADMIN)
    assert [r.recording_id for r in plan.due] == [gone.recording_id]
    assert [p.purge_id for p in await repo.pending_purges()] == [plan.request.purge_id]
    with pytest.raises(DualControlViolation):
        await vault.approve_purge(plan.request.purge_id, ADMIN.__class__(ADMIN.user, "compliance"))
    done = await vault.approve_purge(plan.request.purge_id, COMPLIANCE)
    assert done.destroyed == (gone.recording_id,)
    assert (await repo.get_purge(plan.request.purge_id)).approved_by == "comp-sun"
    assert await repo.pending_purges() == []
    row = await repo.get(gone.recording_id)
    assert row.state == "destroyed" and row.wrapped_key is None and row.kek_id is None
    entries = await repo.destruction_register()
    assert register.verify_chain(entries) == [] and entries[0].retain_until == date(2026, 1, 4)
    assert (await repo.get(held.recording_id)).hold.reason == "投诉 complaint"
    assert await vault.release_case_hold("bank-a", "C-3", SUP_A, "结案 case closed")
    assert await repo.case_hold("bank-a", "C-3") is None


async def test_the_database_keeps_a_hold_against_stale_writes_and_a_late_purge(vault, repo) -> None:
    """A row read before a hold, written after it (rotation, link), keeps the hold; a
    purge whose check came before a hold skips the recording; a destroyed row is not
    written back."""
    rec = await ingest_as_of(vault, request("race-1", started_at=OLD, case_id="C-7"))
    other = await ingest_as_of(vault, request("race-2", started_at=OLD, case_id="C-8"))
    stale = await repo.get(rec.recording_id)
    await vault.place_hold(rec.recording_id, COMPLIANCE, "诉讼 lawsuit")
    await repo.update(stale.evolve(duration_s=3.0))
    assert (await repo.get(rec.recording_id)).hold.reason == "诉讼 lawsuit"
    plan = await vault.request_purge(ADMIN)
    assert [r.recording_id for r in plan.due] == [other.recording_id]
    await vault.place_case_hold("bank-a", "C-8", SUP_A, "投诉 complaint")  # after the request
    await vault.release_hold(rec.recording_id, COMPLIANCE, "结案 case closed")
    entry = register.seal(DestructionEntry(
        seq=1, recording_id=other.recording_id, case_id="C-8", creditor="bank-a", sha256=other.sha256,
        retain_until=other.retain_until, operator="ops-wang", approver="comp-sun", purge_id="p",
        destroyed_at=NOW, method="test", prev_hash=register.GENESIS, entry_hash=""))
    gone = other.evolve(state="destroyed", wrapped_key=None, kek_id=None, destroyed_at=NOW)
    with pytest.raises(RecordingHeld):
        await repo.destroy(gone, entry)
    assert (await repo.get(other.recording_id)).wrapped_key is not None
    assert await repo.destruction_register() == []
    await vault.release_case_hold("bank-a", "C-8", SUP_A, "结案 case closed")
    await repo.destroy(gone, entry)
    with pytest.raises(AlreadyDestroyed):
        await repo.update(other)
    assert await repo.set_hold(other.recording_id, None) is None
    assert (await repo.get(other.recording_id)).wrapped_key is None


async def test_concurrent_uploads_of_one_source_store_one_row(vault, repo) -> None:
    results = await asyncio.gather(*(vault.ingest(request("race-1"), [wav_bytes(1)], PBX) for _ in range(4)))
    assert len({r.recording.recording_id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert len(await repo.find(RecordingFilter())) == 1


async def _schema_diff(url: str, tmp_path: Path) -> list:
    cfg = build_config({"paths": {"data_dir": str(tmp_path)}, "store": {"url": url}})
    async with SqlAlchemyCaseStore(cfg.store) as store:
        assert await upgrade(store) == head_revision()
        async with store.engine.connect() as conn:
            diffs = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), metadata))
    # The service's own tables are "remove_*" from this metadata's point of view.
    return [d for d in diffs if not (isinstance(d, tuple) and str(d[0]).startswith("remove_"))]


async def test_the_migration_builds_exactly_the_recordings_tables_on_sqlite(tmp_path: Path) -> None:
    assert await _schema_diff(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}", tmp_path) == []


@pytest.mark.postgres
async def test_the_migration_builds_exactly_the_recordings_tables_on_postgresql(tmp_path: Path) -> None:
    assert await _schema_diff(await _pg_url(), tmp_path) == []
