from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from recordings.memory import InMemoryBlobStore, InMemoryKeyProvider, InMemoryRecordingRepository
from recordings.retention import RetentionPolicy
from recordings.vault import Vault


class SteppingClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def clock() -> SteppingClock:
    return SteppingClock(datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc))


@pytest.fixture
def keys(clock) -> InMemoryKeyProvider:
    k = InMemoryKeyProvider(clock)
    for scope in ("bank-a", "bank-b", "_unmatched"):
        k.create(scope)
    return k


@pytest.fixture
def repo() -> InMemoryRecordingRepository:
    return InMemoryRecordingRepository()


@pytest.fixture
def blobs() -> InMemoryBlobStore:
    return InMemoryBlobStore()


@pytest.fixture
def vault(repo, blobs, keys, clock) -> Vault:
    return Vault(
        repo,
        blobs,
        keys,
        clock=clock,
        retention=RetentionPolicy.from_config("730d", {"bank-b": "1095d"}),
        max_size=64 * 1024 * 1024,
    )
