"""Decide-and-reserve's statements as plain pysqlite calls, for the SQLite writer.

Every click-to-dial and every SIP INVITE runs about ten statements on the case store.
Through SQLAlchemy Core each costs ~50 µs of Python (execution context, parameter
and result processing) against ~10-30 µs for SQLite to run it; profiled, that
overhead was a third of the whole decision. On a file database the write
transactions already run on one synchronous pysqlite connection (`SqliteWriter`),
so the hot repository methods hand their SQL straight to it (pysqlite keeps the
prepared statements in its own cache).

What must stay identical to the Core path, because both write the same tables and
read each other's rows:

* timestamps: `UtcDateTime` stores naive UTC as ``YYYY-MM-DD HH:MM:SS.ffffff`` on
  SQLite (always six fractional digits, so text order is time order); dates as
  ``YYYY-MM-DD``; booleans as 0/1;
* the same columns and the same semantics (tests run each scenario on both paths
  and compare the rows).

PostgreSQL and the in-memory SQLite used by unit tests keep the Core statements.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

UTC = timezone.utc


# The last two conversions, newest first: one decision writes its `now` up to four
# times, between its lookback bound and its attempt's expiry.
_NONE: tuple[datetime | None, str] = (None, "")
_recent: tuple[tuple[datetime | None, str], tuple[datetime | None, str]] = (_NONE, _NONE)


def db_time(value: datetime) -> str:
    """An aware datetime as SQLAlchemy's SQLite DATETIME text (naive UTC, microseconds)."""
    global _recent
    newest, older = _recent  # one read: safe when another thread replaces it meanwhile
    if newest[0] is value:
        return newest[1]
    if older[0] is value:
        return older[1]
    if value.tzinfo is UTC:  # the service's own times: drop the "+00:00", no new objects
        text = value.isoformat(" ", "microseconds")[:-6]
    elif value.tzinfo is None:
        raise ValueError("naive datetime given to the store; the store keeps UTC")
    else:
        text = value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    _recent = ((value, text), newest)
    return text


def py_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def py_date(value: str | None) -> date | None:
    return None if value is None else date.fromisoformat(value)


CASE_KEYS = (
    "id", "creditor", "case_id", "debtor_name", "status", "commission_start", "commission_end", "assigned_agent",
    "flags", "amount_due", "overdue_days", "follow_up_status", "next_action_date", "event_seq", "updated_at",
    "creditor_flags", "agency_flags", "status_hold", "history_seq",
)
CASES_BY_ID = f"SELECT {', '.join(CASE_KEYS)} FROM cases WHERE case_id = ? ORDER BY id"
CONTACT_KEYS = ("case_pk", "number", "relation", "name", "tz", "status", "do_not_call", "source", "added_at")
# The same cases with their contacts in one statement (the SIP gate's INVITE without a
# case id, once per decision): one row per contact, case columns, contact columns, then
# the contact's id. Inner join: every case found holds the number. CROSS JOIN fixes the
# order SQLite joins in: the number's contacts (ix_contacts_number), their case by rowid,
# its contacts by (case_pk, number). `c.id IN (SELECT ...)` built a temporary table for
# the list and ORDER BY a sorter, for the one or two rows found: the caller orders them
# (by case, then contact id) instead.
CASES_WITH_CONTACTS_ACTIVE_FOR_AGENT_NUMBER = (
    f"SELECT {', '.join('c.' + k for k in CASE_KEYS)}, {', '.join('t.' + k for k in CONTACT_KEYS)}, t.id "
    "FROM contacts h CROSS JOIN cases c CROSS JOIN contacts t "
    "WHERE h.number = ? AND c.id = h.case_pk AND c.status = 'active' AND c.assigned_agent = ? AND t.case_pk = c.id"
)
CONTACT_ID = len(CASE_KEYS) + len(CONTACT_KEYS)  # the last column above
CONTACTS_OF_ONE = f"SELECT {', '.join(CONTACT_KEYS)} FROM contacts WHERE case_pk = ? ORDER BY id"
# Same shape and plan as the Core `Q_HISTORY`: two index range scans merged.
HISTORY = (
    "SELECT id, at, case_id, number, relation, connected, creditor FROM attempts "
    "WHERE number = :number AND at >= :since AND state != 'released' "
    "UNION ALL "
    "SELECT id, at, case_id, number, relation, connected, creditor FROM attempts "
    "WHERE case_pk = :case_pk AND at >= :since AND number != :number AND state != 'released'"
)
# Same shapes as the Core `Q_HISTORY_NEWEST_*` and `Q_HISTORY_GROUPS_*` (the bounded
# history: see `SqlAttemptRepository.history`).
_HIST = "SELECT id, at, case_id, number, relation, connected, creditor FROM attempts WHERE {key} AND at >= :since AND state != 'released'"
_RELATIONS = ("self", "guarantor", "family", "work", "third_party")
# Any other relation (counted as third_party by the policy), as the ranges between the
# known ones, so each is an index seek too (NOT IN would walk the number's whole index).
_BOUNDS = sorted(_RELATIONS)
_OTHER = (
    [f"relation < '{_BOUNDS[0]}'"]
    + [f"relation > '{a}' AND relation < '{b}'" for a, b in zip(_BOUNDS, _BOUNDS[1:])]
    + [f"relation > '{_BOUNDS[-1]}'"]
)


