"""A private PostgreSQL database per test, on `DIALGATE_TEST_PG_URL`'s server and role,
so suites that share the server never see each other's rows. A server that cannot be
reached goes through `require_service`: the test fails under CI and is skipped elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.conftest import require_service

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


def admin_url(url: str) -> str:
    """The maintenance database of the same server and role (for CREATE DATABASE)."""
    return os.environ.get("DIALGATE_TEST_PG_ADMIN") or url.rsplit("/", 1)[0] + "/postgres"


@asynccontextmanager
async def private_pg_database(prefix: str = "test") -> AsyncIterator[str]:
    """The URL of a new, empty database, dropped afterwards."""
    ok, why = await pg_reachable(PG_URL)
    require_service("PostgreSQL", ok, why)
    from sqlalchemy.ext.asyncio import create_async_engine

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(admin_url(PG_URL), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
        # Best effort: a session of another role on the server can hold the database
        # for a moment (FORCE may not end it); leftover test databases are harmless.
        for _ in range(10):
            try:
                async with admin.connect() as conn:
                    await conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                break
            except Exception:  # noqa: BLE001
                await asyncio.sleep(0.3)
    finally:
        await admin.dispose()
