"""Attempts and outcomes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Iterable

import structlog
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db import tables as t
from dialer.model import (
    AttemptRecord,
    CallProgress,
    OutcomeRecord,
)
from policy.model import HistoryEvent
from adapters.db.queries import (
    HISTORY_CAP, I_ATTEMPT, Q_HISTORY, Q_HISTORY_GROUPS_CASE, Q_HISTORY_GROUPS_NUMBER, Q_HISTORY_NEWEST_CASE,
    Q_HISTORY_NEWEST_NUMBER,
)

log = structlog.get_logger("dialgate.store")

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


def _same(value: Any) -> Any:
    return value


def history_events(
    rows: Iterable[Any], creditor: str, bounded: bool, to_time: Callable[[Any], Any]
) -> list[HistoryEvent]:
    """History rows (id, at, case_id, number, relation, connected, creditor) as the
    policy's events; `bounded`: the two halves may hold the same attempt once each."""
    out: list[HistoryEvent] = []
    seen: set[Any] = set()
    for r in rows:
        if bounded:
            if r[0] in seen:
                continue  # this case's attempt on this number: in both halves
            seen.add(r[0])
        at = to_time(r[1])
        # Another creditor's case with the same id must not count as this case.
        cid = r[2] if r[6] == creditor else f"{r[6]}/{r[2]}"
        out.append(HistoryEvent(at=at, case_id=cid, number=r[3], relation=r[4], kind="attempt"))
        if r[5]:
            out.append(HistoryEvent(at=at, case_id=cid, number=r[3], relation=r[4], kind="connected"))
    return out


class SqlAttemptRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

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
        bounded = limit is not None and now is not None
        if not bounded:
            rows: Iterable[Any] = await self.conn.execute(
                Q_HISTORY, {"number": number, "case_pk": case_pk, "since": since}
            )
        else:
            cap = max(HISTORY_CAP, 4 * limit)  # type: ignore[operator]
            rows = []
            for param, value, newest, groups in (
                ("number", number, Q_HISTORY_NEWEST_NUMBER, Q_HISTORY_GROUPS_NUMBER),
                ("case_pk", case_pk, Q_HISTORY_NEWEST_CASE, Q_HISTORY_GROUPS_CASE),
            ):
                p: dict[str, Any] = {param: value, "since": since, "cap": cap}
                got = (await self.conn.execute(newest, p)).all()
                if len(got) >= cap:
                    p.update(k=limit, now=now)
                    got = (await self.conn.execute(groups, p)).all()
                rows.extend(got)
        return history_events(rows, creditor, bounded, _same)

    async def forget_requests(self, before: datetime, limit: int = 500) -> int:
        r = t.dial_requests.c
        old = select(r.identity).where(r.created_at < before).order_by(r.created_at).limit(limit)
        result = await self.conn.execute(delete(t.dial_requests).where(r.identity.in_(old.scalar_subquery())))
        return int(result.rowcount or 0)

    async def expired(self, now: datetime, limit: int = 500) -> list[AttemptRecord]:
        a = t.attempts.c
        rows = (
            await self.conn.execute(
                select(t.attempts).where(a.state == "authorised", a.valid_until < now).order_by(a.at).limit(limit)
            )
        ).mappings()
        return [_attempt(r) for r in rows]

    async def add(self, attempt: AttemptRecord) -> None:
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
        r = (await self.conn.execute(select(t.attempts).where(t.attempts.c.id == attempt_id))).mappings().first()
        return _attempt(r) if r else None

    async def find_pending(self, agent_id: str, number: str, now: datetime) -> AttemptRecord | None:
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

    async def set_state(
        self, attempt_id: str, state: str, *, connected: bool | None = None, at: datetime | None = None,
        only_from: frozenset[str] | None = None,
    ) -> bool:
        values: dict[str, Any] = {"state": state}
        if connected is not None:
            values["connected"] = connected
        if at is not None:
            values["at"] = at
        stmt = update(t.attempts).where(t.attempts.c.id == attempt_id)
        if only_from is not None:
            # Checked by the update itself: on PostgreSQL a move committed since this unit
            # read the row is seen here, where a check on the read would miss it.
            stmt = stmt.where(t.attempts.c.state.in_(sorted(only_from)))
        result = await self.conn.execute(stmt.values(**values))
        return bool(result.rowcount)

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

    # -- call progress (click-to-dial through the `sip_ua` PBX) and SIP Call-IDs ----------
    async def add_progress(self, progress: CallProgress, case_flags: str | None) -> None:
        await self.conn.execute(
            insert(t.pbx_attempt_progress).values(
                attempt_id=progress.attempt_id, state=progress.state, at=progress.at, cause=progress.cause,
                rule_id=progress.rule_id, detail=progress.detail, recording_id=progress.recording_id,
                case_flags=case_flags,
            )
        )

    async def progress(self, attempt_id: str) -> list[dict[str, Any]]:
        p = t.pbx_attempt_progress
        rows = (await self.conn.execute(select(p).where(p.c.attempt_id == attempt_id).order_by(p.c.id))).mappings()
        return [dict(r) for r in rows]

    async def attempt_for_call(self, call_id: str) -> str | None:
        c = t.mqtt_pbx_calls.c
        row = (await self.conn.execute(select(c.attempt_id).where(c.call_id == call_id))).first()
        return row.attempt_id if row is not None else None

    async def add_call(self, call_id: str, attempt_id: str, pbx_id: str, first_seen: datetime) -> None:
        await self.conn.execute(
            insert(t.mqtt_pbx_calls).values(call_id=call_id, attempt_id=attempt_id, pbx_id=pbx_id, first_seen=first_seen)
        )


# ---------------------------------------------------------------------------------
# Decision log (hash chain)
# ---------------------------------------------------------------------------------
