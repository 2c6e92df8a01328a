"""Fixtures for the case-store integration tests: a private PostgreSQL database
(`pg_url`, from tests/support/pg.py) and a temporary working directory. The
`dialgate serve` processes come from tests/support/harness.py.

PostgreSQL comes from `DIALGATE_TEST_PG_URL` (e.g.
postgresql+asyncpg://dialgate:dialgate@127.0.0.1:5432/dialgate_test). Missing →
`require_service` (fails under CI, skips elsewhere).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from tests.support.builders import one_case  # noqa: F401 - re-exported to the store tests
from tests.support.harness import (  # noqa: F401 - re-exported to the store tests
    DIALGATE, REPO, Cluster, cli, start_cluster, stop_cluster, terminate, write_config,
)
from tests.support.harness import wait_ready as _wait_ready  # noqa: F401
from tests.support.net import free_port  # noqa: F401 - re-exported to the store tests
from tests.support.pg import private_pg_database  # noqa: F401 - re-exported to the store tests


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A private, empty database for this test (other suites share DIALGATE_TEST_PG_URL's)."""
    async with private_pg_database("gate") as url:
        yield url


@pytest.fixture
def workdir() -> Any:
    with tempfile.TemporaryDirectory(prefix="dialgate-") as d:
        yield Path(d)
