"""The ports the application needs, as `typing.Protocol`s. Adapters implement them.

    Clock            now(); tests and `dialgate simulate` pass a fixed or stepping one
    CaseStore        unit-of-work factory over the case store (adapters/db: SqlAlchemyCaseStore)
      UnitOfWork     one transaction: .cases .attempts .decisions .outbox .users .audit .imports
      DialLedger     decide-and-reserve's unit: `gather` what a decision reads, `apply` what it
                     writes; a dial crosses the store twice (adapters/db: ledger_core, ledger_sqlite)
    EventPublisher   publishes outbox events (adapters/mqtt's relay); the outbox rows are
                     written by the use cases in the same transaction as the change
    Pbx              asked to originate an authorised attempt (adapter `none` for now)
    RecordingStore   says whether calls can be recorded; no recording → no call
    Leadership       which instance runs the once-only work (relay, sweeps, inbox, PBX UA)
    UserChanges      tells a process that users changed in any instance (PostgreSQL: LISTEN)

Contract for every UnitOfWork method: it runs inside the transaction the unit of work
opened; nothing is visible to others until the `async with` block exits cleanly;
any exception rolls everything back. Store failures surface as `StoreUnavailable`.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import date, datetime
from typing import Any, AsyncIterator, Callable, Iterable, NamedTuple, Protocol, Sequence, runtime_checkable

from dialer.model import (
    AttemptRecord,
    CallProgress,
    CaseInput,
    CaseRecord,
    ChangeSource,
    ContactRecord,
    DecisionRecord,
    HistoryEntry,
    ImportJob,
    OutboxEvent,
    OutcomeRecord,
    Principal,
)
from dialer.evidence import Head
from policy.model import Appointment, HistoryEvent


@runtime_checkable
class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware."""
        ...


class CaseRepository(Protocol):
    async def find(self, case_id: str, creditors: frozenset[str] | None) -> list[CaseRecord]:
        """Cases with this id among `creditors` (None: all creditors)."""
        ...

    async def get(self, creditor: str, case_id: str) -> CaseRecord | None: ...

    async def upsert(
        self, case: CaseInput, now: datetime, *, source: ChangeSource | None = None
    ) -> tuple[CaseRecord, bool]:
        """Apply a case file's row by (creditor, case_id); returns (case, created). What
        the creditor supplies replaces the last file's; what the agency learned (flags,
        contact marks, verified numbers) stays; a status held by a repayment, pause or
        withdrawal changes only with `case.reopen`. Each change is a history entry
        naming `source` (None: an import, row unknown)."""
        ...

    async def plan_upsert(
        self, rows: Sequence[tuple[int | None, CaseInput]], now: datetime, source: ChangeSource,
    ) -> Any:
        """What `upsert_many` of these rows would write, decided from the cases as this
        unit reads them (a read unit: no write lock held while deciding); None when it
        cannot be planned ahead."""
        ...

    async def upsert_many(
        self, rows: Sequence[tuple[int | None, CaseInput]], now: datetime, source: ChangeSource,
        plan: Any = None,
    ) -> list[tuple[CaseRecord, bool]]:
        """`upsert` of each `(row number, case)` in order, as a set (`dialer.case_merge`
        decides each row); returns each row's (case, created). `plan`: `plan_upsert` of
        the same rows, written only if the cases it read are unchanged (else decided
        again)."""
        ...

    async def update(
        self, pk: int, now: datetime, *, source: ChangeSource | None = None, reason: str | None = None,
        add_flags: Iterable[str] = (), remove_flags: Iterable[str] = (), **changes: Any,
    ) -> None:
        """Change case columns (status, status_hold, commission_end, follow_up_status,
        next_action_date) and the agency's flags, each change a history entry."""
        ...

    async def add_contact(self, pk: int, contact: ContactRecord, *, source: ChangeSource | None = None) -> bool:
        """Add a number; False when the case already has it."""
        ...

    async def update_contact(
        self, pk: int, number: str, *, now: datetime | None = None, source: ChangeSource | None = None,
        **changes: Any,
    ) -> None: ...

    async def history(self, pk: int, *, after: int = 0, limit: int = 500) -> list[HistoryEntry]:
        """The case's history entries after seq `after`, oldest first."""
        ...

    async def worklist(
        self, creditors: frozenset[str] | None, agent: str | None, due: date, limit: int
    ) -> list[dict[str, Any]]:
        """Active cases due by `due` or awaiting their first call (case columns only)."""
        ...

    async def first_calls_overdue(self, before: date, limit: int, after: int = 0) -> list[dict[str, Any]]:
        """Active new cases whose first-call date is before `before`, not yet alerted, by
        primary key after `after`."""
        ...

    async def mark_first_call_alerted(self, pk: int, now: datetime) -> None: ...

    async def history_heads(self) -> list[tuple[int, str, str, int, str]]:
        """(pk, creditor, case_id, history_seq, history_hash) of every case."""
        ...

    def iterate_history(self, batch: int = 5000) -> AsyncIterator[dict[str, Any]]:
        """Every stored history row in (case_pk, seq, id) order, as raw dicts."""
        ...

    async def spellings(self, creditor: str, keys: Sequence[str]) -> list[str]:
        """The creditor's stored case ids whose letter case folded (`imports.case_key`) is among `keys`."""
        ...

    async def by_number(self, number: str, creditors: frozenset[str] | None) -> list[CaseRecord]: ...

    async def active_for_agent(self, agent_id: str, number: str) -> list[CaseRecord]:
        """The active cases assigned to the agent that hold the number (any creditor)."""
        ...

    async def next_event_seq(self, pk: int, count: int = 1) -> int:
        """Reserve `count` per-case event sequence numbers; returns the first."""
        ...

    async def appointments(self, pk: int, since: datetime) -> list[Appointment]: ...

    async def add_appointment(self, pk: int, number: str, at: datetime, attempt_id: str | None) -> None: ...

    async def ensure_creditor(self, creditor: str) -> None: ...

    async def record_repayment(
        self, creditor: str, case_id: str, amount: str | None, paid_on: date | None, settled: bool, by: str, now: datetime
    ) -> None: ...


