"""SQLAlchemy Core tables of the case store (SQLite and PostgreSQL).

The Alembic migrations in `adapters/db/migrations/versions/` are the schema's source of
truth for real databases; this module mirrors them for queries (a test checks they
agree). Timestamps are UTC (`UtcDateTime`); dates are calendar dates in the creditor's
policy time zone.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

# SQLite needs INTEGER PRIMARY KEY for rowid aliasing; PostgreSQL gets BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on both dialects.

    SQLite stores naive ISO text (lexically ordered, so range scans use indexes);
    PostgreSQL stores `timestamptz`.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):  # type: ignore[override]
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; the store keeps UTC")
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect):  # type: ignore[override]
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


creditors = Table(
    "creditors",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("role", String(20), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", UtcDateTime(), nullable=False),
)

user_creditors = Table(
    "user_creditors",
    metadata,
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("creditor", String(64), ForeignKey("creditors.id"), primary_key=True),
)

cases = Table(
    "cases",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("creditor", String(64), ForeignKey("creditors.id"), nullable=False),
    Column("case_id", String(100), nullable=False),
    Column("debtor_name", String(200), nullable=False),
    Column("status", String(20), nullable=False),
    Column("commission_start", Date),
    Column("commission_end", Date),
    Column("assigned_agent", String(100)),
    Column("flags", Text, nullable=False, default=""),  # comma-separated, sorted
    Column("amount_due", String(40)),
    Column("overdue_days", Integer),
    Column("follow_up_status", String(40), nullable=False, default="new"),
    Column("next_action_date", Date),
    Column("event_seq", BigInteger, nullable=False, default=0),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    UniqueConstraint("creditor", "case_id"),
    Index("ix_cases_case_id", "case_id"),
    Index("ix_cases_assigned_agent", "assigned_agent"),
)

contacts = Table(
    "contacts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("case_pk", BigId, ForeignKey("cases.id", ondelete="CASCADE"), nullable=False),
    Column("number", String(32), nullable=False),
    Column("relation", String(20), nullable=False),
    Column("name", String(200)),
    Column("tz", String(64)),
    Column("status", String(10), nullable=False, default="valid"),
    Column("do_not_call", Boolean, nullable=False, default=False),
    Column("source", String(40), nullable=False, default="creditor"),
    Column("added_at", UtcDateTime(), nullable=False),
    UniqueConstraint("case_pk", "number"),
    Index("ix_contacts_number", "number"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("case_pk", BigId, ForeignKey("cases.id", ondelete="CASCADE"), nullable=False),
    Column("creditor", String(64), nullable=False),
    Column("case_id", String(100), nullable=False),
    Column("number", String(32), nullable=False),
    Column("relation", String(20), nullable=False),
    Column("agent_id", String(100), nullable=False),
    Column("channel", String(10), nullable=False),
    Column("state", String(12), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("valid_until", UtcDateTime(), nullable=False),
    Column("decision_id", String(36), nullable=False),
    Column("connected", Boolean, nullable=False, default=False),
    # The frequency caps read "this number since T" and "this case since T".
    Index("ix_attempts_number_at", "number", "at"),
    Index("ix_attempts_case_pk_at", "case_pk", "at"),
    # A number or case with more attempts than a decision needs is read by (relation,
    # answered) group, newest first, a few rows each (migration 2101).
    Index("ix_attempts_number_group_at", "number", "relation", "connected", "at"),
    Index("ix_attempts_case_pk_group_at", "case_pk", "relation", "connected", "at"),
    # The SIP gate matches a pending authorisation by agent and number. `valid_until`
    # makes SQLite (no ANALYZE) prefer it to the expiry index below (migration 0004).
    # Both state indexes are read only for state 'authorised', so on SQLite they hold
    # only those rows (migration 0006): a SIP dial's attempt (born 'dialing') is never
    # written into them, and an attempt leaves them once it is used or expires.
    Index("ix_attempts_agent_id_state_number_valid_until", "agent_id", "state", "number", "valid_until",
          sqlite_where=text("state = 'authorised'")),
    # The expiry sweep: authorised attempts whose validity ended.
    Index("ix_attempts_state_valid_until", "state", "valid_until", sqlite_where=text("state = 'authorised'")),
)

outcomes = Table(
    "outcomes",
    metadata,
    Column("attempt_id", String(36), ForeignKey("attempts.id", ondelete="CASCADE"), primary_key=True),
    Column("case_pk", BigId, ForeignKey("cases.id", ondelete="CASCADE"), nullable=False),
    Column("disposition", String(30), nullable=False),
    Column("result", String(40), nullable=False),
    Column("note", Text, nullable=False),
    Column("callback_at", UtcDateTime()),
    Column("promise_amount", String(40)),
    Column("promise_date", Date),
    Column("logged_by", String(100), nullable=False),
    Column("logged_at", UtcDateTime(), nullable=False),
    Column("request_digest", String(64), nullable=False),
    Index("ix_outcomes_case_pk", "case_pk"),
)

appointments = Table(
    "appointments",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("case_pk", BigId, ForeignKey("cases.id", ondelete="CASCADE"), nullable=False),
    Column("number", String(32), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("attempt_id", String(36)),
    Column("created_at", UtcDateTime(), nullable=False),
    Index("ix_appointments_case_pk_at", "case_pk", "at"),
)

repayments = Table(
    "repayments",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("creditor", String(64), nullable=False),
    Column("case_id", String(100), nullable=False),
    Column("amount", String(40)),
    Column("paid_on", Date),
    Column("settled", Boolean, nullable=False),
    Column("imported_by", String(100), nullable=False),
    Column("imported_at", UtcDateTime(), nullable=False),
    Index("ix_repayments_creditor_case_id", "creditor", "case_id"),
)

# The decision log: append-only, hash-chained per chain (one chain per creditor).
decisions = Table(
    "decisions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("chain", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("decision_id", String(36), nullable=False, unique=True),
    Column("kind", String(10), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("creditor", String(64), nullable=False),
    Column("case_id", String(100), nullable=False),
    Column("agent_id", String(100), nullable=False),
    Column("allowed", Boolean, nullable=False),
    Column("rule_id", String(80), nullable=False),
    Column("attempt_id", String(36)),
    Column("record", Text, nullable=False),  # canonical JSON, exactly what was hashed
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("chain", "seq"),
    # Migration 0002_console: the console's blocked-dial view (every filter column, so
    # counts and charts are index-only) and the case page / case filter. Every reader
    # asks for blocked decisions (`allowed IS 0`), so on SQLite it holds only those
    # (migration 0006): an allowed dial's decision is not written into it.
    Index("ix_decisions_review", "allowed", "kind", "at", "creditor", "rule_id", "agent_id", "case_id",
          sqlite_where=text("allowed IS 0")),
    Index("ix_decisions_creditor_case_id_at", "creditor", "case_id", "at"),
    # Migration 0007: one case's blocked decisions whatever the creditor (an admin's
    # console case filter), under the condition the case filter spells in each dialect.
    Index("ix_decisions_blocked_case_kind_at", "case_id", "kind", "at",
          sqlite_where=text("coalesce(allowed, 1) IS 0"),
          postgresql_where=text("coalesce(allowed, true) IS false")),
    # (creditor, at) and (allowed, at) were dropped by migrations 0004 and 0005: no
    # reader needs them.
)

chain_heads = Table(
    "chain_heads",
    metadata,
    Column("chain", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

# Transactional outbox: written with the change, relayed (in id / case_seq order) later.
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("type", String(40), nullable=False),
    Column("creditor", String(64), nullable=False),
    Column("case_id", String(100)),
    Column("case_seq", BigInteger),
    Column("occurred_at", UtcDateTime(), nullable=False),
    Column("payload", Text, nullable=False),
    Column("published_at", UtcDateTime()),
    Index("ix_outbox_published_at_id", "published_at", "id"),
)

# Data-change log (系统日志): who changed what, append-only.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime(), nullable=False),
    Column("actor", String(100), nullable=False),
    Column("action", String(60), nullable=False),
    Column("creditor", String(64)),
    Column("case_id", String(100)),
    Column("details", Text, nullable=False),
    Index("ix_audit_log_at", "at"),
)
