"""Alembic environment, run programmatically (`adapters.db.migrate.upgrade`).

The caller hands us an open synchronous connection (from `AsyncConnection.run_sync`)
in `config.attributes["connection"]`, already inside its transaction: on SQLite a
`BEGIN IMMEDIATE` one, on PostgreSQL one holding the migration advisory lock, so two
`dialgate serve` processes starting together never migrate at once.

Other components add their tables with a revision file in `versions/` whose
`down_revision` is the current head.
"""

from alembic import context

from adapters.db.tables import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through adapters.db.migrate (dialgate db upgrade)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