class AttemptRepository(Protocol):
    async def history(
        self, number: str, case_pk: int, creditor: str, since: datetime, limit: int | None = None,
        now: datetime | None = None,
    ) -> list[HistoryEvent]:
        """Attempts and connected calls of this number (any case) OR this case since `since`."""
        ...

    async def expired(self, now: datetime, limit: int = 500) -> list[AttemptRecord]:
        """Authorised attempts whose validity ended before `now`."""
        ...

    async def add(self, attempt: AttemptRecord) -> None: ...

    async def get(self, attempt_id: str) -> AttemptRecord | None: ...

    async def find_pending(self, agent_id: str, number: str, now: datetime) -> AttemptRecord | None:
        """The oldest authorised attempt of this agent and number still valid at `now`."""
        ...

    async def set_state(
        self, attempt_id: str, state: str, *, connected: bool | None = None, at: datetime | None = None,
        only_from: frozenset[str] | None = None,
    ) -> bool:
        """Move the attempt to `state`; `connected` None keeps the flag, `at` None the time.
        With `only_from`, only if its state as stored now is one of those. Whether it moved."""
        ...

    async def for_case(self, case_pk: int, limit: int = 200) -> list[AttemptRecord]: ...

    async def get_outcome(self, attempt_id: str) -> OutcomeRecord | None: ...

    async def add_outcome(self, case_pk: int, outcome: OutcomeRecord) -> None: ...

    async def outcomes_for_case(self, case_pk: int) -> list[OutcomeRecord]: ...

    async def add_progress(self, progress: CallProgress, case_flags: str | None) -> None:
        """Append a call state of a click-to-dial attempt (`case_flags`: the case's flags then)."""
        ...

    async def progress(self, attempt_id: str) -> list[dict[str, Any]]:
        """The attempt's call states, oldest first."""
        ...

    async def attempt_for_call(self, call_id: str) -> str | None:
        """The attempt a SIP Call-ID was learnt for, if any."""
        ...

    async def add_call(self, call_id: str, attempt_id: str, pbx_id: str, first_seen: datetime) -> None: ...

    async def forget_requests(self, before: datetime, limit: int = 500) -> int:
        """Drop request identities stored before `before` (their retries are over)."""
        ...


