"""`PgDialLedger`: PostgreSQL's decide-and-reserve in asyncpg, on a connection of its own.

Through SQLAlchemy Core a dial ran about a dozen statements, each a round trip and
several times its server time in Python. Here the dial's usual path is five round trips,
four for a named case, none through SQLAlchemy (`pg_units.PgUnits` opens and ends
the unit):

* BEGIN and the unit's locks, one simple query (`pg_units.begin_sql`);
* `gather`: one statement (`READ_BY_ID` / `READ_FOR_AGENT`) returns the candidate cases
  with their contacts, the pending authorisation, the agent, the request identity's
  row and, when exactly one case is found, that case's bounded history and
  appointments (anonymous row arrays, decoded by asyncpg without a mapping per row).
  The locks a dial without a case id needs are taken in one statement, then the read
  runs again: a statement's snapshot is taken when it starts, so a lock and the read it
  guards are never one statement. Should that read find a case whose lock is not held
  (moved to the agent meanwhile), the unit goes to the Core path, which locks it too. When the unit already holds the case's and the
  number's locks, the read also locks the case's chain head (`FOR UPDATE` returns its
  newest committed version after the wait, whatever the statement's snapshot).
* `apply`: `CHAIN_HEAD` locks the chain's head row unless the read did, the link is
  computed in Python (the evidence key never goes to the server), then `WRITE` inserts
  the request identity, the attempt, the decision and the outbox event, moves the chain
  head and numbers the case's event, all in one statement;
* COMMIT.

The chain's serialisation is the head row's lock, held to commit; `SqlDecisionLog`
reads the head `FOR UPDATE` too, and the chain's advisory lock serialises only the
creation of a missing head. With `[store] chain_shards` above 1 a creditor's dial
decisions are spread over that many chains (`chain_for`): a case always joins the same
one, where its case lock already orders its decisions, so unrelated cases commit on
different head rows instead of queueing on one. Each chain is verified on its own by
`dialgate audit verify`, as the creditors' chains always were. Rare shapes (a recheck,
consuming an authorisation, a history past its cap, a retried request's answer) switch
the unit to the Core path before anything is written. Statements are prepared once per
connection (asyncpg's statement cache).
"""

from __future__ import annotations

import secrets
import zlib
from typing import Any, Awaitable, Callable, Sequence

import asyncpg

from adapters.db.attempts_repo import history_events
from adapters.db.ledger_core import _NOTHING, agent_key
from adapters.db.queries import HISTORY_CAP
from dialer.case_merge import flags_set
from dialer.chain import canonical_json, first_keyed_seq, link_decision
from dialer.dial_resolution import consumable, pick
from dialer.errors import RequestDecided, StoreRefusedValue, StoreUnavailable
from dialer.evidence import EvidenceKey
from dialer.ids import new_id
from dialer.model import AttemptRecord, CaseRecord, ContactRecord, DecisionRecord, Principal
from dialer.ports import DialInputs, DialLedger, DialOutcome, DialQuery
from policy.model import Appointment

_CASE_COLS = (
    "id, creditor, case_id, debtor_name, status, commission_start, commission_end, assigned_agent, flags, "
    "amount_due, overdue_days, follow_up_status, next_action_date, event_seq, updated_at, creditor_flags, "
    "agency_flags, status_hold, history_seq"
)
_ATTEMPT_COLS = "id, case_pk, creditor, case_id, number, relation, agent_id, channel, state, at, valid_until, decision_id, connected"
_HIST_COLS = "id, at, case_id, number, relation, connected, creditor"

