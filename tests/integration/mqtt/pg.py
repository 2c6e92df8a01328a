"""A private PostgreSQL database per test, on DIALGATE_TEST_PG_URL's server and role
(the store suite's helpers find and check the server)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.conftest import require_service
from tests.integration.store.gate_store_support import PG_URL, _admin_url, pg_reachable


@asynccontextmanager
async def private_pg_database() -> AsyncIterator[str]:
    """A private, empty PostgreSQL database (DIALGATE_TEST_PG_URL's server and role)."""
    ok, why = await pg_reachable(PG_URL)
    require_service("PostgreSQL", ok, why)
    from sqlalchemy.ext.asyncio import create_async_engine

    name = f"mqtt_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(_admin_url(PG_URL), isolation_level="AUTOCOMMIT")
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