class DecisionLog(Protocol):
    async def append(self, record: DecisionRecord) -> DecisionRecord:
        """Chain and store; returns the record with chain, seq, prev_hash and hash set.

        Appends to one chain are serialised by the implementation (SQLite: the write
        transaction; PostgreSQL: a transaction-scoped advisory lock on the chain).
        """
        ...

    async def get_many(self, decision_ids: Iterable[str]) -> dict[str, DecisionRecord]: ...

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
        """Records matching, newest last, keyset-paginated by row id."""
        ...

    async def blocked_summary(
        self, *, creditors: frozenset[str] | None, since: datetime | None, until: datetime | None, tz: str = ...
    ) -> dict[str, Any]:
        """Blocked decisions counted by rule, agent and day (days in zone `tz`)."""
        ...

    async def anchor(self) -> int:
        """Put every head written before the evidence key under it; returns how many."""
        ...

    async def chains(self) -> list[tuple[str, int, str]]:
        """(chain, head seq, head hash) of every chain."""
        ...

    def iterate(self, chain: str, batch: int = 5000) -> AsyncIterator[dict[str, Any]]:
        """Stored rows of a chain in (seq, id) order, as raw dicts."""
        ...

    async def chain_names(self) -> list[str]: ...

    async def heads(self) -> list[Head]:
        """Every chain's head with its keyed_from and MAC."""
        ...

    async def claim_key(self, key_id: str) -> str:
        """Record `key_id` as the id of the key the chains are MACed with, unless one is
        recorded already; returns the recorded id (the first instance's)."""
        ...


class Outbox(Protocol):
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
        """Write an event in the current transaction; returns its event_id."""
        ...

    async def pending(self, limit: int = 100) -> list[OutboxEvent]:
        """Unpublished events, oldest first (per case in case_seq order)."""
        ...

    async def mark_published(self, ids: Sequence[int], at: datetime) -> None: ...


class UserRepository(Protocol):
    async def by_token_hash(self, token_hash: str) -> Principal | None: ...

    async def by_name(self, name: str) -> Principal | None: ...

    async def add(self, name: str, role: str, creditors: frozenset[str], token_hash: str, now: datetime) -> Principal: ...

    # set_token, grant, set_disabled and revoke reach `UserChanges` followers when the
    # unit commits (and only then), so a cached token stops in every instance at once.
    async def set_token(self, name: str, token_hash: str) -> None: ...

    async def grant(self, name: str, creditor: str) -> None:
        """Scope an existing user to one more creditor."""
        ...

    async def set_disabled(self, name: str, disabled: bool) -> bool:
        """Disable or enable a user; False when there is no such user."""
        ...

    async def revoke(self, name: str, creditor: str) -> bool:
        """Take a creditor out of a user's scope; False when it was not in it."""
        ...

    async def end_sessions(self, name: str, before: datetime) -> None:
        """Console sessions `name` signed in before `before` no longer sign them in."""
        ...

    async def list_all(self) -> list[dict[str, Any]]:
        """Every user (name, role, creditors, disabled, created_at); never token hashes."""
        ...

    async def find(self, name: str) -> dict[str, Any] | None:
        """One user as `list_all` shows them, disabled or not."""
        ...


class AuditLog(Protocol):
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
        """Append to the data-change log (系统日志)."""
        ...


class ImportJobRepository(Protocol):
    """Import jobs and their staged rows (each row a JSON text, numbered from 1)."""

    async def create(self, job: ImportJob) -> None: ...

    async def stage(self, import_id: str, first_seq: int, payloads: Sequence[str]) -> None: ...

    async def get(self, import_id: str) -> ImportJob | None: ...

    async def lock(self, import_id: str) -> ImportJob | None:
        """`get`, holding the job's row until the transaction ends (PostgreSQL: FOR UPDATE)."""
        ...

    async def next_rows(self, import_id: str, after: int, limit: int) -> list[tuple[int, str]]:
        """Staged rows with seq > `after`, in seq order."""
        ...

    async def advance(self, import_id: str, through: int, summary: dict[str, int], now: datetime) -> None:
        """Rows up to `through` are applied: set rows_done and the summary, drop those rows."""
        ...

    async def finish(
        self, import_id: str, state: str, now: datetime, *, errors: Sequence[dict[str, Any]] | None = None,
        rows_total: int | None = None, encoding: str | None = None,
    ) -> None:
        """Set the state (and errors / total / encoding); a refused or failed job's staged rows are dropped."""
        ...

    async def unfinished(self) -> list[ImportJob]:
        """Jobs left validating or applying (a stopped or killed process), oldest first."""
        ...


