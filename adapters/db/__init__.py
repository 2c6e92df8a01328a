"""Case store adapter: SQLAlchemy Core tables, the SqlAlchemyCaseStore, Alembic migrations."""
