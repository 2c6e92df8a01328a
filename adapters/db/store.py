"""SqlAlchemyCaseStore: the case store on SQLite (aiosqlite) or PostgreSQL (asyncpg).

Atomic decide-and-reserve rests on `write(lock_keys)`:

* SQLite: the driver's own BEGIN is disabled and we emit `BEGIN IMMEDIATE` for write
  transactions (the SQLAlchemy "serializable isolation / savepoints" recipe), so the
  write lock is taken before the first read and every writer is serialised — across
  processes too. In-process, writers also queue on an `asyncio.Lock` first: SQLite's
  busy handler polls with sleeps, a FIFO lock does not. WAL lets readers run alongside.
  For a file database, write transactions run on one synchronous pysqlite connection
  (`_SqliteWriter`): BEGIN IMMEDIATE runs inline when the lock is free (else in a
  worker thread), the statements run inline — a few tens of microseconds each —
  instead of two or three thread hand-offs per statement through aiosqlite. Reads stay
  on aiosqlite. Writes that queue while one runs, or run later in the same turn of the
  event loop, share its transaction (group commit, `_sqlite_write`): each in its own
  SAVEPOINT, one COMMIT and one fsync for the group, nobody answered before that
  COMMIT is on stable storage. In WAL mode the COMMIT (page writes only) runs inline at
  the end of the loop's turn (`_commit_at_turn_end`); otherwise on the commit thread.
  With `synchronous = FULL` the fsync happens after SQLite's write lock is let go
  (`_SqliteWriter.durable_by_fsync`), so the next group runs during the flush. WAL
  checkpoints run on a connection and thread of their own (`_checkpoint_work`), not
  inside a COMMIT that holds the write lock.
  DialGate processes sharing the file take turns on `<database>.writer-lock`.
* PostgreSQL: READ COMMITTED plus `pg_advisory_xact_lock` on each lock key
  (``case:…``, ``number:…``), taken in sorted order so two requests never deadlock;
  the decision log then takes its chain's lock (see `SqlDecisionLog.append`).

Every connection is used by one task only (one AsyncConnection per unit of work).
Library exceptions are translated at this boundary into `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import queue
import sqlite3
import threading
from dataclasses import replace
from time import monotonic as _monotonic, sleep as _sleep
from collections import Counter
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Iterable, Sequence
from zoneinfo import ZoneInfo

import orjson
import structlog
from sqlalchemy import Connection, and_, bindparam, create_engine, event, func, insert, literal, or_, select, text, union_all, update
from sqlalchemy.exc import DataError, DBAPIError, SQLAlchemyError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from adapters.db import sqlite_hot as hot
from adapters.db import tables as t
from adapters.db.imports_repo import SqlImportJobRepository
from dialer.config import StoreConfig
from dialer import evidence as evidence_chain
from dialer.errors import StoreRefusedValue, StoreUnavailable
from dialer.evidence import EvidenceKey
from dialer.ids import new_id
from dialer.masking import mask_number, mask_text
from dialer.model import (
    REVIEWED_KINDS,
    UNKNOWN_IMPORT,
    AttemptRecord,
    CaseInput,
    CaseRecord,
    ChangeSource,
    ContactRecord,
    DecisionRecord,
    HistoryEntry,
    OutboxEvent,
    OutcomeRecord,
    Principal,
)
from policy.model import Appointment, HistoryEvent

GENESIS_HASH = "0" * 64
# Units of work built outside a store (tests of one repository) chain under this.
_NO_KEY = EvidenceKey.ephemeral()

log = structlog.get_logger("dialgate.store")

# WAL checkpoints (copying committed pages from the WAL back into the database file, then
# fsyncing both) run on a thread of the writer's own, at most this often while writes
# come in, so no COMMIT pays for one. SQLite's own automatic checkpoint stays on, at
# this many WAL pages, only as the backstop that lets the WAL start over from its
# beginning: a background checkpoint under a steady stream of commits never quite
# catches up with the last one.
CHECKPOINT_EVERY_S = 0.05
WAL_BACKSTOP_PAGES = 10_000


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8 text: one text per value, which the hash chains
    hash as stored (verification hashes the stored text; it never re-encodes, so
    records written by earlier encoders still verify). orjson: the decision record is
    encoded for every decision, 3 µs here against 35-125 µs with the json module."""
    return orjson.dumps(value, option=_CANONICAL).decode()


_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def chain_hash(prev_hash: str, record_text: str) -> str:
    """SHA-256 over the previous hash and the record's canonical JSON."""
    return hashlib.sha256((prev_hash + "\n" + record_text).encode("utf-8")).hexdigest()


# Hot-path statements, built once: constructing a Core statement and its cache key
# costs more CPU than SQLite takes to run it (profiled on decide-and-reserve).
_a = t.attempts.c
_HIST_COLS = (_a.id, _a.at, _a.case_id, _a.number, _a.relation, _a.connected, _a.creditor)
Q_CASES_BY_ID = select(t.cases).where(t.cases.c.case_id == bindparam("case_id")).order_by(t.cases.c.id)
Q_CASES_BY_ID_SCOPED = (
    select(t.cases)
    .where(t.cases.c.case_id == bindparam("case_id"), t.cases.c.creditor.in_(bindparam("creditors", expanding=True)))
    .order_by(t.cases.c.id)
)
Q_CONTACTS_OF = (
    select(t.contacts).where(t.contacts.c.case_pk.in_(bindparam("pks", expanding=True))).order_by(t.contacts.c.id)
)
# Two index range scans, (number, at) and (case_pk, at), merged. The number's attempts
# count across all cases and creditors: it is one person's phone. A released attempt
# (click-to-dial whose debtor leg was never dialled) never counts.
Q_HISTORY = union_all(
    select(*_HIST_COLS).where(_a.number == bindparam("number"), _a.at >= bindparam("since"), _a.state != "released"),
    select(*_HIST_COLS).where(
        _a.case_pk == bindparam("case_pk"), _a.at >= bindparam("since"), _a.number != bindparam("number"),
        _a.state != "released",
    ),
)
# The bounded history (`SqlAttemptRepository.history` with a limit). First each branch's
# newest rows, at most `:cap` (a number or case dialed as usual has far fewer: then the
# branch is complete and exact as it is). A branch that fills its cap is read again by
# group: the newest `:k` up to `:now` of each (relation, answered) group, seeking the
# (…, relation, connected, at) index, and every attempt after `:now` (clock skew).
_GROUP_RELATIONS = ("self", "guarantor", "family", "work", "third_party")  # policy.model.RELATIONS


def _hist_branch(key: Any, param: str) -> Any:
    return select(*_HIST_COLS).where(key == bindparam(param), _a.at >= bindparam("since"), _a.state != "released")


def _newest(key: Any, param: str) -> Any:
    return _hist_branch(key, param).order_by(_a.at.desc()).limit(bindparam("cap"))


def _by_group(key: Any, param: str) -> Any:
    bounds = sorted(_GROUP_RELATIONS)
    # any other relation (counted as third_party) as the ranges between the known ones:
    # each an index seek, where NOT IN would walk all of the number's index entries
    others = [_a.relation < bounds[0], _a.relation > bounds[-1]] + [
        and_(_a.relation > lo, _a.relation < hi) for lo, hi in zip(bounds, bounds[1:])
    ]
    parts = []
    for connected in (False, True):
        for cond in (*(_a.relation == rel for rel in _GROUP_RELATIONS), *others):
            q = _hist_branch(key, param).where(cond, _a.connected == connected, _a.at <= bindparam("now"))
            parts.append(select(q.order_by(_a.at.desc()).limit(bindparam("k")).subquery()))
    # later than now (clock skew): all of them
    parts.append(select(*_HIST_COLS).where(key == bindparam(param), _a.at > bindparam("now"), _a.state != "released"))
    return union_all(*parts)


Q_HISTORY_NEWEST_NUMBER = _newest(_a.number, "number")
Q_HISTORY_NEWEST_CASE = _newest(_a.case_pk, "case_pk")
Q_HISTORY_GROUPS_NUMBER = _by_group(_a.number, "number")
Q_HISTORY_GROUPS_CASE = _by_group(_a.case_pk, "case_pk")
_HISTORY_CAP = 64  # rows per branch read before reading by group


Q_APPOINTMENTS = select(t.appointments.c.number, t.appointments.c.at).where(
    t.appointments.c.case_pk == bindparam("case_pk"), t.appointments.c.at >= bindparam("since")
)
Q_NEXT_SEQ = (
    update(t.cases)
    .where(t.cases.c.id == bindparam("pk"))
    .values(event_seq=t.cases.c.event_seq + bindparam("count"))
    .returning(t.cases.c.event_seq)
)
Q_CHAIN_HEAD = select(t.chain_heads.c.seq, t.chain_heads.c.hash, t.chain_heads.c.keyed_from).where(
    t.chain_heads.c.chain == bindparam("chain")
)
Q_CHAIN_HEAD_UPDATE = (
    update(t.chain_heads)
    .where(t.chain_heads.c.chain == bindparam("chain_key"))
    .values(seq=bindparam("seq"), hash=bindparam("hash"), keyed_from=bindparam("keyed_from"), mac=bindparam("mac"))
)
def _dial_candidates_query() -> Any:
    """`SqlCaseRepository.dial_candidates` as ONE statement (rows: src 0 = the agent's
    oldest valid pending attempt for the number, src 1 = each active case assigned to
    the agent that holds the number): the same answer as `attempts.find_pending` then
    `cases.active_for_agent`, which cost three SELECTs (the cases' contacts included)."""
    a, c, k = t.attempts.c, t.cases.c, t.contacts.c
    pending = (
        select(literal(0).label("src"), a.creditor.label("creditor"), a.case_id.label("case_id"))
        .where(a.agent_id == bindparam("agent"), a.state == "authorised", a.number == bindparam("number"),
               a.valid_until >= bindparam("now"))
        .order_by(a.at)
        .limit(1)
        .subquery()
    )
    holding = select(k.case_pk).where(k.number == bindparam("number"))
    active = select(literal(1).label("src"), c.creditor.label("creditor"), c.case_id.label("case_id")).where(
        c.id.in_(holding), c.status == "active", c.assigned_agent == bindparam("agent")
    )
    return union_all(select(pending.c.src, pending.c.creditor, pending.c.case_id), active)


Q_DIAL_CANDIDATES = _dial_candidates_query()


# Case writes, built once: an import applies them per row.
Q_CASE_BY_KEY = (
    select(t.cases).where(t.cases.c.creditor == bindparam("creditor"), t.cases.c.case_id == bindparam("case_id"))
)
Q_CASE_BY_KEY_LOCKED = Q_CASE_BY_KEY.with_for_update()
Q_CASE_BY_PK_LOCKED = select(t.cases).where(t.cases.c.id == bindparam("pk")).with_for_update()
Q_CONTACTS_OF_CASE = select(t.contacts).where(t.contacts.c.case_pk == bindparam("pk"))
Q_CREDITOR = select(t.creditors.c.id).where(t.creditors.c.id == bindparam("creditor"))
I_CASE = insert(t.cases)
U_CASE = update(t.cases).where(t.cases.c.id == bindparam("_pk"))  # SET the columns the parameters name
I_CONTACT = insert(t.contacts)
I_HISTORY = insert(t.case_history)
I_ATTEMPT = insert(t.attempts)
I_DECISION = insert(t.decisions)
I_CHAIN_HEAD = insert(t.chain_heads)
I_OUTBOX = insert(t.outbox)


# ---------------------------------------------------------------------------------
# Case history (hash chain per case)
# ---------------------------------------------------------------------------------
CLOSED_STATUSES = frozenset({"settled", "withdrawn", "returned"})
FIRST_CALL_DAYS = 2  # 首催2天内
# What a history entry records of the case row. The debtor's name is left out: the
# history outlives the commission, and the bank's data is returned without copies
# (numbers are kept masked for the same reason).
TRACKED_FIELDS: tuple[str, ...] = (
    "status", "status_hold", "commission_start", "commission_end", "assigned_agent", "creditor_flags",
    "agency_flags", "amount_due", "overdue_days", "follow_up_status", "next_action_date",
)
SYSTEM_CHANGE = ChangeSource(kind="system", actor="system", role="system")


def link_history(entry: HistoryEntry, prev_hash: str, key: EvidenceKey) -> tuple[HistoryEntry, str]:
    """`entry` as the link after `prev_hash`: with its prev_hash and hash, and the
    canonical text that hash covers. The one place a history link is computed: an
    HMAC under the evidence key (`dialer.evidence`), which verification uses too, so
    an entry cannot be re-forged from the database alone."""
    linked = replace(entry, prev_hash=prev_hash, hash="")
    record = canonical_json(linked.body())
    return replace(linked, hash=key.link(prev_hash, record.encode("utf-8"))), record


def history_from_record(record: str, hash_: str) -> HistoryEntry:
    d = json.loads(record)
    return HistoryEntry(
        creditor=d["creditor"], case_id=d["case_id"], seq=d["seq"], at=datetime.fromisoformat(d["at"]),
        actor=d["actor"], role=d["role"], source=d["source"], source_ref=d["source_ref"],
        source_row=d["source_row"], field=d["field"], old=d["old"], new=d["new"], reason=d["reason"],
        prev_hash=d["prev_hash"], hash=hash_,
    )