# The dial's values are NamedTuples, immutable and typed like the frozen dataclasses
# elsewhere: each decision builds several, and a tuple is built in one step where a
# frozen dataclass sets every field through `object.__setattr__`.
class DialQuery(NamedTuple):
    """What one decision reads, asked in one call.

    The case: `case_id` (among `creditors`, None meaning all), else the case of the
    pending authorisation, else the agent's active cases holding `number`. The pending
    authorisation: by `attempt_id`, else (with `consume`) the agent's oldest one for
    `number` still valid at `at`; a query with no `number` (a recheck) reads the
    attempt's number and agent. History and appointments are read for the case only
    when exactly one is found (`dialer.dial_resolution.pick`) and no authorisation is
    to be consumed instead (`dialer.dial_resolution.consumable`)."""

    number: str
    agent_id: str
    at: datetime
    since: datetime
    case_id: str = ""
    creditors: frozenset[str] | None = None
    history_limit: int | None = None  # newest per (relation, answered) group; None: every attempt since `since`
    agent: bool = True  # read the agent's user
    consume: bool = False  # a pending authorisation is consumed rather than decided again
    attempt_id: str | None = None
    # The request's identity (scoped to its user, hashed): a request decided before is
    # answered from `DialInputs.replay` instead of being decided again.
    request: str | None = None


class DialReplay(NamedTuple):
    """The answer stored for a request identity: its decision, the attempt it reserved
    or consumed (None for a block), the digest of the request it answered, and when it
    was stored (the first arrival: a consumed click's decision is older)."""

    record: DecisionRecord
    attempt: AttemptRecord | None
    digest: str
    stored_at: datetime


class DialInputs(NamedTuple):
    """What `DialLedger.gather` found. `case` is the one case the query means, or None
    (then `history` and `appointments` are empty and `cases` says why)."""

    cases: tuple[CaseRecord, ...]
    case: CaseRecord | None
    pending: AttemptRecord | None
    pending_record: DecisionRecord | None  # the decision that authorised `pending` (when it is still live)
    agent: Principal | None
    history: tuple[HistoryEvent, ...]
    appointments: tuple[Appointment, ...]
    replay: DialReplay | None = None  # the query's request was decided before


class DialOutcome(NamedTuple):
    """What one decision writes. `record` is appended to its creditor's chain unless a
    pending authorisation is `consumed` (the record is then the one that authorised
    it). `attempt` is reserved. With `event_type`, one outbox event for case `case_pk`."""

    record: DecisionRecord
    attempt: AttemptRecord | None = None
    consumed: AttemptRecord | None = None  # now "dialing"
    event_type: str | None = None
    event_payload: dict[str, Any] | None = None
    case_pk: int | None = None
    at: datetime | None = None  # the event's time (default: the record's)
    request: str | None = None  # the request identity this answers (`DialQuery.request`)
    request_digest: str = ""  # what was asked under it: a reuse asking otherwise is refused


class DialLedger(Protocol):
    """Decide-and-reserve's two crossings of the store, inside one write unit: what the
    decision reads, then what it writes. Nothing is visible to others before the unit
    exits cleanly; an exception writes nothing. Store failures raise StoreUnavailable."""

    async def gather(self, query: DialQuery) -> DialInputs: ...

    async def apply(self, outcome: DialOutcome) -> DecisionRecord:
        """Write the outcome; returns the record as chained (seq, prev_hash, hash set).
        With `outcome.request`, the identity's row is written in the same unit; when
        another unit stored that identity first, raises `RequestDecided` (write nothing,
        roll back, and answer with the winner's replay)."""
        ...