# $1 case_id, $2 creditors (NULL: all), $3 agent_id, $4 number, $5 attempt_id, $6 consume,
# $7 at, $8 read the agent, $9 request identity, $10 since, $11 history cap per branch, $12 the chain shard
# (`chain_shard`) of case $13, whose head row the read locks when that case is the one found; NULL: none
_READ = """
WITH cand AS ({cand}),
one AS (SELECT id FROM cand WHERE (SELECT count(*) FROM cand) = 1)
SELECT
  ARRAY(SELECT ROW(cand.*) FROM cand ORDER BY id) AS cases,
  ARRAY(SELECT ROW(t.case_pk, t.number, t.relation, t.name, t.tz, t.status, t.do_not_call, t.source, t.added_at)
        FROM contacts t WHERE t.case_pk IN (SELECT id FROM cand) ORDER BY t.id) AS contacts,
  CASE WHEN $5::text IS NOT NULL THEN (SELECT ROW({attempt}) FROM attempts WHERE id = $5)
       WHEN $6 THEN (SELECT ROW({attempt}) FROM attempts WHERE agent_id = $3 AND state = 'authorised'
                     AND number = $4 AND valid_until >= $7 ORDER BY at LIMIT 1) END AS pending,
  CASE WHEN $8 THEN (SELECT ROW(u.id, u.name, u.role,
                                ARRAY(SELECT creditor::text FROM user_creditors WHERE user_id = u.id))
                     FROM users u WHERE u.name = $3 AND u.disabled IS false) END AS agent,
  (SELECT ROW(decision_id, attempt_id, request_digest) FROM dial_requests WHERE identity = $9) AS replay,
  (SELECT id FROM one) AS one,
  ARRAY(SELECT ROW(h.*) FROM (SELECT {hist} FROM attempts WHERE number = $4 AND at >= $10 AND state != 'released'
                              ORDER BY at DESC LIMIT $11) h) AS hist_number,
  ARRAY(SELECT ROW(h.*) FROM (SELECT {hist} FROM attempts WHERE case_pk = (SELECT id FROM one) AND at >= $10
                              AND state != 'released' ORDER BY at DESC LIMIT $11) h) AS hist_case,
  ARRAY(SELECT ROW(number, at) FROM appointments WHERE case_pk = (SELECT id FROM one) AND at >= $10) AS appointments,
  head_chain.name AS head_chain,
  CASE WHEN head_chain.name IS NOT NULL THEN (SELECT ROW(h.seq, h.hash, h.keyed_from) FROM chain_heads h
                                              WHERE h.chain = head_chain.name FOR UPDATE) END AS head
FROM (SELECT (SELECT CASE WHEN c.creditor = '' THEN '-'
                          WHEN $12 = 0 OR length(c.creditor) + 1 + length($12::text) > 64 THEN c.creditor
                          ELSE c.creditor || '~' || $12::text END
              FROM cand c WHERE $12::int IS NOT NULL AND c.id = (SELECT id FROM one) AND c.case_id = $13::text)
      AS name) AS head_chain
"""
READ_BY_ID = _READ.format(
    cand=f"SELECT {_CASE_COLS} FROM cases WHERE case_id = $1 AND ($2::text[] IS NULL OR creditor = ANY($2))",
    attempt=_ATTEMPT_COLS, hist=_HIST_COLS,
)
READ_FOR_AGENT = _READ.format(
    cand=(f"SELECT {_CASE_COLS} FROM cases WHERE id IN (SELECT case_pk FROM contacts WHERE number = $4) "
          "AND status = 'active' AND assigned_agent = $3 AND $1::text = '' AND ($2::text[] IS NULL OR creditor = ANY($2))"),
    attempt=_ATTEMPT_COLS, hist=_HIST_COLS,
)
# Keys in the order given (sorted by the caller, as every unit takes them): no deadlock.
# Each lock key `k`; one marked shared (dialer.ports.shared_key) is taken shared on the plain key.
LOCK_EACH = (
    "CASE WHEN left(k, 1) = '~' THEN pg_advisory_xact_lock_shared(hashtextextended(substr(k, 2), 0))"
    " ELSE pg_advisory_xact_lock(hashtextextended(k, 0)) END"
)
LOCKS = f"SELECT {LOCK_EACH} FROM unnest($1::text[]) AS k"
CHAIN_HEAD = "SELECT seq, hash, keyed_from FROM chain_heads WHERE chain = $1 FOR UPDATE"
CHAIN_CREATE_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
# $1-$5 the request identity's row (skipped when $1 is NULL); $6-$18 the attempt (skipped
# when $6 is NULL); $19-$32 the decision; $33, $34 the head's keyed_from and MAC; $35 the
# case whose event number is taken; $36-$39 the event (skipped when its type $36 is NULL),
# $40 the placeholder its payload holds for that number.
WRITE = """
WITH req AS (
  INSERT INTO dial_requests (identity, decision_id, attempt_id, request_digest, created_at)
  SELECT $1::text, $2::text, $3::text, $4::text, $5::timestamptz WHERE $1::text IS NOT NULL
  ON CONFLICT (identity) DO NOTHING RETURNING 1
), att AS (
  INSERT INTO attempts (id, case_pk, creditor, case_id, number, relation, agent_id, channel, state, at, valid_until,
                        decision_id, connected)
  SELECT $6::text, $7::bigint, $8::text, $9::text, $10::text, $11::text, $12::text, $13::text, $14::text,
         $15::timestamptz, $16::timestamptz, $17::text, $18::boolean WHERE $6::text IS NOT NULL
), dec AS (
  INSERT INTO decisions (chain, seq, decision_id, kind, at, creditor, case_id, agent_id, allowed, rule_id, attempt_id,
                         record, prev_hash, hash)
  VALUES ($19::text, $20::bigint, $21::text, $22::text, $23::timestamptz, $24::text, $25::text, $26::text, $27::boolean,
          $28::text, $29::text, $30::text, $31::text, $32::text)
), head AS (
  INSERT INTO chain_heads (chain, seq, hash, keyed_from, mac) VALUES ($19::text, $20::bigint, $32::text, $33::bigint, $34::text)
  ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, keyed_from = excluded.keyed_from,
                                    mac = excluded.mac
), num AS (
  UPDATE cases SET event_seq = event_seq + 1 WHERE id = $35 AND $36::text IS NOT NULL RETURNING event_seq
), ev AS (
  INSERT INTO outbox (event_id, type, creditor, case_id, case_seq, occurred_at, payload, published_at)
  SELECT $37::text, $36::text, $24::text, $25::text, n.seq, $38::timestamptz, replace($39::text, $40::text, coalesce(n.seq::text, 'null')), NULL
  FROM (SELECT (SELECT event_seq FROM num) AS seq) n WHERE $36::text IS NOT NULL
)
SELECT (SELECT count(*) FROM req)
"""


