"""The decision log: one hash chain per creditor."""

from __future__ import annotations

from dataclasses import replace
from collections import Counter
from datetime import datetime
from typing import Any, AsyncIterator, Iterable
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import and_, func, literal, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db import tables as t
from dialer import evidence as evidence_chain
from dialer.evidence import EvidenceKey
from dialer.model import (
    REVIEWED_KINDS,
    DecisionRecord,
)
from adapters.db.ledger_pg import chain_for
from adapters.db.queries import I_CHAIN_HEAD, I_DECISION, Q_CHAIN_HEAD, Q_CHAIN_HEAD_LOCKED, Q_CHAIN_HEAD_UPDATE
from dialer.chain import NO_KEY, decision_from_record, first_keyed_seq, link_decision

log = structlog.get_logger("dialgate.store")

class SqlDecisionLog:
    """Append-only, hash-chained per creditor.

    One chain per creditor keeps one bank's log verifiable (and exportable) on its own,
    and on PostgreSQL lets different creditors' decisions commit in parallel: only
    appends to the same chain queue on its head row's lock, which is held to commit.
    """

    def __init__(
        self, conn: AsyncConnection, is_postgres: bool, evidence: EvidenceKey | None = None, shards: int = 1,
    ) -> None:
        self.conn = conn
        self.is_postgres = is_postgres
        self.evidence = evidence or NO_KEY
        self.shards = shards  # `[store] chain_shards`: the chain is the case's, as `PgDialLedger` appends

    async def append(self, record: DecisionRecord) -> DecisionRecord:
        chain = chain_for(record.creditor, record.case_id, self.shards)
        if self.is_postgres:
            # the advisory lock serialises a missing head's creation, the row lock every append
            await self.conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": "chain:" + chain}
            )
        head = (await self.conn.execute(Q_CHAIN_HEAD_LOCKED if self.is_postgres else Q_CHAIN_HEAD, {"chain": chain})).first()
        key = self.evidence
        rec, body = link_decision(record, chain, head, key)
        seq, prev, digest = rec.seq, rec.prev_hash, rec.hash
        keyed_from = first_keyed_seq(head, seq)
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

    async def other_heads(self) -> list[evidence_chain.Head]:
        """The heads of the evidence chains beside the decision log's (the destruction
        register's), same shape as `heads`."""
        h = t.evidence_heads.c
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

    async def claim_key(self, key_id: str) -> str:
        """Record `key_id` as the chains' key unless one is recorded; the recorded one.
        Two instances starting at once: the insert that commits first wins, the other
        reads it."""
        await self.conn.execute(
            text("INSERT INTO evidence_key (name, key_id) VALUES ('chains', :k) ON CONFLICT (name) DO NOTHING"),
            {"k": key_id},
        )
        row = (await self.conn.execute(select(t.evidence_key.c.key_id).where(t.evidence_key.c.name == "chains"))).first()
        return str(row[0]) if row is not None else key_id

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