def _groups(key: str, index: str) -> str:
    # INDEXED BY: SQLite (no ANALYZE here) would take the (…, at) index for a rare
    # relation and walk every attempt of the number; the group index seeks, and for the
    # "any other relation" group filters on the index alone
    hist = _HIST.replace("FROM attempts", f"FROM attempts INDEXED BY {index}")
    parts = [
        f"SELECT * FROM ({hist.format(key=key)} AND {rel} AND connected = {c} AND at <= :now ORDER BY at DESC LIMIT :k)"
        for c in (0, 1) for rel in (*(f"relation = '{r}'" for r in _RELATIONS), *_OTHER)
    ]
    # later than now (clock skew): all of them; at > :now alone, so the range starts there
    parts.append(_HIST.format(key=key).replace("at >= :since", "at > :now"))
    return " UNION ALL ".join(parts)


HISTORY_NEWEST_NUMBER = _HIST.format(key="number = :number") + " ORDER BY at DESC LIMIT :cap"
HISTORY_NEWEST_CASE = _HIST.format(key="case_pk = :case_pk") + " ORDER BY at DESC LIMIT :cap"
HISTORY_GROUPS_NUMBER = _groups("number = :number", "ix_attempts_number_group_at")
HISTORY_GROUPS_CASE = _groups("case_pk = :case_pk", "ix_attempts_case_pk_group_at")
APPOINTMENTS = "SELECT number, at FROM appointments WHERE case_pk = ? AND at >= ?"
NEXT_SEQ = "UPDATE cases SET event_seq = event_seq + ? WHERE id = ? RETURNING event_seq"
INSERT_ATTEMPT = (
    "INSERT INTO attempts (id, case_pk, creditor, case_id, number, relation, agent_id, channel, state, at, "
    "valid_until, decision_id, connected) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
CHAIN_HEAD = "SELECT seq, hash, keyed_from FROM chain_heads WHERE chain = ?"
# `record` arrives as the canonical JSON's UTF-8 bytes: CAST stores them as TEXT, the
# same value a str gives (a bytes parameter alone would be stored as a BLOB).
INSERT_DECISION = (
    "INSERT INTO decisions (chain, seq, decision_id, kind, at, creditor, case_id, agent_id, allowed, rule_id, "
    "attempt_id, record, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, CAST(? AS TEXT), ?, ?)"
)
UPSERT_CHAIN_HEAD = (
    "INSERT INTO chain_heads (chain, seq, hash, keyed_from, mac) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, keyed_from = excluded.keyed_from, "
    "mac = excluded.mac"
)
INSERT_OUTBOX = (
    "INSERT INTO outbox (event_id, type, creditor, case_id, case_seq, occurred_at, payload, published_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, NULL)"
)
USER_BY_NAME = "SELECT id, name, role FROM users WHERE name = ? AND disabled = 0"
USER_CREDITORS = "SELECT creditor FROM user_creditors WHERE user_id = ?"
ATTEMPT_KEYS = (
    "id", "case_pk", "creditor", "case_id", "number", "relation", "agent_id", "channel", "state", "at",
    "valid_until", "decision_id", "connected",
)
_ATTEMPT_SELECT = f"SELECT {', '.join(ATTEMPT_KEYS)} FROM attempts"
ATTEMPT_BY_ID = f"{_ATTEMPT_SELECT} WHERE id = ?"
# The agent's live authorisations for the number (as the Core `find_pending`, which
# takes the oldest); usually none, at most a few. Without ORDER BY at: its index does
# not give that order, and setting up a sorter for no rows cost ~1.3 µs a decision;
# the caller takes the oldest (`at` text sorts as time: always six fractional digits).
ATTEMPT_PENDING = (
    f"{_ATTEMPT_SELECT} WHERE agent_id = ? AND state = 'authorised' AND number = ? AND valid_until >= ?"
)
ATTEMPT_AT = ATTEMPT_KEYS.index("at")


def attempt_row(r: tuple) -> dict:  # type: ignore[type-arg]
    """An attempts row as the Core path's mapping (times aware UTC, connected a bool)."""
    row = dict(zip(ATTEMPT_KEYS, r))
    row["at"] = py_time(row["at"])
    row["valid_until"] = py_time(row["valid_until"])
    return row