class UnitOfWork(Protocol):
    # Read-only members: an implementation may hold subtypes (its own repositories).
    @property
    def imports(self) -> ImportJobRepository: ...
    @property
    def cases(self) -> CaseRepository: ...
    @property
    def attempts(self) -> AttemptRepository: ...
    @property
    def decisions(self) -> DecisionLog: ...
    @property
    def outbox(self) -> Outbox: ...
    @property
    def users(self) -> UserRepository: ...
    @property
    def audit(self) -> AuditLog: ...


SHARED_KEY_MARK = "~"


def shared_key(key: str) -> str:
    """`key` taken shared by a write unit: many at once, none while a unit holds it plainly."""
    return SHARED_KEY_MARK + key


class CaseStore(Protocol):
    """Opens units of work. Adapters are async context managers (`async with store:`)."""

    def write(self, lock_keys: Sequence[str] = ()) -> AbstractAsyncContextManager[UnitOfWork]:
        """A serialised write transaction.

        Decide-and-reserve passes `lock_keys` (``case:<id>``, ``number:<e164>``); the
        store guarantees two transactions with a common key never overlap (SQLite:
        BEGIN IMMEDIATE serialises all writers; PostgreSQL: advisory xact locks). A key
        made with `shared_key` is taken shared: such transactions overlap each other, but
        never one holding the plain key.
        """
        ...

    def ledger(self, lock_keys: Sequence[str] = ()) -> AbstractAsyncContextManager[DialLedger]:
        """A write unit for one decision; `lock_keys` as for `write`. A ledger may take
        more locks once it knows the case (PostgreSQL, a dial that names no case)."""
        ...

    def read(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """A read-only transaction (a consistent snapshot where the database offers one)."""
        ...

    def on_commit(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` after each write that committed (never after a rollback);
        returns the undo. What wakes the event relay."""
        ...

    async def ping(self) -> None:
        """Raise StoreUnavailable unless a trivial query answers."""
        ...

    def writer_wanted(self) -> bool:
        """Whether another process is waiting for a write lock this one may hold: a long
        writer (an import's batch) then commits what it has and lets it in."""
        ...


class EventPublisher(Protocol):
    async def publish(self, event: OutboxEvent) -> None:
        """Deliver one event (at least once; consumers dedupe by event_id)."""
        ...


class Pbx(Protocol):
    def admit(self) -> None:
        """Before a click-to-dial is decided: raise a 503-type error when no call could
        be placed now (not registered, every call slot taken), so nothing is reserved."""
        ...

    async def originate(self, attempt: AttemptRecord) -> None:
        """Ask the PBX to place an authorised attempt. Must not block for long."""
        ...


class RecordingStore(Protocol):
    async def available(self) -> bool:
        """True when a call placed now would be recorded in full."""
        ...


class Leadership(Protocol):
    """Who runs what must exist once across every instance (dialer/leadership.py).

    `token` is the fencing token of the term this instance holds (it grows with every
    term won anywhere in this process); work done for the leader checks `holds(token)`
    before each step, so a leader that lost its term stops before another starts."""

    instance: str

    @property
    def token(self) -> int | None:
        """The current term's token while this instance leads, else None."""
        ...

    def holds(self, token: int) -> bool:
        """True while the term `token` is still this instance's and not expired."""
        ...

    async def wait_elected(self) -> int:
        """Until this instance leads; the term's token."""
        ...

    async def wait_lost(self, token: int) -> None:
        """Until the term `token` is over."""
        ...

    async def describe(self) -> dict[str, Any]:
        """For /readyz and the console: this instance, the leader, whether we lead."""
        ...


class UserChanges(Protocol):
    """Changes to users (`UserRepository.set_token`, `set_disabled`, `grant`, `revoke`)
    committed by any instance on the store, heard as they commit."""

    def follow(self, on_change: Callable[[], None], on_lost: Callable[[], None]) -> AbstractAsyncContextManager[Any]:
        """While entered: `on_change()` once listening (what committed before may not have
        been heard) and after each committed change; `on_lost()` as soon as listening
        stops, until the next `on_change()` (a change committed in between is not heard).
        Entering waits a little for the first `on_change()`, not for ever."""
        ...


# Convenience for type checkers: a date-like next action
NextAction = date | None
