"""Helpers for the case-store integration tests: real SQLite files and real PostgreSQL
(the `dialgate serve` processes come from tests/support/harness.py).

PostgreSQL comes from `DIALGATE_TEST_PG_URL` (e.g.
postgresql+asyncpg://dialgate:dialgate@127.0.0.1:5432/dialgate_test); each test gets an
empty `public` schema. Missing → `require_service` (fails under CI, skips elsewhere).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from tests.conftest import require_service
from tests.support.builders import one_case  # noqa: F401 - re-exported to the store tests
from tests.support.harness import (  # noqa: F401 - re-exported to the store tests
    DIALGATE, REPO, Cluster, cli, start_cluster, stop_cluster, terminate, write_config,
)
from tests.support.harness import wait_ready as _wait_ready  # noqa: F401
from tests.support.net import free_port  # noqa: F401 - re-exported to the store tests

PG_URL = os.environ.get("DIALGATE_TEST_PG_URL", "")


async def pg_reachable(url: str) -> tuple[bool, str]:
    if not url:
        return False, "set DIALGATE_TEST_PG_URL=postgresql+asyncpg://user:pw@host:port/db"
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, connect_args={"timeout": 3})
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")
        return True, ""
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return False, f"cannot connect to {url.split('@')[-1]}: {type(exc).__name__}: {exc}"
    finally:
        await engine.dispose()


def _admin_url(url: str) -> str:
    """The maintenance database of the same server and role (for CREATE DATABASE)."""
    return os.environ.get("DIALGATE_TEST_PG_ADMIN") or url.rsplit("/", 1)[0] + "/postgres"


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A private, empty database for this test (other suites share DIALGATE_TEST_PG_URL's)."""
    ok, why = await pg_reachable(PG_URL)
    require_service("PostgreSQL", ok, why)
    from sqlalchemy.ext.asyncio import create_async_engine

    name = f"gate_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(_admin_url(PG_URL), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.dispose()


@pytest.fixture
def workdir() -> Any:
    with tempfile.TemporaryDirectory(prefix="dialgate-") as d:
        yield Path(d)
