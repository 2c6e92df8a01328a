"""The SQLite file's decide-and-reserve: the one place where performance-shaped SQL lives.

Every click-to-dial and every SIP INVITE runs about ten statements on the case store.
Through SQLAlchemy Core each costs several times what SQLite takes to run it
(execution context, parameter and result processing), a third of the whole decision.
On a file database the write transactions already run on one synchronous pysqlite
connection (`SqliteWriter`), so the statements the dial runs go straight to it
(pysqlite keeps the prepared statements in its own cache): `SqliteDialLedger` is the
`CoreDialLedger` over repositories whose dial-path methods are overridden here with
driver SQL. Every other statement is the repositories' Core one.

What must stay identical to the Core path, because both write the same tables and
read each other's rows:

* timestamps: `UtcDateTime` stores naive UTC as ``YYYY-MM-DD HH:MM:SS.ffffff`` on
  SQLite (always six fractional digits, so text order is time order); dates as
  ``YYYY-MM-DD``; booleans as 0/1;
* the same columns and the same semantics (tests run each scenario on both paths
  and compare the rows).

PostgreSQL and the in-memory SQLite keep the Core statements (`ledger_core`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db.attempts_repo import SqlAttemptRepository, _attempt as attempt_record, history_events
from adapters.db import tables as t
from adapters.db.cases_repo import SqlCaseRepository
from adapters.db.imports_repo import SqlImportJobRepository, job_from_row
from dialer.case_merge import CASE_COLUMNS, flags_set
from adapters.db.decision_log import SqlDecisionLog
from adapters.db.ledger_core import CoreDialLedger
from adapters.db.outbox_repo import SqlOutbox
from adapters.db.queries import HISTORY_CAP
from adapters.db.sqlite_writer import GroupMemo
from adapters.db.users_repo import SqlUserRepository
from dialer.chain import first_keyed_seq, link_decision_bytes
from dialer.evidence import EvidenceKey
from dialer.ports import DialOutcome
from dialer.model import AttemptRecord, CaseInput, CaseRecord, ContactRecord, DecisionRecord, ImportJob, Principal
from policy.model import Appointment, HistoryEvent

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
# not give that order, and every decision would pay for a sorter over no rows;
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


# ---------------------------------------------------------------------------------
# The case import's batch upsert on the writer's connection: driver SQL with the same
# columns and stored forms as `SqlCaseRepository`'s Core statements (dates as ISO text,
# times as `db_time`, booleans 0/1).
_CASE_COLS = tuple(t.cases.c.keys())
_CASE_DATES = frozenset({"commission_start", "commission_end", "next_action_date", "commission_extended_to"})
_CASE_TIMES = frozenset({"created_at", "updated_at", "first_call_alerted_at"})
_CONTACT_COLS = ("id", "case_pk", "number", "relation", "name", "tz", "status", "do_not_call", "source", "added_at")
_RAW_CASES_OF = (f"SELECT {', '.join(_CASE_COLS)} FROM cases "
                 "WHERE case_id IN (SELECT value FROM json_each(?)) ORDER BY id")
_RAW_CONTACTS_OF = (f"SELECT {', '.join(_CONTACT_COLS)} FROM contacts "
                    "WHERE case_pk IN (SELECT value FROM json_each(?)) ORDER BY id")
_RAW_PKS_OF = "SELECT id, creditor, case_id FROM cases WHERE case_id IN (SELECT value FROM json_each(?))"
_INSERT_CASE_COLS = (
    "creditor", "case_id", "event_seq", "created_at", "updated_at", "first_call_alerted_at", "history_seq",
    "history_hash", *(c for c in CASE_COLUMNS if c != "first_call_alerted_at"),
)
_RAW_INSERT_CASE = (f"INSERT INTO cases ({', '.join(_INSERT_CASE_COLS)}) "
                    f"VALUES ({', '.join('?' * len(_INSERT_CASE_COLS))})")
_UPDATE_CASE_COLS = (*CASE_COLUMNS, "history_seq", "history_hash", "updated_at")
_RAW_UPDATE_CASE = f"UPDATE cases SET {', '.join(c + ' = ?' for c in _UPDATE_CASE_COLS)} WHERE id = ?"
_CONTACT_SET = ("relation", "name", "tz", "status", "do_not_call")
_RAW_UPDATE_CONTACT = f"UPDATE contacts SET {', '.join(c + ' = ?' for c in _CONTACT_SET)} WHERE id = ?"
_RAW_DELETE_CONTACT = "DELETE FROM contacts WHERE id = ?"
_INSERT_CONTACT_COLS = ("case_pk", "number", "relation", "name", "tz", "status", "do_not_call", "source", "added_at")
_RAW_INSERT_CONTACT = (f"INSERT INTO contacts ({', '.join(_INSERT_CONTACT_COLS)}) "
                       f"VALUES ({', '.join('?' * len(_INSERT_CONTACT_COLS))})")
_HISTORY_COLS = ("case_pk", "creditor", "case_id", "seq", "at", "actor", "role", "source", "source_ref",
                 "source_row", "field", "record", "prev_hash", "hash")
_RAW_INSERT_HISTORY = (f"INSERT INTO case_history ({', '.join(_HISTORY_COLS)}) "
                       f"VALUES ({', '.join('?' * len(_HISTORY_COLS))})")


_TO_DB: dict[type, Callable[[Any], Any]] = {datetime: db_time, date: date.isoformat, bool: int}


def _db_value(value: Any) -> Any:
    convert = _TO_DB.get(type(value))
    return value if convert is None else convert(value)


def _stored_raw(
    raw: sqlite3.Connection, rows: Sequence[tuple[int | None, CaseInput]]
) -> tuple[dict[tuple[str, str], Any], dict[int, list[Any]]]:
    """`SqlCaseRepository._stored_for` in driver SQL (SQLite: one writer, nothing to lock)."""
    ids = json.dumps(sorted({case.case_id for _, case in rows}))
    wanted = {(case.creditor, case.case_id) for _, case in rows}
    stored: dict[tuple[str, str], Any] = {}
    for r in raw.execute(_RAW_CASES_OF, (ids,)):
        d = dict(zip(_CASE_COLS, r))
        if (d["creditor"], d["case_id"]) not in wanted:
            continue
        for k in _CASE_DATES:
            d[k] = py_date(d[k])
        for k in _CASE_TIMES:
            d[k] = py_time(d[k])
        stored[(d["creditor"], d["case_id"])] = d
    contacts: dict[int, list[Any]] = {}
    if stored:
        pks = json.dumps(sorted(d["id"] for d in stored.values()))
        for r in raw.execute(_RAW_CONTACTS_OF, (pks,)):
            c = dict(zip(_CONTACT_COLS, r))
            c["added_at"] = py_time(c["added_at"])
            contacts.setdefault(c["case_pk"], []).append(c)
    return stored, contacts


# Columns whose values need converting to their stored form (the rest are text and
# integers already): converting only these is most of the cost of building a batch.
_TYPED = _CASE_DATES | _CASE_TIMES | {"do_not_call", "added_at"}


def _params(rows: list[dict[str, Any]], cols: Sequence[str], *tail: str) -> list[tuple[Any, ...]]:
    """`rows` as parameter tuples of `cols` then `tail`, in their stored forms."""
    names = (*cols, *tail)
    typed = [i for i, c in enumerate(names) if c in _TYPED]
    out = []
    for d in rows:
        values = [d[c] for c in names]
        for i in typed:
            values[i] = _db_value(values[i])
        out.append(tuple(values))
    return out


def _insert_cases_raw(raw: sqlite3.Connection, inserts: list[dict[str, Any]]) -> list[int]:
    raw.executemany(_RAW_INSERT_CASE, _params(inserts, _INSERT_CASE_COLS))
    ids = json.dumps(sorted({d["case_id"] for d in inserts}))
    pks = {(creditor, case_id): pk for pk, creditor, case_id in raw.execute(_RAW_PKS_OF, (ids,))}
    return [int(pks[(d["creditor"], d["case_id"])]) for d in inserts]


def _write_raw(
    raw: sqlite3.Connection, updates: list[dict[str, Any]], contact_deletes: list[dict[str, Any]],
    contact_updates: list[dict[str, Any]], contact_inserts: list[dict[str, Any]], history: list[dict[str, Any]],
) -> None:
    if updates:
        raw.executemany(_RAW_UPDATE_CASE, _params(updates, _UPDATE_CASE_COLS, "_pk"))
    if contact_deletes:
        raw.executemany(_RAW_DELETE_CONTACT, [(d["_id"],) for d in contact_deletes])
    if contact_updates:
        raw.executemany(_RAW_UPDATE_CONTACT, _params(contact_updates, _CONTACT_SET, "_id"))
    if contact_inserts:
        raw.executemany(_RAW_INSERT_CONTACT, _params(contact_inserts, _INSERT_CONTACT_COLS))
    if history:
        # Every entry of a batch is at the same time; the rest are text and integers.
        at = {id(d["at"]): db_time(d["at"]) for d in history}
        raw.executemany(_RAW_INSERT_HISTORY, [
            (d["case_pk"], d["creditor"], d["case_id"], d["seq"], at[id(d["at"])], d["actor"], d["role"],
             d["source"], d["source_ref"], d["source_row"], d["field"], d["record"], d["prev_hash"], d["hash"])
            for d in history
        ])


# ---------------------------------------------------------------------------------
# The repositories' dial-path methods on the writer's pysqlite connection
# ---------------------------------------------------------------------------------
class SqliteCaseRepository(SqlCaseRepository):
    def __init__(self, conn: AsyncConnection, raw: sqlite3.Connection, evidence: EvidenceKey | None = None) -> None:
        super().__init__(conn, evidence)
        self.raw = raw

    async def _stored_for(
        self, rows: Sequence[tuple[int | None, CaseInput]]
    ) -> tuple[dict[tuple[str, str], Any], dict[int, list[Any]]]:
        return _stored_raw(self.raw, rows)

    async def ensure_creditor(self, creditor: str) -> None:
        # Asked once per import batch: a known creditor costs one driver statement.
        if creditor not in self._creditors and self.raw.execute(_RAW_CREDITOR, (creditor,)).fetchone() is not None:
            self._creditors.add(creditor)
        await super().ensure_creditor(creditor)

    async def _insert_cases(self, inserts: list[dict[str, Any]]) -> list[int]:
        return _insert_cases_raw(self.raw, inserts)

    async def _write_batch(
        self, updates: list[dict[str, Any]], contact_deletes: list[dict[str, Any]],
        contact_updates: list[dict[str, Any]], contact_inserts: list[dict[str, Any]], history: list[dict[str, Any]],
    ) -> None:
        _write_raw(self.raw, updates, contact_deletes, contact_updates, contact_inserts, history)

    def _find_raw(self, raw: sqlite3.Connection, case_id: str, creditors: frozenset[str] | None) -> list[CaseRecord]:
        return self._load_raw(raw, CASES_BY_ID, (case_id,), creditors)

    def _load_raw(
        self, raw: sqlite3.Connection, sql: str, params: tuple[Any, ...], creditors: frozenset[str] | None
    ) -> list[CaseRecord]:
        # Records straight from the row tuples (columns in CASE_KEYS and
        # CONTACT_KEYS order), no mapping per row.
        out = []
        for r in raw.execute(sql, params).fetchall():
            if creditors is not None and r[1] not in creditors:
                continue
            contacts = tuple([
                ContactRecord(c[1], c[2], c[3], c[4], c[5], bool(c[6]), c[7], py_time(c[8]))
                for c in raw.execute(CONTACTS_OF_ONE, (r[0],))
            ])
            out.append(self._case_from_row(r, contacts))
        return out

    def _load_joined_raw(self, raw: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[CaseRecord]:
        """Cases from one statement that returns a row per contact (CASE_KEYS then
        CONTACT_KEYS columns, then the contact's id): one statement instead of one
        for the cases and one per case for their contacts. Ordered here by case, then
        contact id (the Core path's order), as the statement does not sort."""
        k = len(CASE_KEYS)  # the contact's columns follow the case's
        out: list[CaseRecord] = []
        case: Any = None
        contacts: list[ContactRecord] = []
        rows = raw.execute(sql, params).fetchall()
        if len(rows) > 1:
            cid = CONTACT_ID
            rows.sort(key=lambda r: (r[0], r[cid]))
        for r in rows:
            if case is None or r[0] != case[0]:
                if case is not None:
                    out.append(self._case_from_row(case, tuple(contacts)))
                case, contacts = r, []
            contacts.append(ContactRecord(r[k + 1], r[k + 2], r[k + 3], r[k + 4], r[k + 5], bool(r[k + 6]), r[k + 7],
                                          py_time(r[k + 8])))
        if case is not None:
            out.append(self._case_from_row(case, tuple(contacts)))
        return out

    @staticmethod
    def _case_from_row(r: Any, contacts: tuple[ContactRecord, ...]) -> CaseRecord:
        return CaseRecord(
            pk=r[0], creditor=r[1], case_id=r[2], debtor_name=r[3], status=r[4],
            commission_start=py_date(r[5]), commission_end=py_date(r[6]), assigned_agent=r[7],
            flags=flags_set(r[8]), amount_due=r[9], overdue_days=r[10], follow_up_status=r[11],
            next_action_date=py_date(r[12]), event_seq=r[13], contacts=contacts, updated_at=py_time(r[14]),
            creditor_flags=flags_set(r[15]), agency_flags=flags_set(r[16]), status_hold=r[17], history_seq=r[18],
        )

    async def find(self, case_id: str, creditors: frozenset[str] | None) -> list[CaseRecord]:
        return self._find_raw(self.raw, case_id, creditors)

    async def active_for_agent(self, agent_id: str, number: str) -> list[CaseRecord]:
        return self._load_joined_raw(self.raw, CASES_WITH_CONTACTS_ACTIVE_FOR_AGENT_NUMBER, (number, agent_id))

    async def next_event_seq(self, pk: int, count: int = 1) -> int:
        row = self.raw.execute(NEXT_SEQ, (count, pk)).fetchone()
        if row is None:
            raise LookupError(f"case pk {pk} vanished")
        return int(row[0]) - count + 1

    async def appointments(self, pk: int, since: datetime) -> list[Appointment]:
        return [
            Appointment(number=r[0], at=py_time(r[1]))  # type: ignore[arg-type]
            for r in self.raw.execute(APPOINTMENTS, (pk, db_time(since)))
        ]


class SqliteAttemptRepository(SqlAttemptRepository):
    def __init__(self, conn: AsyncConnection, raw: sqlite3.Connection) -> None:
        super().__init__(conn)
        self.raw = raw

    async def history(
        self, number: str, case_pk: int, creditor: str, since: datetime, limit: int | None = None,
        now: datetime | None = None,
    ) -> list[HistoryEvent]:
        """As `SqlAttemptRepository.history`, with the same statements' driver SQL."""
        bounded = limit is not None and now is not None
        if not bounded:
            rows: Any = self.raw.execute(HISTORY, {"number": number, "case_pk": case_pk, "since": db_time(since)})
        else:
            cap = max(HISTORY_CAP, 4 * limit)  # type: ignore[operator]
            rows = []
            for param, value, newest, groups in (
                ("number", number, HISTORY_NEWEST_NUMBER, HISTORY_GROUPS_NUMBER),
                ("case_pk", case_pk, HISTORY_NEWEST_CASE, HISTORY_GROUPS_CASE),
            ):
                p = {param: value, "since": db_time(since), "cap": cap}
                got = self.raw.execute(newest, p).fetchall()
                if len(got) >= cap:
                    p.update(k=limit, now=db_time(now))  # type: ignore[arg-type]
                    got = self.raw.execute(groups, p).fetchall()
                rows.extend(got)
        return history_events(rows, creditor, bounded, py_time)

    async def add(self, attempt: AttemptRecord) -> None:
        self.raw.execute(INSERT_ATTEMPT, (
            attempt.attempt_id, attempt.case_pk, attempt.creditor, attempt.case_id, attempt.number,
            attempt.relation, attempt.agent_id, attempt.channel, attempt.state, db_time(attempt.at),
            db_time(attempt.valid_until), attempt.decision_id, int(attempt.connected),
        ))

    async def get(self, attempt_id: str) -> AttemptRecord | None:
        found = self.raw.execute(ATTEMPT_BY_ID, (attempt_id,)).fetchone()
        return attempt_record(attempt_row(found)) if found else None

    async def find_pending(self, agent_id: str, number: str, now: datetime) -> AttemptRecord | None:
        rows = self.raw.execute(ATTEMPT_PENDING, (agent_id, number, db_time(now))).fetchall()
        if not rows:
            return None
        oldest = rows[0] if len(rows) == 1 else min(rows, key=lambda r: r[ATTEMPT_AT])
        return attempt_record(attempt_row(oldest))


class SqliteDecisionLog(SqlDecisionLog):
    def __init__(
        self, conn: AsyncConnection, raw: sqlite3.Connection, memo: GroupMemo | None, evidence: EvidenceKey | None,
    ) -> None:
        super().__init__(conn, False, evidence)
        self.raw = raw
        self.memo = memo  # the SQLite write group's (see GroupMemo)

    async def append(self, record: DecisionRecord) -> DecisionRecord:
        chain = record.creditor or "-"
        raw = self.raw
        memo = self.memo
        head = memo.heads.get(chain) if memo is not None else None
        if head is None:
            head = raw.execute(CHAIN_HEAD, (chain,)).fetchone()
        key = self.evidence
        rec, body = link_decision_bytes(record, chain, head, key)
        keyed_from = first_keyed_seq(head, rec.seq)
        raw.execute(INSERT_DECISION, (
            chain, rec.seq, rec.decision_id, rec.kind, db_time(rec.at), rec.creditor, rec.case_id, rec.agent_id,
            int(rec.allowed), rec.rule_id, rec.attempt_id, body, rec.prev_hash, rec.hash,
        ))
        raw.execute(UPSERT_CHAIN_HEAD, (
            chain, rec.seq, rec.hash, keyed_from, key.head_mac(chain, rec.seq, rec.hash, keyed_from),
        ))
        if memo is not None:
            memo.heads[chain] = (rec.seq, rec.hash, keyed_from)
        return rec


_RAW_CREDITOR = "SELECT id FROM creditors WHERE id = ?"
_JOB_COLS = tuple(t.import_jobs.c.keys())
_RAW_JOB = f"SELECT {', '.join(_JOB_COLS)} FROM import_jobs WHERE id = ?"
_RAW_ADVANCE = "UPDATE import_jobs SET rows_done = ?, summary = ?, updated_at = ? WHERE id = ?"
_RAW_DROP_APPLIED = "DELETE FROM import_rows WHERE import_id = ? AND seq <= ?"


class SqliteImportJobRepository(SqlImportJobRepository):
    """An import batch's own statements (its job row, the advance) in driver SQL on the
    writer's connection: run once per batch, and a batch of a few milliseconds paid
    more for building them through the Core than for running them."""

    def __init__(self, conn: AsyncConnection, raw: sqlite3.Connection) -> None:
        super().__init__(conn, is_postgres=False)
        self.raw = raw

    async def lock(self, import_id: str) -> ImportJob | None:
        r = self.raw.execute(_RAW_JOB, (import_id,)).fetchone()
        if r is None:
            return None
        d = dict(zip(_JOB_COLS, r))
        for k in ("created_at", "updated_at", "finished_at"):
            d[k] = py_time(d[k])
        return job_from_row(d)

    async def advance(self, import_id: str, through: int, summary: dict[str, int], now: datetime) -> None:
        self.raw.execute(_RAW_ADVANCE, (through, json.dumps(summary), db_time(now), import_id))
        self.raw.execute(_RAW_DROP_APPLIED, (import_id, through))


class SqliteOutbox(SqlOutbox):
    def __init__(self, conn: AsyncConnection, raw: sqlite3.Connection, cases: SqlCaseRepository, *, keep: bool) -> None:
        super().__init__(conn, cases, keep=keep)
        self.raw = raw

    async def _insert(
        self, event_id: str, type: str, creditor: str, case_id: str | None, case_seq: int | None,
        occurred_at: datetime, payload: str,
    ) -> None:
        self.raw.execute(INSERT_OUTBOX, (event_id, type, creditor, case_id, case_seq, db_time(occurred_at), payload))


class SqliteUserRepository(SqlUserRepository):
    def __init__(self, conn: AsyncConnection, raw: sqlite3.Connection, memo: GroupMemo | None) -> None:
        super().__init__(conn)
        self.raw = raw
        self.memo = memo  # the SQLite write group's (see GroupMemo)

    async def by_name(self, name: str) -> Principal | None:
        # the SIP gate asks for its agent on every decision
        memo = self.memo
        if memo is not None and name in memo.users:
            return memo.users[name]
        u = self.raw.execute(USER_BY_NAME, (name,)).fetchone()
        found = None
        if u is not None:
            creds = frozenset(r[0] for r in self.raw.execute(USER_CREDITORS, (u[0],)))
            found = Principal(user_id=u[0], name=u[1], role=u[2], creditors=creds)
        if memo is not None:
            memo.users[name] = found
        return found


class SqliteDialLedger(CoreDialLedger):
    """The `DialLedger` of a unit on the SQLite writer: `CoreDialLedger`'s reads and
    writes, through the driver-SQL repositories above (the unit's own)."""

    @property
    def _raw(self) -> sqlite3.Connection:
        attempts = self.uow.attempts
        assert isinstance(attempts, SqliteAttemptRepository)
        return attempts.raw

    async def _request_row(self, identity: str) -> tuple[str, str | None, str, datetime] | None:
        row = self._raw.execute(REQUEST_BY_IDENTITY, (identity,)).fetchone()
        if row is None:
            return None
        stored_at = py_time(row[3])
        assert stored_at is not None  # a NOT NULL column
        return (row[0], row[1], row[2], stored_at)

    async def _add_request(self, outcome: DialOutcome, attempt_id: str | None) -> bool:
        cur = self._raw.execute(INSERT_REQUEST, (
            outcome.request, outcome.record.decision_id, attempt_id, outcome.request_digest,
            db_time(outcome.at or outcome.record.at),
        ))
        return cur.rowcount == 1


REQUEST_BY_IDENTITY = (
    "SELECT decision_id, attempt_id, request_digest, created_at FROM dial_requests WHERE identity = ?"
)
INSERT_REQUEST = (
    "INSERT INTO dial_requests (identity, decision_id, attempt_id, request_digest, created_at)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (identity) DO NOTHING"
)