def _as_date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def _json_value(field_: str, value: Any) -> Any:
    if field_.endswith("flags"):
        return sorted(_flags_set(value)) if isinstance(value, str) or value is None else sorted(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if field_ in ("commission_start", "commission_end", "next_action_date") and value is not None:
        return _as_date(value).isoformat()  # type: ignore[union-attr]
    return value


def _tracked(values: Any) -> dict[str, Any]:
    return {f: _json_value(f, values.get(f)) for f in TRACKED_FIELDS}


def _reason(text: str | None) -> str | None:
    """A reason as the history keeps it: free text, so any phone, card or ID number in
    it is masked (the history is append-only and outlives the commission)."""
    return mask_text(text) if text else text


def _contact_field(number: str) -> str:
    return "contact " + mask_number(number)


def _contact_state(relation: str, status: str, do_not_call: bool, source: str) -> dict[str, Any]:
    return {"relation": relation, "status": status, "do_not_call": do_not_call, "source": source}


def _flags_text(flags: Iterable[str]) -> str:
    return ",".join(sorted(set(flags)))


def _flags_set(value: str | None) -> frozenset[str]:
    return frozenset(f for f in (value or "").split(",") if f)


class _GroupMemo:
    """What the units of one SQLite write group read on every decision and may read
    again: each chain's head (seq, hash, keyed_from) as the group's last append left it, and the
    users looked up by name (the SIP gate asks for its agent on every INVITE).

    Correct because a group is one write transaction: from its BEGIN IMMEDIATE to its
    COMMIT SQLite's write lock keeps every other connection and process out, so only
    the group's own units change anything, one at a time, and they keep the memo in
    step: an append records the head it wrote; anything else that could touch these
    tables is a Core statement through the unit's connection shim, which forgets the
    memo before it runs, and a unit rolled back to its savepoint forgets it too. The
    memo dies with its group (the next group starts empty, after other processes may
    have written)."""

    __slots__ = ("heads", "users")

    def __init__(self) -> None:
        self.heads: dict[str, tuple[int, str, int | None]] = {}
        self.users: dict[str, Principal | None] = {}

    def forget(self) -> None:
        self.heads.clear()
        self.users.clear()


class _SyncConnShim:
    """The AsyncConnection surface the repositories use, over a sync Connection.
    `memo`: the write group's, forgotten before any statement goes through here."""

    def __init__(self, conn: Connection, memo: _GroupMemo | None = None) -> None:
        self.sync_connection = conn
        self.dialect = conn.dialect
        self._memo = memo

    def _forget(self) -> None:
        if self._memo is not None:
            self._memo.forget()

    async def execute(self, statement: Any, parameters: Any = None, **kw: Any) -> Any:
        self._forget()
        return self.sync_connection.execute(statement, parameters, **kw)

    async def exec_driver_sql(self, statement: str, parameters: Any = None, **kw: Any) -> Any:
        self._forget()
        return self.sync_connection.exec_driver_sql(statement, parameters, **kw)

    async def scalar(self, statement: Any, parameters: Any = None, **kw: Any) -> Any:
        self._forget()
        return self.sync_connection.scalar(statement, parameters, **kw)

    async def run_sync(self, fn: Any, *args: Any, **kw: Any) -> Any:
        self._forget()
        return fn(self.sync_connection, *args, **kw)

    def begin_nested(self) -> "_NestedShim":
        self._forget()
        return _NestedShim(self.sync_connection)


class _NestedShim:
    """`async with conn.begin_nested():` — a SAVEPOINT on the sync connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.tx: Any = None

    async def __aenter__(self) -> Any:
        self.tx = self.conn.begin_nested()
        return self.tx

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is None:
            self.tx.commit()
        else:
            self.tx.rollback()
        return False


# How long the writer sleeps between tries of BEGIN IMMEDIATE while another process
# holds SQLite's write lock: short at first (another DialGate process's group commit
# holds it for a millisecond or two), then a millisecond, until `busy_timeout_ms`.
_BEGIN_BACKOFF_S = (0.00005, 0.0001, 0.0002, 0.0005)


def begin_immediate(dbapi_conn: sqlite3.Connection, busy_s: float) -> int:
    """BEGIN IMMEDIATE on `dbapi_conn` (whose own busy timeout is 0), waiting for another
    process's write transaction by retrying with short sleeps up to `busy_s`; returns how
    many tries failed. SQLite's own busy handler sleeps 1, 2, 5, 10 … 100 ms between
    tries, so a second process on the same file waited far longer than the lock was
    held (two `dialgate serve` on one database were slower together than one).
    Raises the last `sqlite3.OperationalError` when the lock stays taken."""
    deadline = _monotonic() + busy_s
    tries = 0
    while True:
        try:
            dbapi_conn.execute("BEGIN IMMEDIATE")
            return tries
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if _monotonic() >= deadline:
                raise
        _sleep(_BEGIN_BACKOFF_S[tries] if tries < len(_BEGIN_BACKOFF_S) else 0.001)
        tries += 1


class _WriterFileLock:
    """An exclusive `flock` on `<database>.writer-lock`, held from a write group's BEGIN to
    its COMMIT: DialGate processes writing one SQLite file (`serve --workers N`, a CLI
    command beside a running service) take turns the moment the holder lets go — the
    kernel wakes the waiter — where SQLite's busy handler polls with sleeps and lets the
    process that just committed take the lock again before the other wakes up.

    A wait that outlasts the timeout is abandoned (`abandon`): its thread stays blocked
    in `flock` and lets go as soon as it is granted; meanwhile nobody else in this process
    waits behind it (`try_acquire` says "stuck") so a hung holder costs one thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self.held = False
        self.stuck = False  # an abandoned blocking wait is still in flock()
        self._abandoned = False
        self._mutex = threading.Lock()

    def try_acquire(self) -> bool:
        with self._mutex:
            if self.stuck:
                return False
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            self.held = True
            return True

    def acquire_blocking(self) -> bool:
        """In a worker thread: wait for the lock. False if the wait was abandoned meanwhile."""
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        with self._mutex:
            if self._abandoned:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                self._abandoned = self.stuck = False
                return False
            self.held = True
            return True

    def abandon(self) -> bool:
        """Give up a blocking wait: True if it had not got the lock (it lets go when it
        does); False if it got it just now (the caller holds it and must release it)."""
        with self._mutex:
            if self.held:
                return False
            self._abandoned = self.stuck = True
            return True

    def release(self) -> None:
        with self._mutex:
            if self.held:
                self.held = False
                fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.release()
        if not self.stuck:
            os.close(self.fd)


def open_existing(path: str) -> sqlite3.Connection:
    """A connection to the database file at `path`, which must exist: a plain connect
    would create an empty database there (say, after the data directory was moved away)."""
    return sqlite3.connect(
        Path(path).resolve().as_uri() + "?mode=rw", uri=True, timeout=0, isolation_level=None, check_same_thread=False
    )


class _SqliteWriter:
    """One synchronous pysqlite connection for a file database's write transactions."""

    def __init__(self, path: str, busy_ms: int, sync_mode: str) -> None:
        self.file_lock = _WriterFileLock(path + ".writer-lock")
        self.engine = create_engine(
            f"sqlite+pysqlite:///{path}",
            poolclass=StaticPool,
            connect_args={"check_same_thread": False, "timeout": busy_ms / 1000},
        )

        self.path = path
        self.wal_path = path + "-wal"
        self.wal = False
        self.sync_pragma = sync_mode
        # synchronous=FULL in WAL mode is COMMIT = append the frames + fsync the WAL, all
        # under SQLite's write lock. The writer does the same in two steps: COMMIT with
        # synchronous=NORMAL (frames appended, lock released at once), then fdatasync of
        # the WAL (`sync_wal`) before any member of the group hears "done" — the next
        # group runs its statements during the flush instead of queueing behind it. An
        # answer still comes only once its transaction, and every one before it, is on
        # stable storage (WAL frames are checksummed in order: recovery keeps a prefix).
        self.durable_by_fsync = False

        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
            wal = str(cur.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower() == "wal"
            self.wal = wal
            self.durable_by_fsync = wal and sync_mode == "FULL"
            self.sync_pragma = "NORMAL" if self.durable_by_fsync else sync_mode
            cur.execute(f"PRAGMA synchronous={self.sync_pragma}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA temp_store=MEMORY")  # see `_make_engine`
            if wal:
                cur.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")
            # Inside a write transaction (WAL, the write lock held) nothing waits for
            # the lock; BEGIN IMMEDIATE does its own waiting (`begin_immediate`).
            cur.execute("PRAGMA busy_timeout=0")
            cur.close()

        @event.listens_for(self.engine, "begin")
        def _on_begin(conn: Any) -> None:
            if self._begun:  # `begin_now` ran BEGIN IMMEDIATE on the driver connection already
                self._begun = False
                return
            begin_immediate(conn.connection.dbapi_connection, busy_ms / 1000)

        self.conn: Connection | None = None
        self._begun = False
        # COMMITs run in order on a thread of the writer's own, WAL flushes on another (so
        # the next group's COMMIT need not wait for the last one's flush): handing work to
        # them is a queue put (an executor hand-off cost twice the CPU per group). One
        # flush serves every group committed before it started.
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._flushes: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        # Committed since the last checkpoint; and the checkpointer's stop signal.
        self._dirty = threading.Event()
        self._stopping = threading.Event()

    def run(self, job: Any) -> None:
        """Run `job()` on the writer's commit thread (started on first use); `job` reports
        its own outcome (it must not raise)."""
        self._ensure_threads()
        self._jobs.put(job)

    def _ensure_threads(self) -> None:
        if not self._threads:
            self._threads = [
                threading.Thread(target=self._work, name="dialgate-sqlite-commit", daemon=True),
                threading.Thread(target=self._flush_work, name="dialgate-sqlite-flush", daemon=True),
                threading.Thread(target=self._checkpoint_work, name="dialgate-sqlite-checkpoint", daemon=True),
            ]
            for t in self._threads:
                t.start()

    def flush_then(self, loop: asyncio.AbstractEventLoop, group: "_Group") -> None:
        """After `group`'s COMMIT: settle it on `loop` once the WAL is flushed (failed,
        with the error that stopped the flush). The flush thread calls `_durable` on the
        loop itself, not through a future whose done-callback would (one loop turn
        less before the members wake; no latency difference was measurable at 2,000
        decisions/s, but no future and no lambda per group)."""
        self._ensure_threads()
        self._flushes.put((loop, group))

    def _checkpoint_work(self) -> None:
        """Checkpoint (PASSIVE: never waits for, nor blocks, a writer or a reader) on a
        connection of its own, at most every `CHECKPOINT_EVERY_S` while commits come in.
        A failed checkpoint loses nothing: the pages stay in the WAL for the next one."""
        con: sqlite3.Connection | None = None
        failing = False
        try:
            while True:
                self._dirty.wait()
                if self._stopping.is_set():
                    return
                self._dirty.clear()
                try:
                    if con is None:
                        con = open_existing(self.path)
                        con.execute(f"PRAGMA synchronous={self.sync_pragma}")
                    con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    failing = False
                except sqlite3.Error as exc:
                    if not failing:
                        log.warning("store.checkpoint_failed", error=f"{type(exc).__name__}: {exc}")
                    failing = True
                    if con is not None:
                        con.close()
                        con = None
                if self._stopping.wait(CHECKPOINT_EVERY_S):
                    return
        finally:
            if con is not None:
                con.close()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except BaseException:  # noqa: BLE001 - a job reports its own errors; the thread must live
                pass

    def _flush_work(self) -> None:
        while (first := self._flushes.get()) is not None:
            waiting = [first]
            stop = False
            while True:  # everything committed before this flush starts rides on it
                try:
                    more = self._flushes.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                waiting.append(more)
            error: BaseException | None = None
            try:
                self.sync_wal()
            except BaseException as exc:  # noqa: BLE001 - reported to every group waiting
                error = exc
            for loop, group in waiting:
                try:
                    loop.call_soon_threadsafe(_durable, group, error)
                except RuntimeError:  # its loop is closed: nobody waits any more
                    pass
            if stop:
                return

    def begin_now(self) -> Any:
        """BEGIN IMMEDIATE right here (on the event loop's thread) when nothing can make it
        wait: the connection is open and SQLite's write lock is free (this connection's
        busy timeout is 0, so a taken lock answers at once). None when the lock is taken
        or the connection needs opening: then `begin` in a worker thread. Saves a thread
        hand-off per write group, which cost more CPU than the BEGIN itself."""
        conn = self.conn
        if conn is None or conn.invalidated or conn.closed or conn.in_transaction():
            return None
        raw = conn.connection.dbapi_connection
        try:
            raw.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                return None
            raise
        self._begun = True
        try:
            return conn.begin()
        finally:
            self._begun = False

    def begin(self) -> Any:
        if self.conn is None or self.conn.invalidated or self.conn.closed:
            self.conn = self.engine.connect()
        if self.conn.in_transaction():
            # Left open by a caller cancelled mid-begin (see `abandon`); the write lock
            # means nobody else is using it.
            self.conn.rollback()
        return self.conn.begin()

    def commit(self, trans: Any) -> None:
        """COMMIT the group's transaction (on the commit thread), then let the other processes in."""
        try:
            trans.commit()
        finally:
            self.file_lock.release()
        if self.wal:
            self._dirty.set()  # the checkpointer has pages to copy back

    def rollback(self, trans: Any) -> None:
        try:
            trans.rollback()
        finally:
            self.file_lock.release()

    def sync_wal(self) -> None:
        """Flush the WAL to stable storage (`durable_by_fsync`): every frame written so far."""
        fd = os.open(self.wal_path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def abandon(self) -> None:
        """Roll back whatever transaction is open: its caller was cancelled."""
        try:
            if self.conn is not None and not self.conn.closed and self.conn.in_transaction():
                self.conn.rollback()
        except (SQLAlchemyError, OSError):
            self.reset()
        finally:
            self.file_lock.release()

    def reset(self) -> None:
        """After a failure that left the connection unusable: start over."""
        try:
            if self.conn is not None:
                self.conn.invalidate()
                self.conn.close()
        except (SQLAlchemyError, OSError):
            pass
        finally:
            self.file_lock.release()
        self.conn = None
        self.engine.dispose()

    def close(self) -> None:
        if self._threads:
            self._jobs.put(None)
            self._threads[0].join(timeout=30)
            self._flushes.put(None)
            self._threads[1].join(timeout=30)
            self._stopping.set()
            self._dirty.set()
            self._threads[2].join(timeout=30)
            self._threads = []
            self._stopping.clear()
        try:
            if self.conn is not None:
                self.conn.close()
        finally:
            self.conn = None
            self.engine.dispose()
            self.file_lock.close()


async def _shielded(coro: Any) -> Any:
    """Run `coro` to its end even if the caller is cancelled (a group's COMMIT belongs to
    every member, not only to the one that happens to run it); then re-raise."""
    return await _wait_out(asyncio.ensure_future(coro))


def _resolve(fut: "asyncio.Future[None]", exc: BaseException | None) -> None:
    if not fut.done():
        if exc is None:
            fut.set_result(None)
        else:
            fut.set_exception(exc)


def _durable(group: "_Group", exc: BaseException | None) -> None:
    """The group's WAL flush is over: it is durable, or its members are told the store
    failed (the rows may be there after all: failing closed only ever over-counts)."""
    if exc is not None and group.error is None:
        group.error = StoreUnavailable(f"the commit could not be flushed to disk: {type(exc).__name__}: {exc}")
    group.settle()


async def _wait_out(fut: "asyncio.Future[Any]") -> Any:
    """`await fut` to its end even if we are cancelled meanwhile, then re-raise that
    cancellation (unless `fut` failed: its error goes up instead)."""
    cancelled = None
    while not fut.done():
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError as exc:
            cancelled = exc
    if cancelled is not None and not fut.cancelled() and fut.exception() is None:
        raise cancelled
    return fut.result()


async def _in_thread(fn: Any) -> Any:
    """Run `fn` in a worker thread; if we are cancelled, still wait for it to finish
    (the SQLite connection must not be left mid-statement), then re-raise."""
    return await _shielded(asyncio.to_thread(fn))


class _Group:
    """One SQLite write transaction shared by the units of work queued together."""

    __slots__ = ("trans", "members", "closed", "done", "error", "_waiters", "commit_soon", "memo")

    def __init__(self, trans: Any) -> None:
        self.trans = trans
        self.memo = _GroupMemo()
        self.members = 0
        self.commit_soon = False  # `_commit_at_turn_end` is scheduled
        self.closed = False  # its transaction is committed, rolled back or being committed
        self.done = False  # settled: members may go (after the WAL flush when there is one)
        self.error: StoreUnavailable | None = None
        self._waiters: list[asyncio.Future[None]] = []

    def check(self) -> None:
        if self.error is not None:
            raise StoreUnavailable(str(self.error)) from self.error

    def settle(self) -> None:
        """The group is committed, rolled back or failed: wake the members waiting for it."""
        self.closed = self.done = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():  # a cancelled member's waiter is done already
                waiter.set_result(None)

    async def settled(self) -> None:
        """Wait until the group is settled — also when cancelled meanwhile (then re-raise):
        the caller's unit is in the group's transaction either way.

        Each member waits on a future of its own, so cancelling one cancels nobody
        else's wait; one shared future would need `asyncio.shield` per member, which
        cost ~3 µs a decision (an extra future, two callbacks and a loop iteration)."""
        if self.done:
            return
        cancelled: asyncio.CancelledError | None = None
        loop = asyncio.get_running_loop()
        while not self.done:
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError as exc:
                cancelled = exc
        if cancelled is not None:
            raise cancelled


class SqlAlchemyCaseStore:
    """The `CaseStore` port over SQLAlchemy Core. Use as `async with store:`."""

    def __init__(self, config: StoreConfig, *, events: bool = True, evidence: EvidenceKey | None = None) -> None:
        """`events`: keep what units of work put in the outbox. False when no event bus
        is configured: nothing would ever read (or prune) those rows, and writing them
        is a tenth of a dial's cost. `evidence`: the key the decision log is chained
        with (`dialer.evidence.load_key`); without one, a key that lives as long as
        this object (what it chains cannot be verified by another process)."""
        self.config = config
        self.events = events
        self.evidence = evidence or EvidenceKey.ephemeral()
        self.url = config.url
        self.is_sqlite = config.is_sqlite
        self.is_postgres = config.is_postgres
        self._engine: AsyncEngine | None = None
        self._write_lock = asyncio.Lock()
        self.timeout = config.timeout_s
        self._memory = self.url in ("sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:")
        self._writer: _SqliteWriter | None = None
        self._group: _Group | None = None
        self._lock_waiting = 0
        self._finishers: set[asyncio.Task[Any]] = set()

    # -- lifecycle -------------------------------------------------------------------
    async def __aenter__(self) -> "SqlAlchemyCaseStore":
        self._engine = self._make_engine()
        if self.is_sqlite and not self._memory:
            cfg = self.config
            self._writer = _SqliteWriter(
                self.url.split(":///", 1)[1], cfg.busy_timeout_ms, cfg.sqlite_synchronous.upper()
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            await asyncio.to_thread(self._writer.close)
            self._writer = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    @property
    def serialised_writes(self) -> bool:
        """SQLite: every write transaction runs alone (BEGIN IMMEDIATE), so a use case
        may decide which case it is about inside its write."""
        return self.is_sqlite

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("store not opened: use `async with store:`")
        return self._engine

    def _make_engine(self) -> AsyncEngine:
        cfg = self.config
        if self.is_sqlite:
            memory = self.url in ("sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:")
            if not memory:
                _private_database_file(self.url.split(":///", 1)[1].split("?", 1)[0])
            kwargs: dict[str, Any] = {"connect_args": {"timeout": cfg.busy_timeout_ms / 1000}}
            if memory:
                kwargs["poolclass"] = StaticPool
            else:
                kwargs["pool_size"] = 8
                kwargs["max_overflow"] = 8
            engine = create_async_engine(self.url, **kwargs)
            sync_engine = engine.sync_engine
            busy, sync_mode = cfg.busy_timeout_ms, cfg.sqlite_synchronous.upper()

            @event.listens_for(sync_engine, "connect")
            def _on_connect(dbapi_conn: Any, _record: Any) -> None:
                # Disable the driver's implicit BEGIN; we emit our own in "begin".
                dbapi_conn.isolation_level = None
                cur = dbapi_conn.cursor()
                if not memory:
                    cur.execute("PRAGMA journal_mode=WAL")
                cur.execute(f"PRAGMA busy_timeout={int(busy)}")
                cur.execute(f"PRAGMA synchronous={sync_mode}")
                cur.execute("PRAGMA foreign_keys=ON")
                # Statement journals (a statement inside a SAVEPOINT that changes several
                # rows or indexes) and sorts without an index use temporary storage, by
                # default a file created and unlinked in /var/tmp each time: five system
                # calls and a directory update, ~170 times a second at 1,000 dials/s.
                cur.execute("PRAGMA temp_store=MEMORY")
                cur.close()

            @event.listens_for(sync_engine, "begin")
            def _on_begin(conn: Any) -> None:
                mode = conn.get_execution_options().get("dialgate_begin", "DEFERRED")
                conn.exec_driver_sql(f"BEGIN {mode}")

            return engine
        return create_async_engine(
            self.url,
            pool_size=cfg.pool_size,
            max_overflow=cfg.pool_size,
            pool_timeout=cfg.timeout_s,
            pool_pre_ping=True,
            connect_args={"timeout": cfg.timeout_s, "command_timeout": cfg.timeout_s * 2},
        )

    # -- units of work ---------------------------------------------------------------
    def write(self, lock_keys: Sequence[str] = ()) -> AbstractAsyncContextManager["SqlUnitOfWork"]:
        """A serialised write transaction (see the module docstring). The SQLite
        writer's group commit is handed out as it is, not wrapped in one more context
        manager: that layer cost ~2 µs of CPU per decision (measured)."""
        if self.is_sqlite and self._writer is not None:
            return self._sqlite_write()
        return self._other_write(lock_keys)

    @asynccontextmanager
    async def _other_write(self, lock_keys: Sequence[str]) -> AsyncIterator["SqlUnitOfWork"]:
        if self.is_sqlite:
            await self._acquire_write_lock()
            try:
                async with self._transaction("IMMEDIATE", ()) as uow:
                    yield uow
            finally:
                self._write_lock.release()
        else:
            async with self._transaction(None, lock_keys) as uow:
                yield uow

    async def _acquire_write_lock(self) -> None:
        lock = self._write_lock
        if not lock.locked() and not self._lock_waiting:  # free, nobody queued: taken at once, no time-out to arm
            await lock.acquire()
            return
        self._lock_waiting += 1
        try:
            async with asyncio.timeout(self.timeout):
                await self._write_lock.acquire()
        except TimeoutError as exc:
            raise StoreUnavailable("timed out waiting for the store's write lock") from exc
        finally:
            self._lock_waiting -= 1

    @asynccontextmanager
    async def _sqlite_write(self) -> AsyncIterator["SqlUnitOfWork"]:
        """Group commit: units of work that queue while one runs join its transaction.

        Each unit of work still runs alone (the write lock) and inside its own SAVEPOINT
        (all but the group's first), so a failing one undoes only itself. When a unit
        finishes and nobody else is queued, the group commits at once; otherwise it
        queues behind them and the first member back commits everybody. No member's
        `write()` returns before the group's COMMIT (one fsync for the group) is done,
        and if that COMMIT fails every member gets `StoreUnavailable` (fail closed).
        """
        writer = self._writer
        assert writer is not None
        await self._acquire_write_lock()
        group: _Group | None = None
        joined = committed_here = False
        try:
            if self._group is None:
                await self._take_file_lock(writer.file_lock)
                try:
                    trans = writer.begin_now()
                    if trans is None:
                        trans = await _in_thread(writer.begin)
                except asyncio.CancelledError:
                    # The thread finished BEGIN IMMEDIATE before `_in_thread` re-raised: the
                    # transaction (and SQLite's write lock) is ours to roll back.
                    writer.abandon()
                    raise
                except (sqlite3.Error, SQLAlchemyError, OSError) as exc:
                    writer.reset()
                    raise StoreUnavailable(f"cannot open a write transaction: {type(exc).__name__}: {exc}") from exc
                except BaseException:
                    writer.abandon()
                    raise
                self._group = _Group(trans)
            group = self._group
            assert writer.conn is not None
            try:
                # Raw SAVEPOINT on the driver connection: SQLAlchemy's begin_nested costs
                # more than the unit's statements (profiled); the name is ours alone.
                savepoint = writer.conn.connection.dbapi_connection if group.members else None
                if savepoint is not None:
                    savepoint.execute("SAVEPOINT dialgate_unit")
            except (sqlite3.Error, SQLAlchemyError, OSError) as exc:
                self._abort_group(group, exc)
                raise StoreUnavailable(f"store error: {type(exc).__name__}: {exc}") from exc
            uow = SqlUnitOfWork(
                _SyncConnShim(writer.conn, group.memo), False,  # type: ignore[arg-type]
                raw=writer.conn.connection.dbapi_connection, events=self.events, memo=group.memo,
                evidence=self.evidence,
            )
            try:
                yield uow
                if savepoint is not None:
                    savepoint.execute("RELEASE dialgate_unit")
            except BaseException as exc:
                group.memo.forget()  # the unit's writes are undone; what it memoised may be wrong
                try:
                    if savepoint is not None:
                        savepoint.execute("ROLLBACK TO dialgate_unit")
                        savepoint.execute("RELEASE dialgate_unit")
                    else:  # the group's first unit: nothing else to keep
                        self._abort_group(group, exc)
                except (sqlite3.Error, SQLAlchemyError, OSError):
                    self._abort_group(group, exc)
                if isinstance(exc, (sqlite3.Error, SQLAlchemyError, OSError)):
                    raise _store_error(exc) from exc
                raise
            group.members += 1
            joined = True
            if not self._lock_waiting:
                if writer.wal:
                    # Units that run later in this turn of the event loop join the group;
                    # it commits when the turn is over (`_commit_at_turn_end`).
                    if not group.commit_soon:
                        group.commit_soon = True
                        asyncio.get_running_loop().call_soon(self._commit_at_turn_end, group)
                else:
                    await self._finish_group(group)  # waits its COMMIT out even if we are cancelled
                committed_here = True
        finally:
            if group is not None and not group.closed and not joined:
                # A failed unit: commit the members before it once the queue has run.
                if self._lock_waiting:
                    task = asyncio.ensure_future(self._finish_group_locked(group))
                    self._finishers.add(task)
                    task.add_done_callback(self._finishers.discard)
                else:
                    await _shielded(self._finish_group(group))
            self._write_lock.release()
        # Others were queued: they joined this group. Its first member queues once more for
        # the lock and, back at the head, commits everybody; the others only wait for that.
        if not committed_here and group.members == 1:
            await _shielded(self._finish_group_locked(group))
        await group.settled()  # committed, and on stable storage
        group.check()

    async def _take_file_lock(self, lock: _WriterFileLock) -> None:
        """The cross-process writer lock for a new group (see `_WriterFileLock`): at once
        when free; else waited for in a worker thread, for at most `[store] timeout_s`."""
        if lock.try_acquire():
            return
        if lock.stuck:
            raise StoreUnavailable("another process has held the database's write lock too long")
        waiting = asyncio.get_running_loop().run_in_executor(None, lock.acquire_blocking)
        try:
            async with asyncio.timeout(self.timeout):
                got = await asyncio.shield(waiting)
        except TimeoutError as exc:
            if lock.abandon():
                raise StoreUnavailable("timed out waiting for another process's write transaction") from exc
            return  # granted just as the time ran out: ours
        except asyncio.CancelledError:
            if not lock.abandon():
                lock.release()  # granted just as we were cancelled
            raise
        if not got:  # an earlier abandoned wait took and let go of the lock: we do not hold it
            raise StoreUnavailable("the database's write lock was given up")

    async def _finish_group_locked(self, group: "_Group") -> None:
        if group.closed:
            return
        self._lock_waiting += 1
        try:
            await self._write_lock.acquire()
        finally:
            self._lock_waiting -= 1
        try:
            await self._finish_group(group)
        finally:
            self._write_lock.release()

    async def _finish_group(self, group: "_Group") -> None:
        """COMMIT (or roll back an empty) group; the write lock is held."""
        if group.closed:
            return
        writer = self._writer
        assert writer is not None
        if self._close_empty(group, writer):
            return
        loop = asyncio.get_running_loop()
        flush = writer.durable_by_fsync
        committed: asyncio.Future[None] = loop.create_future()

        def work() -> None:  # on the writer's thread: COMMIT, queue the WAL flush, say so
            try:
                writer.commit(group.trans)
            except BaseException as exc:  # noqa: BLE001 - reported to the awaiting side
                loop.call_soon_threadsafe(_resolve, committed, exc)
                return
            if flush:
                writer.flush_then(loop, group)  # settles the group when the WAL is on disk
            loop.call_soon_threadsafe(_resolve, committed, None)

        try:
            writer.run(work)
            await _wait_out(committed)
        except (SQLAlchemyError, OSError, RuntimeError) as exc:
            # SQLite may keep the transaction open after a failed COMMIT while SQLAlchemy
            # considers it over: start from a fresh connection (this drops the transaction).
            writer.reset()
            group.error = StoreUnavailable(f"commit failed: {type(exc).__name__}: {exc}")
            group.settle()
            return
        except asyncio.CancelledError:
            if not flush:  # committed: the group goes on (the flush thread settles it otherwise)
                group.settle()
            raise
        except BaseException:
            writer.abandon()
            group.error = StoreUnavailable("commit interrupted")
            group.settle()
            raise
        # Committed; the write lock is released by our caller as we return, and the group
        # settles when the WAL flush is done (at once when there is none to do).
        if not flush:
            group.settle()

    def _close_empty(self, group: "_Group", writer: _SqliteWriter) -> bool:
        """Close `group` to new members; an empty one is rolled back and settled here
        (True). False: it has members, and the caller commits them."""
        group.closed = True
        if self._group is group:
            self._group = None
        if group.members:
            return False
        try:
            writer.rollback(group.trans)
        except (SQLAlchemyError, OSError):
            writer.reset()
        group.settle()
        return True

    def _commit_at_turn_end(self, group: "_Group") -> None:
        """COMMIT `group` right here on the event loop, once the units that ran in the
        same turn of the loop have joined it.

        In WAL mode a COMMIT only appends the group's pages to the WAL: no fsync (that is
        the flush thread's, `durable_by_fsync`) and no checkpoint (the checkpointer
        thread's). Handing it to the commit thread cost more than doing it: a thread
        wake-up, the GIL changing hands twice and another wake-up of the loop to hear
        "committed" — at 1,000 dials/s in groups of one or two, ~0.2 ms of CPU per dial
        (measured, in-process: 0.86-0.96 → 0.70-0.87 ms a dial). Groups still form under load:
        every unit that becomes ready before the turn ends is in this COMMIT.

        If a unit holds the write lock now (it awaited something real mid-unit), the
        group commits once that unit and any queued behind it are done: a finisher queues
        for the lock (`_finish_group_locked`). Waiting for the unit to schedule the commit
        again is not enough: with others queued it leaves the commit to them, and they may
        all be cancelled before their turn."""
        group.commit_soon = False
        if group.closed:
            return
        if self._write_lock.locked():
            task = asyncio.ensure_future(self._finish_group_locked(group))
            self._finishers.add(task)
            task.add_done_callback(self._finishers.discard)
            return
        writer = self._writer
        if writer is None:  # the store closed meanwhile
            group.error = StoreUnavailable("the store closed before the commit")
            group.settle()
            return
        try:
            if self._close_empty(group, writer):
                return
            writer.commit(group.trans)
            if not writer.durable_by_fsync:
                group.settle()
                return
            writer.flush_then(asyncio.get_running_loop(), group)
        except Exception as exc:  # noqa: BLE001 - a loop callback: unsettled, its members would wait forever
            # As in `_finish_group`: start from a fresh connection (this drops the transaction).
            writer.reset()
            if group.error is None:
                group.error = StoreUnavailable(f"commit failed: {type(exc).__name__}: {exc}")
            group.settle()

    def _abort_group(self, group: "_Group", exc: BaseException) -> None:
        """Roll the whole group back (its transaction is unusable or has only the failed unit)."""
        writer = self._writer
        assert writer is not None
        if self._group is group:
            self._group = None
        if group.closed:
            return
        group.closed = True
        if group.members:
            group.error = StoreUnavailable(f"store error in a grouped write: {type(exc).__name__}: {exc}")
        group.settle()
        try:
            writer.rollback(group.trans)
        except (SQLAlchemyError, OSError):
            writer.reset()

    @asynccontextmanager
    async def read(self) -> AsyncIterator["SqlUnitOfWork"]:
        async with self._transaction("DEFERRED" if self.is_sqlite else None, ()) as uow:
            yield uow

    @asynccontextmanager
    async def _transaction(self, begin: str | None, lock_keys: Sequence[str]) -> AsyncIterator["SqlUnitOfWork"]:
        try:
            conn = await self.engine.connect()
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"cannot connect to the store: {type(exc).__name__}") from exc
        try:
            if begin is not None:
                await conn.execution_options(dialgate_begin=begin)
            try:
                trans = await conn.begin()
                if self.is_postgres:
                    ms = int(self.timeout * 1000)
                    await conn.exec_driver_sql(f"SET LOCAL lock_timeout = {ms}")
                    for key in sorted(set(lock_keys)):
                        await conn.execute(
                            text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key}
                        )
            except (SQLAlchemyError, OSError, TimeoutError) as exc:
                raise StoreUnavailable(f"cannot open a transaction: {type(exc).__name__}: {exc}") from exc
            uow = SqlUnitOfWork(conn, self.is_postgres, events=self.events, evidence=self.evidence)
            try:
                yield uow
            except BaseException:
                try:
                    await trans.rollback()
                except (SQLAlchemyError, OSError):
                    pass
                raise
            try:
                await trans.commit()
            except (SQLAlchemyError, OSError, TimeoutError) as exc:
                raise StoreUnavailable(f"commit failed: {type(exc).__name__}: {exc}") from exc
        except (SQLAlchemyError, OSError) as exc:
            raise _store_error(exc) from exc
        finally:
            try:
                await conn.close()
            except (SQLAlchemyError, OSError):
                pass

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"store unreachable: {type(exc).__name__}") from exc


def _private_database_file(path: str) -> None:
    """Create the SQLite file readable by its owner only (0600), like the key files, before
    SQLite opens it: SQLite gives its -wal and -shm files the database file's mode, and
    would create the database under the umask (world-readable, usually). An existing file
    that others can read is tightened, with a warning."""
    db = Path(path)
    if not db.parent.exists():
        db.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(db, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for f in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        try:
            mode = f.stat().st_mode & 0o777
        except FileNotFoundError:
            continue
        if mode & 0o077:
            try:
                os.chmod(f, 0o600)
            except PermissionError:
                continue  # not ours to change: left as it is
            log.warning("store.file_tightened", file=str(f), was=oct(mode))


def _store_error(exc: BaseException) -> Exception:
    """What a failed statement means to the caller. A value the driver could not bind
    (an out-of-range date or integer) or the database refused as data says nothing
    about the store's health: it must not answer 503 "store unavailable" and page
    on-call; everything else from the driver or the connection does."""
    if isinstance(exc, DataError) or (isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)):
        return StoreRefusedValue(f"a value was refused by the store: {type(exc.orig or exc).__name__}")
    return StoreUnavailable(f"store error: {type(exc).__name__}: {exc}")


class SqlUnitOfWork:
    """`raw`: the pysqlite connection under `conn` when this unit runs on the SQLite
    writer; the decide-and-reserve statements then bypass SQLAlchemy (`sqlite_hot`)."""

    def __init__(
        self, conn: AsyncConnection, is_postgres: bool, raw: sqlite3.Connection | None = None, *, events: bool = True,
        memo: _GroupMemo | None = None, evidence: EvidenceKey | None = None,
    ) -> None:
        self.conn = conn
        self.cases = SqlCaseRepository(conn, raw, evidence)
        self.attempts = SqlAttemptRepository(conn, raw)
        self.decisions = SqlDecisionLog(conn, is_postgres, raw, memo, evidence)
        self.outbox = SqlOutbox(conn, raw, keep=events)
        self.users = SqlUserRepository(conn, raw, memo)
        self.audit = SqlAuditLog(conn)
        self.imports = SqlImportJobRepository(conn, is_postgres)


# ---------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------
def _contact_record(c: Any) -> ContactRecord:
    return ContactRecord(
        number=c["number"],
        relation=c["relation"],
        name=c["name"],
        tz=c["tz"],
        status=c["status"],
        do_not_call=bool(c["do_not_call"]),
        source=c["source"],
        added_at=c["added_at"],
    )


def _case_records(rows: Sequence[Any], by_case: dict[int, list[ContactRecord]]) -> list[CaseRecord]:
    return [
        CaseRecord(
            pk=r["id"],
            creditor=r["creditor"],
            case_id=r["case_id"],
            debtor_name=r["debtor_name"],
            status=r["status"],
            commission_start=r["commission_start"],
            commission_end=r["commission_end"],
            assigned_agent=r["assigned_agent"],
            flags=_flags_set(r["flags"]),
            amount_due=r["amount_due"],
            overdue_days=r["overdue_days"],
            follow_up_status=r["follow_up_status"],
            next_action_date=r["next_action_date"],
            event_seq=r["event_seq"],
            contacts=tuple(by_case.get(r["id"], ())),
            updated_at=r["updated_at"],
            creditor_flags=_flags_set(r["creditor_flags"]),
            agency_flags=_flags_set(r["agency_flags"]),
            status_hold=r["status_hold"],
            history_seq=r["history_seq"],
        )
        for r in rows
    ]


class SqlCaseRepository:
    def __init__(
        self, conn: AsyncConnection, raw: sqlite3.Connection | None = None, evidence: EvidenceKey | None = None
    ) -> None:
        self.conn = conn
        self.raw = raw
        self.evidence = evidence or _NO_KEY  # chains the case history
        self._creditors: set[str] = set()  # known to exist in this transaction

    async def _load(self, where: Any, params: dict[str, Any] | None = None) -> list[CaseRecord]:
        query = where if params is not None else select(t.cases).where(where).order_by(t.cases.c.id)
        rows = (await self.conn.execute(query, params)).mappings().all()
        if not rows:
            return []
        pks = [r["id"] for r in rows]
        crow = (await self.conn.execute(Q_CONTACTS_OF, {"pks": pks})).mappings().all()
        by_case: dict[int, list[ContactRecord]] = {}
        for c in crow:
            by_case.setdefault(c["case_pk"], []).append(_contact_record(c))
        return _case_records(rows, by_case)

    def _find_raw(self, raw: sqlite3.Connection, case_id: str, creditors: frozenset[str] | None) -> list[CaseRecord]:
        return self._load_raw(raw, hot.CASES_BY_ID, (case_id,), creditors)

    def _load_raw(
        self, raw: sqlite3.Connection, sql: str, params: tuple[Any, ...], creditors: frozenset[str] | None
    ) -> list[CaseRecord]:
        # Records straight from the row tuples (columns in hot.CASE_KEYS and
        # hot.CONTACT_KEYS order), no mapping per row.
        py_time = hot.py_time
        out = []
        for r in raw.execute(sql, params).fetchall():
            if creditors is not None and r[1] not in creditors:
                continue
            contacts = tuple(
                ContactRecord(c[1], c[2], c[3], c[4], c[5], bool(c[6]), c[7], py_time(c[8]))
                for c in raw.execute(hot.CONTACTS_OF_ONE, (r[0],))
            )
            out.append(self._case_from_row(r, contacts))
        return out

    def _load_joined_raw(self, raw: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[CaseRecord]:
        """Cases from one statement that returns a row per contact (hot.CASE_KEYS then
        hot.CONTACT_KEYS columns, then the contact's id): one statement instead of one
        for the cases and one per case for their contacts. Ordered here by case, then
        contact id (the Core path's order), as the statement does not sort."""
        py_time = hot.py_time
        k = len(hot.CASE_KEYS)  # the contact's columns follow the case's
        out: list[CaseRecord] = []
        case: Any = None
        contacts: list[ContactRecord] = []
        rows = raw.execute(sql, params).fetchall()
        if len(rows) > 1:
            cid = hot.CONTACT_ID
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
        py_date = hot.py_date
        return CaseRecord(
            pk=r[0], creditor=r[1], case_id=r[2], debtor_name=r[3], status=r[4],
            commission_start=py_date(r[5]), commission_end=py_date(r[6]), assigned_agent=r[7],
            flags=_flags_set(r[8]), amount_due=r[9], overdue_days=r[10], follow_up_status=r[11],
            next_action_date=py_date(r[12]), event_seq=r[13], contacts=contacts, updated_at=hot.py_time(r[14]),
            creditor_flags=_flags_set(r[15]), agency_flags=_flags_set(r[16]), status_hold=r[17], history_seq=r[18],
        )

    async def find(self, case_id: str, creditors: frozenset[str] | None) -> list[CaseRecord]:
        if self.raw is not None:
            return self._find_raw(self.raw, case_id, creditors)
        if creditors is None:
            return await self._load(Q_CASES_BY_ID, {"case_id": case_id})
        if not creditors:
            return []
        return await self._load(Q_CASES_BY_ID_SCOPED, {"case_id": case_id, "creditors": sorted(creditors)})

    async def get(self, creditor: str, case_id: str) -> CaseRecord | None:
        found = await self._load(Q_CASE_BY_KEY, {"creditor": creditor, "case_id": case_id})
        return found[0] if found else None

    async def ensure_creditor(self, creditor: str) -> None:
        if creditor in self._creditors:  # an import's rows name the same few creditors
            return
        self._creditors.add(creditor)
        exists = (await self.conn.execute(Q_CREDITOR, {"creditor": creditor})).first()
        if exists is None:
            await self.conn.execute(
                insert(t.creditors).values(id=creditor, name=creditor, created_at=datetime.now(timezone.utc))
            )

    async def _locked_row(self, pk: int | None = None, creditor: str = "", case_id: str = "") -> Any:
        """The case row (by pk, or by creditor and case id), locked against a concurrent
        change on PostgreSQL (its history head is read here and written back); SQLite
        has one writer at a time."""
        if pk is not None:
            res = await self.conn.execute(Q_CASE_BY_PK_LOCKED, {"pk": pk})
        else:
            res = await self.conn.execute(Q_CASE_BY_KEY_LOCKED, {"creditor": creditor, "case_id": case_id})
        return res.mappings().first()

    async def _append_history(
        self, row: Any, changes: Sequence[tuple[Any, ...]], source: ChangeSource, now: datetime,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Append one entry per (field, old, new[, reason]) after the case's history head;
        returns the head columns to write back with the change (same transaction)."""
        seq, prev = int(row["history_seq"]), row["history_hash"]
        rows = []
        default_reason = reason if reason is not None else source.reason
        for change in changes:
            field_, old, new = change[:3]
            why = change[3] if len(change) > 3 else default_reason
            seq += 1
            entry, record = link_history(
                HistoryEntry(
                    creditor=row["creditor"], case_id=row["case_id"], seq=seq, at=now, actor=source.actor,
                    role=source.role, source=source.kind, source_ref=source.ref, source_row=source.row,
                    field=field_, old=old, new=new, reason=_reason(why),
                ),
                prev, self.evidence,
            )
            rows.append(dict(
                case_pk=row["id"], creditor=entry.creditor, case_id=entry.case_id, seq=seq, at=now,
                actor=entry.actor, role=entry.role, source=entry.source, source_ref=entry.source_ref,
                source_row=entry.source_row, field=field_, record=record, prev_hash=prev, hash=entry.hash,
            ))
            prev = entry.hash
        if rows:
            await self.conn.execute(I_HISTORY, rows)
        return {"history_seq": seq, "history_hash": prev}

    async def upsert(
        self, case: CaseInput, now: datetime, *, source: ChangeSource | None = None
    ) -> tuple[CaseRecord, bool]:
        """Apply a case file's row. What the creditor supplies (status, dates, amounts, the
        bank's own flags and numbers) replaces what the last file said; what the agency
        learned (flags set by outcomes or people, do-not-call and invalid marks, numbers
        added after verification) stays; a status held by a repayment closure, a pause or
        a withdrawal is reopened only by an explicit `reopen` with its reason. Every
        change is a history entry naming `source` (default: an import, row unknown)."""
        src = source or UNKNOWN_IMPORT
        await self.ensure_creditor(case.creditor)
        row = await self._locked_row(creditor=case.creditor, case_id=case.case_id)
        bank_flags = frozenset(case.flags)
        if row is None:
            if case.status == "paused":
                follow, next_date = "paused", None
            elif case.status in CLOSED_STATUSES:
                follow, next_date = "closed", None
            else:  # 首催2天内: the first call is due within two days of assignment
                follow, next_date = "new", now.date() + timedelta(days=FIRST_CALL_DAYS)
            values = dict(
                debtor_name=case.debtor_name, status=case.status, commission_start=case.commission_start,
                commission_end=case.commission_end, assigned_agent=case.assigned_agent,
                flags=_flags_text(bank_flags), creditor_flags=_flags_text(bank_flags), agency_flags="",
                status_hold=None, amount_due=case.amount_due, overdue_days=case.overdue_days,
                follow_up_status=follow, next_action_date=next_date,
            )
            created_entry = {k: v for k, v in _tracked(values).items() if k != "debtor_name"}
            created_entry["contacts"] = [
                {"number": mask_number(c.number), "relation": c.relation, "source": c.source} for c in case.contacts
            ]
            entry, record = link_history(
                HistoryEntry(
                    creditor=case.creditor, case_id=case.case_id, seq=1, at=now, actor=src.actor, role=src.role,
                    source=src.kind, source_ref=src.ref, source_row=src.row, field="case", old=None,
                    new=created_entry, reason=_reason(src.reason),
                ),
                GENESIS_HASH, self.evidence,
            )
            res = await self.conn.execute(I_CASE, dict(
                creditor=case.creditor, case_id=case.case_id, event_seq=0, created_at=now, updated_at=now,
                history_seq=1, history_hash=entry.hash, first_call_alerted_at=None, **values,
            ))
            pk = res.inserted_primary_key[0]
            await self.conn.execute(I_HISTORY, dict(
                case_pk=pk, creditor=case.creditor, case_id=case.case_id, seq=1, at=now, actor=src.actor,
                role=src.role, source=src.kind, source_ref=src.ref, source_row=src.row, field="case",
                record=record, prev_hash=GENESIS_HASH, hash=entry.hash,
            ))
            if case.contacts:
                await self.conn.execute(I_CONTACT, [dict(
                    case_pk=pk, number=c.number, relation=c.relation, name=c.name, tz=c.tz, status=c.status,
                    do_not_call=c.do_not_call, source=c.source, added_at=now,
                ) for c in case.contacts])
            rec = await self.get(case.creditor, case.case_id)
            assert rec is not None
            return rec, True

        pk = row["id"]
        agency = _flags_set(row["agency_flags"])
        hold = row["status_hold"]
        status = case.status
        reason = src.reason
        changes: list[tuple[Any, ...]] = []
        if hold is not None and case.reopen:
            hold, reason = None, case.reopen
        elif hold is not None and case.status == "active" and row["status"] != "active":
            # A stale file still saying "active" after a repayment closure, a pause or a
            # withdrawal: kept, and the refusal is on the record.
            status = row["status"]
            changes.append(("status", row["status"], row["status"],
                            f"file says active; held by {hold}: reopening needs an explicit reopen with a reason"))
        follow, next_date = row["follow_up_status"], _as_date(row["next_action_date"])
        if status == "paused":
            follow, next_date = "paused", None
        elif status in CLOSED_STATUSES:
            follow, next_date = "closed", None
        elif follow in ("paused", "closed"):
            follow, next_date = "waiting", now.date()
        elif follow == "new" and case.assigned_agent != row["assigned_agent"]:
            # Reassigned before its first call: the new agent's two days start now.
            next_date = now.date() + timedelta(days=FIRST_CALL_DAYS)
        end = case.commission_end
        extended = _as_date(row["commission_extended_to"])
        if extended is not None and (end is None or end < extended):
            # The creditor's extension, made through the API, outlasts a file that
            # predates it; a file with a later end supersedes it.
            if _as_date(row["commission_end"]) == extended:
                changes.append(("commission_end", extended.isoformat(), extended.isoformat(),
                                f"file says {end}; kept the extension to {extended}"))
            end = extended
        values = dict(
            debtor_name=case.debtor_name, status=status, commission_start=case.commission_start,
            commission_end=end, assigned_agent=case.assigned_agent,
            flags=_flags_text(bank_flags | agency), creditor_flags=_flags_text(bank_flags),
            agency_flags=_flags_text(agency), status_hold=hold, amount_due=case.amount_due,
            overdue_days=case.overdue_days, follow_up_status=follow, next_action_date=next_date,
        )
        old, new = _tracked(row), _tracked(values)
        changes.extend((f, old[f], new[f]) for f in TRACKED_FIELDS if old[f] != new[f])
        if follow == "new" and next_date != _as_date(row["next_action_date"]):
            values["first_call_alerted_at"] = None  # a new deadline: alert again if it is missed
        changes.extend(await self._apply_contacts(pk, case.contacts, now))
        if changes:
            values.update(await self._append_history(row, changes, src, now, reason))
        values["updated_at"] = now
        await self.conn.execute(U_CASE, {"_pk": pk, **values})
        rec = await self.get(case.creditor, case.case_id)
        assert rec is not None
        return rec, False

    async def _apply_contacts(
        self, pk: int, contacts: Sequence[ContactRecord], now: datetime
    ) -> list[tuple[str, Any, Any]]:
        """The creditor's list replaces the creditor-sourced numbers; numbers added by
        staff (info repair) and the do-not-call / invalid marks stay. Returns the changes."""
        current = {r["number"]: r for r in (await self.conn.execute(Q_CONTACTS_OF_CASE, {"pk": pk})).mappings()}
        incoming = {c.number for c in contacts}
        changes: list[tuple[str, Any, Any]] = []
        for c in contacts:
            old = current.get(c.number)
            if old is None:
                await self.conn.execute(I_CONTACT, dict(
                    case_pk=pk, number=c.number, relation=c.relation, name=c.name, tz=c.tz, status=c.status,
                    do_not_call=c.do_not_call, source=c.source, added_at=now,
                ))
                changes.append((_contact_field(c.number), None, _contact_state(c.relation, c.status, c.do_not_call,
                                                                               c.source)))
                continue
            status = "invalid" if old["status"] == "invalid" else c.status
            dnc = bool(old["do_not_call"]) or c.do_not_call
            before = _contact_state(old["relation"], old["status"], bool(old["do_not_call"]), old["source"])
            after = _contact_state(c.relation, status, dnc, old["source"])
            if before != after or old["name"] != c.name or old["tz"] != c.tz:
                await self.conn.execute(
                    update(t.contacts).where(t.contacts.c.id == old["id"])
                    .values(relation=c.relation, name=c.name, tz=c.tz, status=status, do_not_call=dnc)
                )
            if before != after:
                changes.append((_contact_field(c.number), before, after))
        for number, old in current.items():
            if number not in incoming and old["source"] == "creditor":
                await self.conn.execute(t.contacts.delete().where(t.contacts.c.id == old["id"]))
                changes.append((_contact_field(number),
                                _contact_state(old["relation"], old["status"], bool(old["do_not_call"]),
                                               old["source"]), None))
        return changes

    async def update(
        self, pk: int, now: datetime, *, source: ChangeSource | None = None, reason: str | None = None,
        add_flags: Iterable[str] = (), remove_flags: Iterable[str] = (), **changes: Any,
    ) -> None:
        """Change case columns (status, status_hold, commission_end, follow_up_status,
        next_action_date, …), each change a history entry. `add_flags` / `remove_flags`
        change the agency's flags; the bank's own flags change only with its file.
        `flags=` sets the effective flags: what is not the bank's becomes the agency's."""
        row = await self._locked_row(pk)
        if row is None:
            raise LookupError(f"case pk {pk} vanished")
        bank = _flags_set(row["creditor_flags"])
        agency = _flags_set(row["agency_flags"])
        if "flags" in changes:
            agency = frozenset(changes.pop("flags")) - bank
        agency = (agency | frozenset(add_flags)) - frozenset(remove_flags)
        changes["agency_flags"] = _flags_text(agency)
        changes["flags"] = _flags_text(bank | agency)
        old = _tracked(row)
        new = {**old, **_tracked({**dict(row), **changes})}
        diff = [(f, old[f], new[f]) for f in TRACKED_FIELDS if old[f] != new[f]]
        if diff:
            changes.update(await self._append_history(row, diff, source or SYSTEM_CHANGE, now, reason))
        changes["updated_at"] = now
        await self.conn.execute(update(t.cases).where(t.cases.c.id == pk).values(**changes))

    async def add_contact(self, pk: int, contact: ContactRecord, *, source: ChangeSource | None = None) -> bool:
        exists = (
            await self.conn.execute(
                select(t.contacts.c.id).where(t.contacts.c.case_pk == pk, t.contacts.c.number == contact.number)
            )
        ).first()
        if exists is not None:
            return False
        now = contact.added_at or datetime.now(timezone.utc)
        await self.conn.execute(
            insert(t.contacts).values(
                case_pk=pk,
                number=contact.number,
                relation=contact.relation,
                name=contact.name,
                tz=contact.tz,
                status=contact.status,
                do_not_call=contact.do_not_call,
                source=contact.source,
                added_at=now,
            )
        )
        row = await self._locked_row(pk)
        if row is not None:
            head = await self._append_history(
                row, [(_contact_field(contact.number), None,
                       _contact_state(contact.relation, contact.status, contact.do_not_call, contact.source))],
                source or SYSTEM_CHANGE, now,
            )
            await self.conn.execute(update(t.cases).where(t.cases.c.id == pk).values(**head))
        return True

    async def update_contact(
        self, pk: int, number: str, *, now: datetime | None = None, source: ChangeSource | None = None,
        **changes: Any,
    ) -> None:
        old = (
            await self.conn.execute(
                select(t.contacts).where(t.contacts.c.case_pk == pk, t.contacts.c.number == number)
            )
        ).mappings().first()
        await self.conn.execute(
            update(t.contacts).where(t.contacts.c.case_pk == pk, t.contacts.c.number == number).values(**changes)
        )
        if old is None:
            return
        merged = {**dict(old), **changes}
        before = _contact_state(old["relation"], old["status"], bool(old["do_not_call"]), old["source"])
        after = _contact_state(merged["relation"], merged["status"], bool(merged["do_not_call"]), merged["source"])
        if before == after:
            return
        row = await self._locked_row(pk)
        if row is not None:
            head = await self._append_history(row, [(_contact_field(number), before, after)],
                                              source or SYSTEM_CHANGE, now or datetime.now(timezone.utc))
            await self.conn.execute(update(t.cases).where(t.cases.c.id == pk).values(**head))

    async def worklist(
        self, creditors: frozenset[str] | None, agent: str | None, due: date, limit: int
    ) -> list[dict[str, Any]]:
        """Active cases due by `due` (next action date on or before it) or awaiting their
        first call, most overdue first; case columns only."""
        c = t.cases.c
        conds: list[Any] = [c.status == "active",
                            or_(c.next_action_date <= due, c.follow_up_status == "new")]
        if creditors is not None:
            if not creditors:
                return []
            conds.append(c.creditor.in_(sorted(creditors)))
        if agent is not None:
            conds.append(c.assigned_agent == agent)
        q = (select(c.id, c.creditor, c.case_id, c.assigned_agent, c.follow_up_status, c.next_action_date,
                    c.created_at, c.amount_due, c.overdue_days)
             .where(*conds).order_by(c.next_action_date, c.id).limit(limit))
        return [dict(r) for r in (await self.conn.execute(q)).mappings()]

    async def first_calls_overdue(self, before: date, limit: int, after: int = 0) -> list[dict[str, Any]]:
        """Active new cases whose first-call date is before `before`, not yet alerted, by
        primary key after `after`."""
        c = t.cases.c
        q = (select(c.id, c.creditor, c.case_id, c.assigned_agent, c.next_action_date)
             .where(c.status == "active", c.follow_up_status == "new", c.next_action_date < before,
                    c.first_call_alerted_at.is_(None), c.id > after)
             .order_by(c.id).limit(limit))
        return [dict(r) for r in (await self.conn.execute(q)).mappings()]

    async def mark_first_call_alerted(self, pk: int, now: datetime) -> None:
        await self.conn.execute(update(t.cases).where(t.cases.c.id == pk).values(first_call_alerted_at=now))

    async def history(self, pk: int, *, after: int = 0, limit: int = 500) -> list[HistoryEntry]:
        """The case's history entries after seq `after`, oldest first."""
        h = t.case_history.c
        rows = await self.conn.execute(
            select(h.record, h.hash).where(h.case_pk == pk, h.seq > after).order_by(h.seq).limit(limit)
        )
        return [history_from_record(r[0], r[1]) for r in rows]

    async def history_heads(self) -> list[tuple[int, str, str, int, str]]:
        """(pk, creditor, case_id, history_seq, history_hash) of every case."""
        c = t.cases.c
        rows = await self.conn.execute(
            select(c.id, c.creditor, c.case_id, c.history_seq, c.history_hash).order_by(c.id)
        )
        return [(int(r[0]), r[1], r[2], int(r[3]), r[4]) for r in rows]

    async def iterate_history(self, batch: int = 5000) -> AsyncIterator[dict[str, Any]]:
        """Every stored history row in (case_pk, seq, id) order, as raw dicts."""
        h = t.case_history.c
        last = (-1, -1, -1)
        while True:
            q = (
                select(t.case_history)
                .where(or_(h.case_pk > last[0], and_(h.case_pk == last[0], or_(
                    h.seq > last[1], and_(h.seq == last[1], h.id > last[2])))))
                .order_by(h.case_pk, h.seq, h.id)
                .limit(batch)
            )
            rows = (await self.conn.execute(q)).mappings().all()
            if not rows:
                return
            for r in rows:
                yield dict(r)
            last = (rows[-1]["case_pk"], rows[-1]["seq"], rows[-1]["id"])

    async def active_for_agent(self, agent_id: str, number: str) -> list[CaseRecord]:
        """The active cases assigned to `agent_id` that hold `number` (any creditor)."""
        if self.raw is not None:
            return self._load_joined_raw(self.raw, hot.CASES_WITH_CONTACTS_ACTIVE_FOR_AGENT_NUMBER, (number, agent_id))
        holding = select(t.contacts.c.case_pk).where(t.contacts.c.number == number)
        return await self._load(
            and_(t.cases.c.id.in_(holding), t.cases.c.status == "active", t.cases.c.assigned_agent == agent_id)
        )

    async def dial_candidates(self, agent_id: str, number: str, now: datetime) -> list[tuple[bool, str, str]]:
        rows = (await self.conn.execute(Q_DIAL_CANDIDATES, {"agent": agent_id, "number": number, "now": now})).all()
        return [(src == 0, creditor, case_id) for src, creditor, case_id in rows]

    async def by_number(self, number: str, creditors: frozenset[str] | None) -> list[CaseRecord]:
        sub = select(t.contacts.c.case_pk).where(t.contacts.c.number == number)
        where: Any = t.cases.c.id.in_(sub)
        if creditors is not None:
            if not creditors:
                return []
            where = and_(where, t.cases.c.creditor.in_(sorted(creditors)))
        return await self._load(where)

    async def next_event_seq(self, pk: int, count: int = 1) -> int:
        if self.raw is not None:
            row = self.raw.execute(hot.NEXT_SEQ, (count, pk)).fetchone()
        else:
            row = (await self.conn.execute(Q_NEXT_SEQ, {"pk": pk, "count": count})).first()
        if row is None:
            raise LookupError(f"case pk {pk} vanished")
        return int(row[0]) - count + 1

    async def appointments(self, pk: int, since: datetime) -> list[Appointment]:
        if self.raw is not None:
            return [
                Appointment(number=r[0], at=hot.py_time(r[1]))  # type: ignore[arg-type]
                for r in self.raw.execute(hot.APPOINTMENTS, (pk, hot.db_time(since)))
            ]
        rows = await self.conn.execute(Q_APPOINTMENTS, {"case_pk": pk, "since": since})
        return [Appointment(number=r[0], at=r[1]) for r in rows]

    async def add_appointment(self, pk: int, number: str, at: datetime, attempt_id: str | None) -> None:
        await self.conn.execute(
            insert(t.appointments).values(
                case_pk=pk, number=number, at=at, attempt_id=attempt_id, created_at=datetime.now(timezone.utc)
            )
        )

    async def record_repayment(
        self, creditor: str, case_id: str, amount: str | None, paid_on: date | None, settled: bool, by: str, now: datetime
    ) -> None:
        await self.conn.execute(
            insert(t.repayments).values(
                creditor=creditor,
                case_id=case_id,
                amount=amount,
                paid_on=paid_on,
                settled=settled,
                imported_by=by,
                imported_at=now,
            )
        )


# ---------------------------------------------------------------------------------
# Attempts and outcomes
# ---------------------------------------------------------------------------------
def _attempt(r: Any) -> AttemptRecord:
    return AttemptRecord(
        attempt_id=r["id"],
        case_pk=r["case_pk"],
        creditor=r["creditor"],
        case_id=r["case_id"],
        number=r["number"],
        relation=r["relation"],
        agent_id=r["agent_id"],
        channel=r["channel"],
        state=r["state"],
        at=r["at"],
        valid_until=r["valid_until"],
        decision_id=r["decision_id"],
        connected=bool(r["connected"]),
    )


def _outcome(r: Any) -> OutcomeRecord:
    return OutcomeRecord(
        attempt_id=r["attempt_id"],
        disposition=r["disposition"],
        result=r["result"],
        note=r["note"],
        callback_at=r["callback_at"],
        promise_amount=r["promise_amount"],
        promise_date=r["promise_date"],
        logged_by=r["logged_by"],
        logged_at=r["logged_at"],
        request_digest=r["request_digest"],
    )


class SqlAttemptRepository:
    def __init__(self, conn: AsyncConnection, raw: sqlite3.Connection | None = None) -> None:
        self.conn = conn
        self.raw = raw

    async def history(
        self, number: str, case_pk: int, creditor: str, since: datetime, limit: int | None = None,
        now: datetime | None = None,
    ) -> list[HistoryEvent]:
        """The attempts (and answered calls) of `number` on any case and of case `case_pk`
        on any number since `since`. With `limit` (and `now`), only the newest `limit`
        attempts up to `now` of each (relation, answered) group of the number, and of the
        case, plus any later than `now` (clock skew): every cap whose limit is at most
        `limit` counts and searches them exactly as it would all (a window ends at or
        after `now`, so it holds a newest run of each group, and a cap needs at most its
        limit of those), and a number dialed thousands of times costs a decision what any
        other does."""
        out: list[HistoryEvent] = []
        bounded = limit is not None and now is not None
        if not bounded:
            if self.raw is not None:
                rows: Iterable[Any] = self.raw.execute(
                    hot.HISTORY, {"number": number, "case_pk": case_pk, "since": hot.db_time(since)}
                )
            else:
                rows = await self.conn.execute(Q_HISTORY, {"number": number, "case_pk": case_pk, "since": since})
        else:
            cap = max(_HISTORY_CAP, 4 * limit)  # type: ignore[operator]
            rows = []
            for param, value, newest, groups, hot_newest, hot_groups in (
                ("number", number, Q_HISTORY_NEWEST_NUMBER, Q_HISTORY_GROUPS_NUMBER,
                 hot.HISTORY_NEWEST_NUMBER, hot.HISTORY_GROUPS_NUMBER),
                ("case_pk", case_pk, Q_HISTORY_NEWEST_CASE, Q_HISTORY_GROUPS_CASE,
                 hot.HISTORY_NEWEST_CASE, hot.HISTORY_GROUPS_CASE),
            ):
                if self.raw is not None:
                    p = {param: value, "since": hot.db_time(since), "cap": cap}
                    got = self.raw.execute(hot_newest, p).fetchall()
                    if len(got) >= cap:
                        p.update(k=limit, now=hot.db_time(now))  # type: ignore[arg-type]
                        got = self.raw.execute(hot_groups, p).fetchall()
                else:
                    p = {param: value, "since": since, "cap": cap}
                    got = (await self.conn.execute(newest, p)).all()
                    if len(got) >= cap:
                        p.update(k=limit, now=now)
                        got = (await self.conn.execute(groups, p)).all()
                rows.extend(got)
        seen: set[Any] = set()
        for r in rows:
            if bounded:
                if r[0] in seen:
                    continue  # this case's attempt on this number: in both halves
                seen.add(r[0])
            at = hot.py_time(r[1]) if self.raw is not None else r[1]
            # Another creditor's case with the same id must not count as this case.
            cid = r[2] if r[6] == creditor else f"{r[6]}/{r[2]}"
            out.append(HistoryEvent(at=at, case_id=cid, number=r[3], relation=r[4], kind="attempt"))
            if r[5]:
                out.append(HistoryEvent(at=at, case_id=cid, number=r[3], relation=r[4], kind="connected"))
        return out

    async def expired(self, now: datetime, limit: int = 500) -> list[AttemptRecord]:
        a = t.attempts.c
        rows = (
            await self.conn.execute(
                select(t.attempts).where(a.state == "authorised", a.valid_until < now).order_by(a.at).limit(limit)
            )
        ).mappings()
        return [_attempt(r) for r in rows]

    async def add(self, attempt: AttemptRecord) -> None:
        if self.raw is not None:
            self.raw.execute(hot.INSERT_ATTEMPT, (
                attempt.attempt_id, attempt.case_pk, attempt.creditor, attempt.case_id, attempt.number,
                attempt.relation, attempt.agent_id, attempt.channel, attempt.state, hot.db_time(attempt.at),
                hot.db_time(attempt.valid_until), attempt.decision_id, int(attempt.connected),
            ))
            return
        await self.conn.execute(
            I_ATTEMPT,
            dict(
                id=attempt.attempt_id,
                case_pk=attempt.case_pk,
                creditor=attempt.creditor,
                case_id=attempt.case_id,
                number=attempt.number,
                relation=attempt.relation,
                agent_id=attempt.agent_id,
                channel=attempt.channel,
                state=attempt.state,
                at=attempt.at,
                valid_until=attempt.valid_until,
                decision_id=attempt.decision_id,
                connected=attempt.connected,
            ),
        )

    async def get(self, attempt_id: str) -> AttemptRecord | None:
        if self.raw is not None:
            found = self.raw.execute(hot.ATTEMPT_BY_ID, (attempt_id,)).fetchone()
            return _attempt(hot.attempt_row(found)) if found else None
        r = (await self.conn.execute(select(t.attempts).where(t.attempts.c.id == attempt_id))).mappings().first()
        return _attempt(r) if r else None

    async def find_pending(self, agent_id: str, number: str, now: datetime) -> AttemptRecord | None:
        if self.raw is not None:
            rows = self.raw.execute(hot.ATTEMPT_PENDING, (agent_id, number, hot.db_time(now))).fetchall()
            if not rows:
                return None
            oldest = rows[0] if len(rows) == 1 else min(rows, key=lambda r: r[hot.ATTEMPT_AT])
            return _attempt(hot.attempt_row(oldest))
        a = t.attempts.c
        r = (
            await self.conn.execute(
                select(t.attempts)
                .where(a.agent_id == agent_id, a.state == "authorised", a.number == number, a.valid_until >= now)
                .order_by(a.at)
                .limit(1)
            )
        ).mappings().first()
        return _attempt(r) if r else None

    async def set_state(self, attempt_id: str, state: str, *, connected: bool | None = None) -> None:
        values: dict[str, Any] = {"state": state}
        if connected is not None:
            values["connected"] = connected
        await self.conn.execute(update(t.attempts).where(t.attempts.c.id == attempt_id).values(**values))

    async def for_case(self, case_pk: int, limit: int = 200) -> list[AttemptRecord]:
        rows = (
            await self.conn.execute(
                select(t.attempts).where(t.attempts.c.case_pk == case_pk).order_by(t.attempts.c.at.desc()).limit(limit)
            )
        ).mappings()
        return [_attempt(r) for r in rows]

    async def get_outcome(self, attempt_id: str) -> OutcomeRecord | None:
        r = (await self.conn.execute(select(t.outcomes).where(t.outcomes.c.attempt_id == attempt_id))).mappings().first()
        return _outcome(r) if r else None

    async def add_outcome(self, case_pk: int, outcome: OutcomeRecord) -> None:
        await self.conn.execute(
            insert(t.outcomes).values(
                attempt_id=outcome.attempt_id,
                case_pk=case_pk,
                disposition=outcome.disposition,
                result=outcome.result,
                note=outcome.note,
                callback_at=outcome.callback_at,
                promise_amount=outcome.promise_amount,
                promise_date=outcome.promise_date,
                logged_by=outcome.logged_by,
                logged_at=outcome.logged_at,
                request_digest=outcome.request_digest,
            )
        )

    async def outcomes_for_case(self, case_pk: int) -> list[OutcomeRecord]:
        rows = (await self.conn.execute(select(t.outcomes).where(t.outcomes.c.case_pk == case_pk))).mappings()
        return [_outcome(r) for r in rows]


# ---------------------------------------------------------------------------------
# Decision log (hash chain)
# ---------------------------------------------------------------------------------
def decision_from_record(text_: str) -> DecisionRecord:
    d = json.loads(text_)

    def dt(v: str | None) -> datetime | None:
        return datetime.fromisoformat(v) if v else None

    return DecisionRecord(
        decision_id=d["decision_id"],
        kind=d["kind"],
        at=dt(d["at"]),  # type: ignore[arg-type]
        evaluated_at=dt(d["evaluated_at"]),  # type: ignore[arg-type]
        user=d["user"],
        agent_id=d["agent_id"],
        channel=d["channel"],
        creditor=d["creditor"],
        case_id=d["case_id"],
        number_masked=d["number"],
        attempt_id=d["attempt_id"],
        allowed=d["allowed"],
        rule_id=d["rule_id"],
        reason=d["reason"],
        reason_zh=d["reason_zh"],
        next_allowed_at=dt(d["next_allowed_at"]),
        policy_version=d["policy_version"],
        checks=tuple(d["checks"]),
        inputs_used=d["inputs_used"],
        chain=d["chain"],
        seq=d["seq"],
        prev_hash=d["prev_hash"],
    )


LEGACY_LINK = evidence_chain.sha256_link(b"\n")  # `chain_hash`: records written before the key


def _linked(record: DecisionRecord, chain: str, head: Any, key: EvidenceKey) -> tuple[DecisionRecord, str]:
    """`record` as the next link after `head` (the chain's (seq, hash, keyed_from) row,
    or None): with its seq, prev_hash and MAC under `key`, and the canonical text that
    MAC covers."""
    linked, data = _link(record, chain, head, key)
    return linked, data.decode("utf-8")


def _keyed_from(head: Any, seq: int) -> int:
    """The chain's first keyed seq: kept once set; else this record is the first."""
    return head[2] if head is not None and head[2] is not None else seq


def _link(record: DecisionRecord, chain: str, head: Any, key: EvidenceKey) -> tuple[DecisionRecord, bytes]:
    """`_linked` with the canonical text as its UTF-8 bytes: the SQLite writer stores
    them as they are (hot.INSERT_DECISION casts them to TEXT), not decoded to a str that
    pysqlite encodes back to UTF-8 (~5 us for the ~4 KB record).

    Runs for every decision, so (same bytes as `canonical_json` and `chain_hash`) the
    hash covers orjson's UTF-8 output as it comes, not the text encoded once more, and
    the linked record is built field by field, not by `dataclasses.replace` (~4 µs
    more). A field added to `DecisionRecord` must be added here too (a unit test
    compares with `replace`)."""
    seq, prev = (int(head[0]) + 1, head[1]) if head else (1, GENESIS_HASH)
    body = record.body()
    body["chain"], body["seq"], body["prev_hash"] = chain, seq, prev
    data = orjson.dumps(body, option=_CANONICAL)  # canonical_json's bytes
    digest = key.link(prev, data)
    r = record
    linked = DecisionRecord(
        decision_id=r.decision_id, kind=r.kind, at=r.at, evaluated_at=r.evaluated_at, user=r.user,
        agent_id=r.agent_id, channel=r.channel, creditor=r.creditor, case_id=r.case_id,
        number_masked=r.number_masked, attempt_id=r.attempt_id, allowed=r.allowed, rule_id=r.rule_id,
        reason=r.reason, reason_zh=r.reason_zh, next_allowed_at=r.next_allowed_at,
        policy_version=r.policy_version, checks=r.checks, inputs_used=r.inputs_used,
        chain=chain, seq=seq, prev_hash=prev, hash=digest,
    )
    return linked, data


class SqlDecisionLog:
    """Append-only, hash-chained per creditor.

    One chain per creditor keeps one bank's log verifiable (and exportable) on its own,
    and on PostgreSQL lets different creditors' decisions commit in parallel: only
    appends to the same chain queue on its advisory lock, which is held to commit.
    """

    def __init__(
        self, conn: AsyncConnection, is_postgres: bool, raw: sqlite3.Connection | None = None,
        memo: _GroupMemo | None = None, evidence: EvidenceKey | None = None,
    ) -> None:
        self.conn = conn
        self.is_postgres = is_postgres
        self.raw = raw
        self.memo = memo  # the SQLite write group's (see _GroupMemo)
        self.evidence = evidence or _NO_KEY

    def _append_raw(self, raw: sqlite3.Connection, record: DecisionRecord, chain: str) -> DecisionRecord:
        memo = self.memo
        head = memo.heads.get(chain) if memo is not None else None
        if head is None:
            head = raw.execute(hot.CHAIN_HEAD, (chain,)).fetchone()
        key = self.evidence
        rec, body = _link(record, chain, head, key)
        keyed_from = _keyed_from(head, rec.seq)
        raw.execute(hot.INSERT_DECISION, (
            chain, rec.seq, rec.decision_id, rec.kind, hot.db_time(rec.at), rec.creditor, rec.case_id, rec.agent_id,
            int(rec.allowed), rec.rule_id, rec.attempt_id, body, rec.prev_hash, rec.hash,
        ))
        raw.execute(hot.UPSERT_CHAIN_HEAD, (
            chain, rec.seq, rec.hash, keyed_from, key.head_mac(chain, rec.seq, rec.hash, keyed_from),
        ))
        if memo is not None:
            memo.heads[chain] = (rec.seq, rec.hash, keyed_from)
        return rec

    async def append(self, record: DecisionRecord) -> DecisionRecord:
        chain = record.creditor or "-"
        if self.raw is not None:
            return self._append_raw(self.raw, record, chain)
        if self.is_postgres:
            await self.conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": "chain:" + chain}
            )
        head = (await self.conn.execute(Q_CHAIN_HEAD, {"chain": chain})).first()
        key = self.evidence
        rec, body = _linked(record, chain, head, key)
        seq, prev, digest = rec.seq, rec.prev_hash, rec.hash
        keyed_from = _keyed_from(head, seq)
        mac = key.head_mac(chain, seq, digest, keyed_from)
        await self.conn.execute(
            I_DECISION,
            dict(
                chain=chain,
                seq=seq,
                decision_id=rec.decision_id,
                kind=rec.kind,
                at=rec.at,
                creditor=rec.creditor,
                case_id=rec.case_id,
                agent_id=rec.agent_id,
                allowed=rec.allowed,
                rule_id=rec.rule_id,
                attempt_id=rec.attempt_id,
                record=body,
                prev_hash=prev,
                hash=digest,
            ),
        )
        if head:
            await self.conn.execute(
                Q_CHAIN_HEAD_UPDATE,
                {"chain_key": chain, "seq": seq, "hash": digest, "keyed_from": keyed_from, "mac": mac},
            )
        else:
            await self.conn.execute(
                I_CHAIN_HEAD, {"chain": chain, "seq": seq, "hash": digest, "keyed_from": keyed_from, "mac": mac}
            )
        return rec

    async def get_many(self, decision_ids: Iterable[str]) -> dict[str, DecisionRecord]:
        ids = list(decision_ids)
        if not ids:
            return {}
        rows = await self.conn.execute(
            select(t.decisions.c.record, t.decisions.c.hash).where(t.decisions.c.decision_id.in_(ids))
        )
        out = {}
        for r in rows:
            rec = replace(decision_from_record(r[0]), hash=r[1])
            out[rec.decision_id] = rec
        return out

    def _where(
        self,
        *,
        allowed: bool | None,
        creditors: frozenset[str] | None,
        since: datetime | None,
        until: datetime | None,
        agent_id: str | None = None,
        rule_id: str | None = None,
        case_id: str | None = None,
    ) -> list[Any]:
        d = t.decisions.c
        # Dial-check answers (what-if questions) are decisions too, but nobody dialled:
        # the blocked-dial review lists dials (and PBX rechecks) only. Named, not "not a
        # check": an IN list lets SQLite seek (allowed, kind, at) in ix_decisions_review.
        conds: list[Any] = [d.kind.in_(REVIEWED_KINDS)]
        if allowed is not None:
            # On SQLite `IS`, as the console writes it: the review index holds blocked
            # decisions only (`WHERE allowed IS 0`, migration 0006), and SQLite uses it
            # only for a query whose condition is spelt the same way. PostgreSQL keeps
            # the full index and the plain comparison.
            conds.append(d.allowed == allowed if self.is_postgres else d.allowed.is_(allowed))
        if creditors is not None:
            conds.append(d.creditor.in_(sorted(creditors)) if creditors else literal(False))
        if since is not None:
            conds.append(d.at >= since)
        if until is not None:
            conds.append(d.at < until)
        if agent_id:
            conds.append(d.agent_id == agent_id)
        if rule_id:
            conds.append(d.rule_id == rule_id)
        if case_id:
            conds.append(d.case_id == case_id)
        return conds

    async def query(
        self,
        *,
        allowed: bool | None,
        creditors: frozenset[str] | None,
        since: datetime | None,
        until: datetime | None,
        agent_id: str | None,
        rule_id: str | None,
        case_id: str | None,
        after: int | None,
        limit: int,
    ) -> tuple[list[tuple[int, DecisionRecord]], int | None]:
        d = t.decisions.c
        conds = self._where(
            allowed=allowed, creditors=creditors, since=since, until=until,
            agent_id=agent_id, rule_id=rule_id, case_id=case_id,
        )
        if after is not None:
            conds.append(d.id > after)
        q = select(d.id, d.record, d.hash).where(*conds).order_by(d.id).limit(limit + 1)
        rows = (await self.conn.execute(q)).all()
        items = [(int(r[0]), replace(decision_from_record(r[1]), hash=r[2])) for r in rows[:limit]]
        nxt = items[-1][0] if len(rows) > limit and items else None
        return items, nxt

    async def blocked_summary(
        self, *, creditors: frozenset[str] | None, since: datetime | None, until: datetime | None, tz: str = "Asia/Shanghai"
    ) -> dict[str, Any]:
        d = t.decisions.c
        conds = self._where(allowed=False, creditors=creditors, since=since, until=until)
        by_rule = {r[0]: r[1] for r in await self.conn.execute(select(d.rule_id, func.count()).where(*conds).group_by(d.rule_id))}
        by_agent = {r[0]: r[1] for r in await self.conn.execute(select(d.agent_id, func.count()).where(*conds).group_by(d.agent_id))}
        zone = ZoneInfo(tz)
        by_day: Counter[str] = Counter()
        for r in await self.conn.execute(select(d.at).where(*conds)):
            by_day[r[0].astimezone(zone).date().isoformat()] += 1
        return {
            "total": sum(by_rule.values()),
            "by_rule": dict(sorted(by_rule.items())),
            "by_agent": dict(sorted(by_agent.items())),
            "by_day": dict(sorted(by_day.items())),
            "day_zone": tz,
        }

    async def chains(self) -> list[tuple[str, int, str]]:
        rows = await self.conn.execute(select(t.chain_heads).order_by(t.chain_heads.c.chain))
        return [(r[0], int(r[1]), r[2]) for r in rows]

    async def heads(self) -> list[evidence_chain.Head]:
        """Every chain's head with its keyed_from and MAC."""
        h = t.chain_heads.c
        rows = await self.conn.execute(select(h.chain, h.seq, h.hash, h.keyed_from, h.mac).order_by(h.chain))
        return [evidence_chain.Head(r[0], int(r[1]), r[2], None if r[3] is None else int(r[3]), r[4]) for r in rows]

    async def anchor(self) -> int:
        """Put every head written before the evidence key under it: its MAC, and the next
        seq as the first keyed one (the records so far keep their SHA-256). Idempotent."""
        h = t.chain_heads.c
        key, done = self.evidence, 0
        for r in (await self.conn.execute(select(h.chain, h.seq, h.hash).where(h.mac.is_(None)))).all():
            keyed_from = int(r[1]) + 1
            await self.conn.execute(
                update(t.chain_heads).where(h.chain == r[0], h.mac.is_(None))
                .values(keyed_from=keyed_from, mac=key.head_mac(r[0], int(r[1]), r[2], keyed_from))
            )
            done += 1
        return done

    async def chain_names(self) -> list[str]:
        rows = await self.conn.execute(select(t.decisions.c.chain).distinct())
        return sorted(r[0] for r in rows)

    async def iterate(self, chain: str, batch: int = 5000) -> AsyncIterator[dict[str, Any]]:
        """Stored rows of a chain in (seq, id) order, as raw dicts."""
        d = t.decisions.c
        last_seq, last_id = -1, -1
        while True:
            q = (
                select(d.id, d.seq, d.decision_id, d.kind, d.at, d.creditor, d.case_id, d.agent_id, d.allowed,
                       d.rule_id, d.attempt_id, d.record, d.prev_hash, d.hash)
                .where(d.chain == chain, or_(d.seq > last_seq, and_(d.seq == last_seq, d.id > last_id)))
                .order_by(d.seq, d.id)
                .limit(batch)
            )
            rows = (await self.conn.execute(q)).mappings().all()
            if not rows:
                return
            for r in rows:
                yield dict(r)
            last_seq, last_id = rows[-1]["seq"], rows[-1]["id"]


# ---------------------------------------------------------------------------------
# Outbox, users, audit
# ---------------------------------------------------------------------------------
class SqlOutbox:
    def __init__(self, conn: AsyncConnection, raw: sqlite3.Connection | None = None, *, keep: bool = True) -> None:
        self.conn = conn
        self.raw = raw
        self.keep = keep  # False: no event bus is configured (see SqlAlchemyCaseStore)
        self._cases = SqlCaseRepository(conn, raw)

    async def add(
        self,
        type: str,
        *,
        creditor: str,
        case_pk: int | None,
        case_id: str | None,
        occurred_at: datetime,
        payload: dict[str, Any],
    ) -> str:
        event_id = new_id()
        if not self.keep:
            return event_id
        case_seq = await self._cases.next_event_seq(case_pk) if case_pk is not None else None
        body = {
            "event_id": event_id,
            "type": type,
            "occurred_at": occurred_at.isoformat(),
            "creditor": creditor,
            "case_id": case_id,
            "case_seq": case_seq,
            **payload,
        }
        if self.raw is not None:
            self.raw.execute(hot.INSERT_OUTBOX, (
                event_id, type, creditor, case_id, case_seq, hot.db_time(occurred_at), canonical_json(body),
            ))
            return event_id
        await self.conn.execute(
            I_OUTBOX,
            dict(
                event_id=event_id,
                type=type,
                creditor=creditor,
                case_id=case_id,
                case_seq=case_seq,
                occurred_at=occurred_at,
                payload=canonical_json(body),
                published_at=None,
            ),
        )
        return event_id

    async def pending(self, limit: int = 100) -> list[OutboxEvent]:
        o = t.outbox.c
        rows = await self.conn.execute(
            select(t.outbox).where(o.published_at.is_(None)).order_by(o.id).limit(limit)
        )
        return [
            OutboxEvent(
                id=r.id,
                event_id=r.event_id,
                type=r.type,
                creditor=r.creditor,
                case_id=r.case_id,
                case_seq=r.case_seq,
                occurred_at=r.occurred_at,
                payload=json.loads(r.payload),
            )
            for r in rows
        ]

    async def mark_published(self, ids: Sequence[int], at: datetime) -> None:
        if ids:
            await self.conn.execute(update(t.outbox).where(t.outbox.c.id.in_(list(ids))).values(published_at=at))


class SqlUserRepository:
    def __init__(
        self, conn: AsyncConnection, raw: sqlite3.Connection | None = None, memo: _GroupMemo | None = None
    ) -> None:
        self.conn = conn
        self.raw = raw
        self.memo = memo  # the SQLite write group's (see _GroupMemo)

    async def _principal(self, where: Any) -> Principal | None:
        u = (await self.conn.execute(select(t.users).where(where, t.users.c.disabled.is_(False)))).mappings().first()
        if u is None:
            return None
        creds = await self.conn.execute(
            select(t.user_creditors.c.creditor).where(t.user_creditors.c.user_id == u["id"])
        )
        return Principal(user_id=u["id"], name=u["name"], role=u["role"], creditors=frozenset(r[0] for r in creds))

    async def by_token_hash(self, token_hash: str) -> Principal | None:
        return await self._principal(t.users.c.token_hash == token_hash)

    async def by_name(self, name: str) -> Principal | None:
        if self.raw is not None:  # the SIP gate asks for its agent on every decision
            memo = self.memo
            if memo is not None and name in memo.users:
                return memo.users[name]
            u = self.raw.execute(hot.USER_BY_NAME, (name,)).fetchone()
            found = None
            if u is not None:
                creds = frozenset(r[0] for r in self.raw.execute(hot.USER_CREDITORS, (u[0],)))
                found = Principal(user_id=u[0], name=u[1], role=u[2], creditors=creds)
            if memo is not None:
                memo.users[name] = found
            return found
        return await self._principal(t.users.c.name == name)

    async def add(self, name: str, role: str, creditors: frozenset[str], token_hash: str, now: datetime) -> Principal:
        cases = SqlCaseRepository(self.conn)
        for c in sorted(creditors):
            await cases.ensure_creditor(c)
        res = await self.conn.execute(
            insert(t.users).values(name=name, role=role, token_hash=token_hash, disabled=False, created_at=now)
        )
        uid = res.inserted_primary_key[0]
        for c in sorted(creditors):
            await self.conn.execute(insert(t.user_creditors).values(user_id=uid, creditor=c))
        return Principal(user_id=uid, name=name, role=role, creditors=frozenset(creditors))

    async def grant(self, name: str, creditor: str) -> None:
        """Scope an existing user to one more creditor."""
        await SqlCaseRepository(self.conn).ensure_creditor(creditor)
        uid = (await self.conn.execute(select(t.users.c.id).where(t.users.c.name == name))).scalar_one()
        await self.conn.execute(insert(t.user_creditors).values(user_id=uid, creditor=creditor))

    async def set_token(self, name: str, token_hash: str) -> None:
        await self.conn.execute(update(t.users).where(t.users.c.name == name).values(token_hash=token_hash))

    async def set_disabled(self, name: str, disabled: bool) -> bool:
        res = await self.conn.execute(update(t.users).where(t.users.c.name == name).values(disabled=disabled))
        return bool(res.rowcount)

    async def end_sessions(self, name: str, before: datetime) -> None:
        """Console sessions `name` signed in before `before` no longer sign them in."""
        c = t.console_session_cutoffs
        res = await self.conn.execute(update(c).where(c.c.user_name == name).values(not_before=before))
        if not res.rowcount:
            await self.conn.execute(insert(c).values(user_name=name, not_before=before))

    async def revoke(self, name: str, creditor: str) -> bool:
        """Take one creditor out of a user's scope; False when it was not in it."""
        uid = select(t.users.c.id).where(t.users.c.name == name).scalar_subquery()
        res = await self.conn.execute(
            t.user_creditors.delete().where(t.user_creditors.c.user_id == uid, t.user_creditors.c.creditor == creditor)
        )
        return bool(res.rowcount)

    async def list_all(self) -> list[dict[str, Any]]:
        """Every user, enabled or not, with their creditors (no token hashes)."""
        users = (await self.conn.execute(select(
            t.users.c.id, t.users.c.name, t.users.c.role, t.users.c.disabled, t.users.c.created_at,
        ).order_by(t.users.c.name))).mappings().all()
        creds: dict[int, list[str]] = {}
        for uid, c in await self.conn.execute(select(t.user_creditors.c.user_id, t.user_creditors.c.creditor)):
            creds.setdefault(uid, []).append(c)
        return [{"name": u["name"], "role": u["role"], "creditors": sorted(creds.get(u["id"], [])),
                 "disabled": bool(u["disabled"]), "created_at": u["created_at"]} for u in users]

    async def find(self, name: str) -> dict[str, Any] | None:
        """A user by name whether disabled or not (the CLI's view)."""
        u = (await self.conn.execute(select(t.users.c.id, t.users.c.name, t.users.c.role, t.users.c.disabled,
                                            t.users.c.created_at).where(t.users.c.name == name))).mappings().first()
        if u is None:
            return None
        creds = [r[0] for r in await self.conn.execute(
            select(t.user_creditors.c.creditor).where(t.user_creditors.c.user_id == u["id"]))]
        return {"name": u["name"], "role": u["role"], "creditors": sorted(creds), "disabled": bool(u["disabled"]),
                "created_at": u["created_at"]}


class SqlAuditLog:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(
        self,
        *,
        at: datetime,
        actor: str,
        action: str,
        creditor: str | None,
        case_id: str | None,
        details: dict[str, Any],
    ) -> None:
        await self.conn.execute(
            insert(t.audit_log).values(
                at=at, actor=actor, action=action, creditor=creditor, case_id=case_id, details=canonical_json(details)
            )
        )
