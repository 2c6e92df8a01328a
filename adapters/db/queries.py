"""The store's Core statements, built once: constructing a Core statement and its
cache key costs more CPU than SQLite takes to run it."""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import and_, bindparam, insert, select, union_all, update

from adapters.db import tables as t

log = structlog.get_logger("dialgate.store")

# Hot-path statements, built once: constructing a Core statement and its cache key
# costs more CPU than SQLite takes to run it.
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
HISTORY_CAP = 64  # rows per branch read before reading by group


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
# PostgreSQL: the head row's lock is what orders a chain's appends (the dial ledger's
# `ledger_pg.CHAIN_HEAD` takes only that one); FOR UPDATE also returns the head as the
# last append committed it, where a plain read would give this statement's snapshot.
Q_CHAIN_HEAD_LOCKED = Q_CHAIN_HEAD.with_for_update()
Q_CHAIN_HEAD_UPDATE = (
    update(t.chain_heads)
    .where(t.chain_heads.c.chain == bindparam("chain_key"))
    .values(seq=bindparam("seq"), hash=bindparam("hash"), keyed_from=bindparam("keyed_from"), mac=bindparam("mac"))
)


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


