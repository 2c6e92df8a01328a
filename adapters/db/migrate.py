"""Running the Alembic migrations programmatically (`dialgate db upgrade`, `serve`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from dialer.errors import StoreUnavailable

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant: serialises migrations of concurrently starting processes on PostgreSQL.
_PG_MIGRATION_LOCK = 7_305_512_001


def alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    """The newest revision(s), comma-joined: components add revisions independently, so
    the history may branch; `upgrade` applies every head."""
    return ",".join(sorted(ScriptDirectory.from_config(alembic_config()).get_heads()))


async def upgrade(store: Any, revision: str = "heads") -> str:
    """Bring the store's schema to `revision` (every head); returns the revision(s) now current."""
    cfg = alembic_config()
    logging.getLogger("alembic").setLevel(logging.WARNING)

    def run(sync_conn: Any) -> str:
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, revision)
        return ",".join(sorted(MigrationContext.configure(sync_conn).get_current_heads()))

    engine: AsyncEngine = store.engine
    try:
        if store.is_sqlite:
            async with engine.connect() as conn:
                await conn.execution_options(dialgate_begin="IMMEDIATE")
                async with conn.begin():
                    return await conn.run_sync(run)
        async with engine.connect() as conn:
            async with conn.begin():
                await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
                return await conn.run_sync(run)
    except SQLAlchemyError as exc:
        raise StoreUnavailable(f"migration failed: {type(exc).__name__}: {exc}") from exc


async def current_revision(store: Any) -> str:
    engine: AsyncEngine = store.engine
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: ",".join(sorted(MigrationContext.configure(c).get_current_heads())))