def store_error(exc: BaseException) -> Exception:
    """What a failed asyncpg call means to the caller (as `store._store_error` for Core):
    a value the server refused as data is the request's fault, everything else the store's."""
    if isinstance(exc, asyncpg.DataError):  # also a parameter the driver could not encode
        return StoreRefusedValue(f"a value was refused by the store: {type(exc).__name__}")
    return StoreUnavailable(f"store error: {type(exc).__name__}: {exc}")


# InternalClientError: a connection asyncpg found mid-operation (left consuming an error
# while its server went away): the store's failure, answered 503, never a 500.
PG_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError)


def _attempt(r: Any) -> AttemptRecord:
    return AttemptRecord(
        attempt_id=r[0], case_pk=r[1], creditor=r[2], case_id=r[3], number=r[4], relation=r[5], agent_id=r[6],
        channel=r[7], state=r[8], at=r[9], valid_until=r[10], decision_id=r[11], connected=bool(r[12]),
    )


def _cases(rows: list[Any], contacts: list[Any]) -> list[CaseRecord]:
    by_case: dict[int, list[ContactRecord]] = {}
    for c in contacts:
        by_case.setdefault(c[0], []).append(ContactRecord(c[1], c[2], c[3], c[4], c[5], bool(c[6]), c[7], c[8]))
    return [
        CaseRecord(
            pk=r[0], creditor=r[1], case_id=r[2], debtor_name=r[3], status=r[4], commission_start=r[5],
            commission_end=r[6], assigned_agent=r[7], flags=flags_set(r[8]), amount_due=r[9], overdue_days=r[10],
            follow_up_status=r[11], next_action_date=r[12], event_seq=r[13], contacts=tuple(by_case.get(r[0], ())),
            updated_at=r[14], creditor_flags=flags_set(r[15]), agency_flags=flags_set(r[16]), status_hold=r[17],
            history_seq=r[18],
        )
        for r in rows
    ]


def chain_shard(case_id: str, shards: int) -> int:
    """Which of a creditor's `shards` chains a case joins (0: the creditor's own)."""
    return zlib.crc32(case_id.encode("utf-8")) % shards if shards > 1 else 0


