"""`SqlUnitOfWork`: one transaction's repositories and its `DialLedger`; and what a
failed statement means to the caller."""

from __future__ import annotations

import sqlite3
from typing import Sequence

from sqlalchemy.exc import DataError, DBAPIError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db.attempts_repo import SqlAttemptRepository
from adapters.db.cases_repo import SqlCaseRepository
from adapters.db.decision_log import SqlDecisionLog
from adapters.db.imports_repo import SqlImportJobRepository
from adapters.db.ledger_core import CoreDialLedger, LockFn
from adapters.db.ledger_sqlite import (
    SqliteAttemptRepository, SqliteCaseRepository, SqliteDecisionLog, SqliteDialLedger, SqliteImportJobRepository,
    SqliteOutbox,
    SqliteUserRepository,
)
from adapters.db.outbox_repo import SqlOutbox
from adapters.db.sqlite_writer import GroupMemo
from adapters.db.users_repo import SqlAuditLog, SqlUserRepository
from dialer.errors import StoreRefusedValue, StoreUnavailable
from dialer.evidence import EvidenceKey


def store_error(exc: BaseException) -> Exception:
    """What a failed statement means to the caller. A value the driver could not bind
    (an out-of-range date or integer) or the database refused as data says nothing
    about the store's health: it must not answer 503 "store unavailable" and page
    on-call; everything else from the driver or the connection does."""
    if isinstance(exc, DataError) or (isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)):
        return StoreRefusedValue(f"a value was refused by the store: {type(exc.orig or exc).__name__}")
    # SQLAlchemy passes asyncpg's data errors (a NUL in a text value, say) on as plain
    # DBAPI errors; their SQLSTATE class 22 says the value was refused, not the store down.
    state = getattr(getattr(exc, "orig", None), "sqlstate", None)
    if isinstance(state, str) and state.startswith("22"):
        return StoreRefusedValue(f"a value was refused by the store: SQLSTATE {state}")
    return StoreUnavailable(f"store error: {type(exc).__name__}: {exc}")


class SqlUnitOfWork:
    """One transaction's repositories, and its `DialLedger` (`gather`, `apply`). `raw`:
    the pysqlite connection under `conn` when this unit runs on the SQLite writer; the
    dial's statements then go to it as driver SQL (`ledger_sqlite`). `held`: the lock
    keys the unit took (PostgreSQL), `lock` takes more inside it."""

    def __init__(
        self, conn: AsyncConnection, is_postgres: bool, raw: sqlite3.Connection | None = None, *, events: bool = True,
        memo: GroupMemo | None = None, evidence: EvidenceKey | None = None,
        held: Sequence[str] = (), lock: LockFn | None = None, chain_shards: int = 1,
    ) -> None:
        self.conn = conn
        self.cases: SqlCaseRepository
        self.attempts: SqlAttemptRepository
        self.decisions: SqlDecisionLog
        self.outbox: SqlOutbox
        self.users: SqlUserRepository
        ledger: CoreDialLedger
        if raw is not None:
            self.cases = SqliteCaseRepository(conn, raw, evidence)
            self.attempts = SqliteAttemptRepository(conn, raw)
            self.decisions = SqliteDecisionLog(conn, raw, memo, evidence)
            self.outbox = SqliteOutbox(conn, raw, self.cases, keep=events)
            self.users = SqliteUserRepository(conn, raw, memo)
            ledger = SqliteDialLedger(self)
        else:
            self.cases = SqlCaseRepository(conn, evidence)
            self.attempts = SqlAttemptRepository(conn)
            self.decisions = SqlDecisionLog(conn, is_postgres, evidence, chain_shards if is_postgres else 1)
            self.outbox = SqlOutbox(conn, self.cases, keep=events)
            self.users = SqlUserRepository(conn, notify=is_postgres)
            ledger = CoreDialLedger(self, frozenset(held), lock)
        self.audit = SqlAuditLog(conn)
        self.imports = SqliteImportJobRepository(conn, raw) if raw is not None else SqlImportJobRepository(conn, is_postgres)
        self.gather = ledger.gather
        self.apply = ledger.apply
