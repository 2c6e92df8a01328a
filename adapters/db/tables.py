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
from sqlalchemy.engine import Dialect
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

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; the store keeps UTC")
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
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
    # The effective flags the gate reads: the bank's own (`creditor_flags`, replaced by
    # each case file) and the agency's (`agency_flags`: set by outcomes and people, kept
    # until lifted explicitly). Each comma-separated, sorted.
    Column("flags", Text, nullable=False, default=""),
    Column("amount_due", String(40)),
    Column("overdue_days", Integer),
    Column("follow_up_status", String(40), nullable=False, default="new"),
    Column("next_action_date", Date),
    Column("event_seq", BigInteger, nullable=False, default=0),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    # Migration 1801_case_history.
    Column("creditor_flags", Text, nullable=False, default="", server_default=""),
    Column("agency_flags", Text, nullable=False, default="", server_default=""),
    # What holds the status against a later file: repayment | pause | withdraw (None: the
    # file's status applies).
    Column("status_hold", String(20)),
    Column("history_seq", BigInteger, nullable=False, default=0, server_default="0"),
    Column("history_hash", String(64), nullable=False, default="0" * 64, server_default="0" * 64),
    Column("first_call_alerted_at", UtcDateTime()),  # case.first_call_overdue emitted (once)
    Column("commission_extended_to", Date),  # an API extension; a file's earlier end does not undo it
    UniqueConstraint("creditor", "case_id"),
    Index("ix_cases_case_id", "case_id"),
    Index("ix_cases_assigned_agent", "assigned_agent"),
    # Migration 1801: the first-call sweep and the worklist's new cases.
    Index("ix_cases_follow_up_status_next_action_date", "follow_up_status", "next_action_date"),
)

# Every change to a case, contact or flag (migration 1801_case_history): append-only,
# hash-chained per case; the case row's history_seq / history_hash is the chain head.
# `record` is the canonical JSON that was hashed (who, role, when, source, field, old,
# new, reason); the other columns mirror it for queries.
case_history = Table(
    "case_history",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("case_pk", BigInteger, nullable=False),
    Column("creditor", String(64), nullable=False),
    Column("case_id", String(100), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("actor", String(100), nullable=False),
    Column("role", String(20), nullable=False),
    Column("source", String(20), nullable=False),
    Column("source_ref", String(200)),
    Column("source_row", Integer),
    Column("field", String(80), nullable=False),
    Column("record", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("case_pk", "seq"),
    Index("ix_case_history_creditor_case_id", "creditor", "case_id"),
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
    # No (creditor, at) or (allowed, at) index: no reader needs them, and every dial
    # would write them.
)

chain_heads = Table(
    "chain_heads",
    metadata,
    Column("chain", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    # Migration 1951: the first seq chained under the evidence key, and the head's MAC
    # (dialer/evidence.py); null on heads written before the key.
    Column("keyed_from", BigInteger),
    Column("mac", String(64)),
)

# Heads of the other evidence chains (the destruction register), same meaning.
evidence_heads = Table(
    "evidence_heads",
    metadata,
    Column("chain", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("keyed_from", BigInteger),
    Column("mac", String(64)),
)

# The id of the evidence key the chains are kept under (one row, "chains"): every
# instance on the store must start with that key.
evidence_key = Table(
    "evidence_key",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("key_id", String(64), nullable=False),
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
console_signouts = Table(
    "console_signouts",
    metadata,
    Column("sid", String(64), primary_key=True),
    Column("expires_at", UtcDateTime(), nullable=False),
    Index("ix_console_signouts_expires_at", "expires_at"),
)

console_session_cutoffs = Table(
    "console_session_cutoffs",
    metadata,
    Column("user_name", String(100), primary_key=True),
    Column("not_before", UtcDateTime(), nullable=False),
)

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

# Import jobs (cases, repayments): validated rows staged, applied in short batches.
# `rows_done` is how many staged rows (in seq order) are applied; applied rows are
# deleted from `import_rows` in the same transaction, so what is left is what remains.
import_jobs = Table(
    "import_jobs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("state", String(12), nullable=False),
    Column("actor", String(100), nullable=False),
    Column("creditors", Text, nullable=False),
    Column("file_name", String(200)),
    Column("encoding", String(20)),
    Column("rows_total", Integer, nullable=False),
    Column("rows_done", Integer, nullable=False),
    Column("summary", Text, nullable=False),
    Column("errors", Text),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("finished_at", UtcDateTime()),
    Index("ix_import_jobs_state", "state"),
)

import_rows = Table(
    "import_rows",
    metadata,
    Column("import_id", String(40), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("payload", Text, nullable=False),
)

# Click-to-dial call progress through the `sip_ua` PBX (migration 0201): every call state
# with its time, end cause, rule id and recording. Plain `DateTime(timezone=True)` as the
# migration built it, so rows already stored read back unchanged.
pbx_attempt_progress = Table(
    "pbx_attempt_progress",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("attempt_id", String(64), nullable=False),
    Column("state", String(32), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("cause", String(32)),
    Column("rule_id", String(100)),
    Column("detail", String(500)),
    Column("recording_id", String(100)),
    # the case's flags when the call connected and when it ended: a stop recorded during
    # a connected call does not cut it, but is shown on the attempt
    Column("case_flags", String(500)),
    Index("ix_pbx_attempt_progress_attempt_id", "attempt_id"),
)

# SIP Call-ID → attempt, learnt from PBX events on the bus that carry both (migration
# 0301), so later events of the call may name only the Call-ID.
mqtt_pbx_calls = Table(
    "mqtt_pbx_calls",
    metadata,
    Column("call_id", String(256), primary_key=True),
    Column("attempt_id", String(64), nullable=False),
    Column("pbx_id", String(128), nullable=False),
    Column("first_seen", DateTime(timezone=True), nullable=False),
    Index("ix_mqtt_pbx_calls_attempt_id", "attempt_id"),
)

# Request identities (migration id01): a retried request (the same INVITE on another
# instance, a click-to-dial with the same Idempotency-Key) is answered from its row, not
# decided and counted again. `identity` is a hash of the user and the request's key;
# rows older than the retention are swept.
dial_requests = Table(
    "dial_requests",
    metadata,
    Column("identity", String(64), primary_key=True),
    Column("decision_id", String(64), nullable=False),
    Column("attempt_id", String(64)),
    Column("request_digest", String(64), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Index("ix_dial_requests_created_at", "created_at"),
)