def chain_for(creditor: str, case_id: str, shards: int) -> str:
    """The chain a decision about `case_id` joins: one of its creditor's `shards` chains,
    the first named as the creditor (one shard is the creditor's single chain), the others
    `<creditor>~<n>`. A case stays on one chain, where its case lock already orders its
    decisions; unrelated cases spread over the chains and do not wait for each other's
    commits."""
    if not creditor:
        return "-"
    if shards <= 1:
        return creditor
    shard = chain_shard(case_id, shards)
    name = creditor if shard == 0 else f"{creditor}~{shard}"  # no creditor id holds "~" (dialer.imports)
    return name if len(name) <= 64 else creditor  # the column's width


def _same(value: Any) -> Any:
    return value


class PgDialLedger:
    """The `DialLedger` of a PostgreSQL unit on its own asyncpg connection (`raw`), inside
    the transaction `pg_units.PgUnits` began with the unit's first locks (`held`). A
    shape this module does not write in one or two statements switches the unit to the
    Core path: `core(held)` rolls this transaction back (it has written nothing yet), opens
    a SQLAlchemy unit holding the same locks and returns its ledger, which then answers
    every further `gather` and `apply` of the unit."""

    def __init__(
        self, raw: Any, held: Sequence[str], core: Callable[[Sequence[str]], Awaitable[DialLedger]], evidence: EvidenceKey,
        *, events: bool = True, shards: int = 1,
    ) -> None:
        self.raw = raw
        self.held = set(held)
        self._core = core
        self._switched: DialLedger | None = None
        self.evidence = evidence
        self.events = events
        self.shards = shards
        # Stands for the case's event number in a payload until the server knows it.
        self._seq_mark = f"\u2063case_seq:{secrets.token_hex(8)}"
        self._head: tuple[str, Any] | None = None  # a chain and its head row, locked by the read

    @property
    def switched(self) -> bool:
        """Whether the unit went to the Core path (its transaction is the Core unit's)."""
        return self._switched is not None

    async def _to_core(self) -> DialLedger:
        if self._switched is None:
            self._switched = await self._core(sorted(self.held))
        return self._switched

    async def gather(self, query: DialQuery) -> DialInputs:
        if self._switched is not None:
            return await self._switched.gather(query)
        if not query.number or query.history_limit is None or query.at is None:
            return await (await self._to_core()).gather(query)  # a recheck or an unbounded history
        try:
            inputs = await self._gather(query)
        except PG_FAILURES as exc:
            raise store_error(exc) from exc
        if inputs is None:
            return await (await self._to_core()).gather(query)
        return inputs

    async def _read(self, query: DialQuery, head_case: str | None) -> Any:
        """The read; it also locks `head_case`'s chain head when that case is the one it
        finds. Only a read after which the gather takes no more locks may: a head held
        while waiting for a case lock could wait crosswise with a unit holding that case
        lock and waiting for the head."""
        cap = max(HISTORY_CAP, 4 * int(query.history_limit or 0))
        sql = READ_BY_ID if query.case_id else READ_FOR_AGENT
        scope = None if query.creditors is None else sorted(query.creditors)
        shard = chain_shard(head_case, self.shards) if head_case else None
        row = await self.raw.fetchrow(
            sql, query.case_id, scope, query.agent_id, query.number, query.attempt_id, query.consume, query.at,
            query.agent, query.request, query.since, cap, shard, head_case,
        )
        if row["head_chain"] is not None:
            self._head = (row["head_chain"], row["head"])
        return row, cap

    async def _gather(self, query: DialQuery) -> DialInputs | None:
        """The inputs in one statement (two, and the locks, when the case was not named);
        None for a shape the Core path reads: an authorisation to consume, a retried
        request's answer, a history past its cap."""
        named = query.case_id and {f"case:{query.case_id}", f"number:{query.number}"} <= self.held
        row, cap = await self._read(query, query.case_id if named else None)
        if row["pending"] is not None and not query.case_id:
            return None  # the case is the authorisation's
        cases = _cases(row["cases"], row["contacts"])
        if cases:
            missing = sorted(({f"case:{c.case_id}" for c in cases} | {f"number:{query.number}"}
                              | agent_key(query)) - self.held)
            if missing:
                await self.raw.execute(LOCKS, missing)
                self.held.update(missing)
                # what was read before the lock may have changed meanwhile
                # (and no lock is taken after this read)
                row, cap = await self._read(query, query.case_id or (cases[0].case_id if len(cases) == 1 else None))
                if row["pending"] is not None and not query.case_id:
                    return None
                cases = _cases(row["cases"], row["contacts"])
                if {f"case:{c.case_id}" for c in cases} - self.held:
                    # a case that was not there before the lock (an import moved it here):
                    # the Core path takes its lock too, as this read may hold a chain head
                    return None
        if query.request is not None and row["replay"] is not None:
            return None  # answered from the request's row, on the Core path
        pending = _attempt(row["pending"]) if row["pending"] is not None else None
        case = pick(query.case_id, cases, pending)
        agent = None
        if query.agent and row["agent"] is not None:
            u = row["agent"]
            agent = Principal(user_id=u[0], name=u[1], role=u[2], creditors=frozenset(u[3]))
        if case is None:
            return DialInputs(tuple(cases), None, pending, None, agent, _NOTHING, _NOTHING)
        if consumable(query, case, pending):
            return None
        by_number, by_case = row["hist_number"], row["hist_case"]
        if row["one"] != case.pk or len(by_number) >= cap or len(by_case) >= cap:
            return None  # a history past its cap is read by group
        history = history_events([*by_number, *by_case], case.creditor, True, _same)
        appointments = [Appointment(number=a[0], at=a[1]) for a in row["appointments"]]
        return DialInputs(tuple(cases), case, pending, None, agent, tuple(history), tuple(appointments))

    async def apply(self, outcome: DialOutcome) -> DecisionRecord:
        if self._switched is not None:
            return await self._switched.apply(outcome)
        if outcome.consumed is not None:
            # only the Core path hands out an authorisation to consume: nothing to chain here
            raise StoreUnavailable("an authorisation is consumed only in the unit that read it")
        try:
            return await self._apply(outcome)
        except PG_FAILURES as exc:
            raise store_error(exc) from exc

    async def _apply(self, outcome: DialOutcome) -> DecisionRecord:
        raw = self.raw
        record = outcome.record
        chain = chain_for(record.creditor, record.case_id, self.shards)
        if self._head is not None and self._head[0] == chain:
            head = self._head[1]  # locked by the read, its newest committed version
        else:
            head = await raw.fetchrow(CHAIN_HEAD, chain)
        if head is None:  # a new chain: its creation is serialised by the chain's advisory lock
            await raw.execute(CHAIN_CREATE_LOCK, "chain:" + chain)
            head = await raw.fetchrow(CHAIN_HEAD, chain)
        key = self.evidence
        rec, body = link_decision(record, chain, head, key)
        keyed_from = first_keyed_seq(head, rec.seq)
        mac = key.head_mac(chain, rec.seq, rec.hash, keyed_from)
        a = outcome.attempt
        at = outcome.at or record.at
        event = outcome.event_type if self.events else None
        payload = None
        event_id = None
        if event is not None:
            event_id = new_id()
            mark = self._seq_mark
            body_json: dict[str, Any] = {
                "event_id": event_id, "type": event, "occurred_at": at.isoformat(), "creditor": rec.creditor,
                "case_id": rec.case_id, "case_seq": mark if outcome.case_pk is not None else None,
                **(outcome.event_payload or {}),
            }
            payload = canonical_json(body_json)  # the Core outbox's text
        taken = await raw.fetchval(
            WRITE,
            outcome.request, record.decision_id, a.attempt_id if a else None, outcome.request_digest, at,
            a.attempt_id if a else None, a.case_pk if a else None, a.creditor if a else None,
            a.case_id if a else None, a.number if a else None, a.relation if a else None,
            a.agent_id if a else None, a.channel if a else None, a.state if a else None, a.at if a else None,
            a.valid_until if a else None, a.decision_id if a else None, a.connected if a else None,
            chain, rec.seq, rec.decision_id, rec.kind, rec.at, rec.creditor, rec.case_id, rec.agent_id, rec.allowed,
            rec.rule_id, rec.attempt_id, body, rec.prev_hash, rec.hash, keyed_from, mac,
            outcome.case_pk, event, event_id, at, payload, f'"{self._seq_mark}"',
        )
        if outcome.request is not None and taken != 1:
            raise RequestDecided(outcome.request)  # the unit rolls back what this statement wrote
        return rec

