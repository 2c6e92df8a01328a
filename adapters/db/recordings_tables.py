"""The recordings vault's tables in the service database, mirroring the migration
``versions/0101_recordings.py`` and its successors (a test checks they agree)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    Float,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from adapters.db.tables import NAMING, BigId, UtcDateTime


# The vault's own MetaData: its tables belong to the migration 0101, not to 0001.
metadata = MetaData(naming_convention=NAMING)

recordings = Table(
    "recordings",
    metadata,
    Column("recording_id", String(32), primary_key=True),
    Column("source_kind", String(10), nullable=False),
    Column("source_id", String(200), nullable=False),
    Column("creditor", String(64)),  # null: unmatched (call unknown)
    Column("case_id", String(100)),
    Column("agent", String(100)),
    Column("number_masked", String(32)),
    Column("number_digest", String(64)),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("duration_s", Float),
    Column("media_type", String(40), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("blob_size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("data_key_id", String(32), nullable=False),
    Column("kek_id", String(64)),  # null once destroyed
    Column("wrapped_key", LargeBinary(128)),  # null once destroyed (crypto-shredded)
    Column("retain_until", Date, nullable=False),
    Column("state", String(12), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("destroyed_at", UtcDateTime()),
    Column("hold_reason", Text),
    Column("hold_by", String(100)),
    Column("hold_at", UtcDateTime()),
    UniqueConstraint("source_kind", "source_id"),
    Index("ix_recordings_creditor_case_id", "creditor", "case_id"),
    Index("ix_recordings_creditor_started_at", "creditor", "started_at"),
    Index("ix_recordings_agent_started_at", "agent", "started_at"),
    Index("ix_recordings_number_digest", "number_digest"),
    Index("ix_recordings_state_retain_until", "state", "retain_until"),
)

recording_case_holds = Table(
    "recording_case_holds",
    metadata,
    Column("creditor", String(64), primary_key=True),
    Column("case_id", String(100), primary_key=True),
    Column("reason", Text, nullable=False),
    Column("held_by", String(100), nullable=False),
    Column("held_at", UtcDateTime(), nullable=False),
)

recording_access_log = Table(
    "recording_access_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("recording_id", String(32), nullable=False),
    Column("user", String(100), nullable=False),
    Column("role", String(20), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("reason", Text, nullable=False),
    Column("range_start", BigInteger, nullable=False),
    Column("range_end", BigInteger, nullable=False),
    Column("client", String(100)),
    Column("purpose", String(10), nullable=False),
    Index("ix_recording_access_log_recording_id_at", "recording_id", "at"),
)

recording_purges = Table(
    "recording_purges",
    metadata,
    Column("purge_id", String(32), primary_key=True),
    Column("requested_by", String(100), nullable=False),
    Column("requested_at", UtcDateTime(), nullable=False),
    Column("as_of", Date, nullable=False),
    Column("recording_ids", Text, nullable=False),  # JSON list
    Column("state", String(10), nullable=False),
    Column("approved_by", String(100)),
    Column("approved_at", UtcDateTime()),
    Column("destroyed", Text, nullable=False),  # JSON list
    Column("skipped", Text, nullable=False),  # JSON list
)

recording_destruction_register = Table(
    "recording_destruction_register",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("recording_id", String(32), nullable=False),
    Column("case_id", String(100)),
    Column("creditor", String(64)),
    Column("sha256", String(64), nullable=False),
    Column("retain_until", Date, nullable=False),
    Column("operator", String(100), nullable=False),
    Column("approver", String(100), nullable=False),
    Column("purge_id", String(32), nullable=False),
    Column("destroyed_at", UtcDateTime(), nullable=False),
    Column("method", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False, unique=True),
)


# Connected calls the vault expects a recording for (migration 2451): a row is made the
# first time the sweep sees a connected attempt ended without one, and closed when the
# recording arrives; an open row past its due time is alerted once.
recording_expectations = Table(
    "recording_expectations",
    metadata,
    Column("attempt_id", String(36), primary_key=True),
    Column("creditor", String(64), nullable=False),
    Column("case_id", String(100), nullable=False),
    Column("agent", String(100), nullable=False),
    Column("number_masked", String(32), nullable=False),
    Column("dialed_at", UtcDateTime(), nullable=False),
    Column("seen_at", UtcDateTime(), nullable=False),
    Column("due_at", UtcDateTime(), nullable=False),
    Column("alerted_at", UtcDateTime()),
    Column("recording_id", String(32)),
    Column("resolved_at", UtcDateTime()),
    Index("ix_recording_expectations_resolved_at_due_at", "resolved_at", "due_at"),
    Index("ix_recording_expectations_creditor_dialed_at", "creditor", "dialed_at"),
)
