"""`SqlAlchemyRecordingWatch`: connected calls expected to leave a recording, and the
ones that have not."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, insert, select, update

from adapters.db import tables as gate_tables
from adapters.db.recording_rows import write_events
from adapters.db.recordings_tables import recording_expectations, recordings
from recordings import events as recording_events
from dialer.masking import mask_number


if TYPE_CHECKING:
    from adapters.db.recordings_repo import Transactions

_att = gate_tables.attempts.c
_exp = recording_expectations.c


class SqlAlchemyRecordingWatch:
    """Proof that every connected call was recorded (`[recordings] expect_within`).

    Reads the gate's attempts (connected, outcome logged) and the vault's recordings
    of those attempts; writes only its own table and, with each alert, an
    `alert.recording_missing` event into the outbox in the same transaction.
    """

    def __init__(self, store: Transactions) -> None:
        self._store = store

    async def sweep(
        self, now: datetime, expect_within: timedelta, lookback: timedelta = timedelta(days=2)
    ) -> list[dict[str, Any]]:
        """Start expecting recordings of newly ended connected calls, close the
        expectations whose recording arrived, and alert (once) those past due. The
        alerts raised now, as dicts."""
        has_recording = (
            select(recordings.c.recording_id)
            .where(recordings.c.source_kind == "attempt", recordings.c.source_id == _att.id)
            .exists()
        )
        known = select(_exp.attempt_id).where(_exp.attempt_id == _att.id).exists()
        async with self._store.write() as uow:
            conn = uow.conn
            fresh = (
                await conn.execute(
                    select(_att.id, _att.creditor, _att.case_id, _att.agent_id, _att.number, _att.at).where(
                        _att.connected.is_(True),
                        _att.state == "completed",
                        _att.at >= now - lookback,
                        ~has_recording,
                        ~known,
                    )
                )
            ).all()
            for r in fresh:
                await conn.execute(
                    insert(recording_expectations).values(
                        attempt_id=r.id, creditor=r.creditor, case_id=r.case_id, agent=r.agent_id,
                        number_masked=mask_number(r.number), dialed_at=r.at, seen_at=now, due_at=now + expect_within,
                    )
                )
            arrived = (
                await conn.execute(
                    select(_exp.attempt_id, recordings.c.recording_id)
                    .join(
                        recordings,
                        and_(recordings.c.source_kind == "attempt", recordings.c.source_id == _exp.attempt_id),
                    )
                    .where(_exp.resolved_at.is_(None))
                )
            ).all()
            for r in arrived:
                await conn.execute(
                    update(recording_expectations)
                    .where(_exp.attempt_id == r.attempt_id)
                    .values(recording_id=r.recording_id, resolved_at=now)
                )
            due = (
                await conn.execute(
                    select(recording_expectations).where(
                        _exp.resolved_at.is_(None), _exp.alerted_at.is_(None), _exp.due_at <= now
                    )
                )
            ).all()
            alerts = []
            for r in due:
                await conn.execute(
                    update(recording_expectations).where(_exp.attempt_id == r.attempt_id).values(alerted_at=now)
                )
                ev = recording_events.missing(
                    attempt_id=r.attempt_id, creditor=r.creditor, case_id=r.case_id, agent=r.agent,
                    number_masked=r.number_masked, dialed_at=r.dialed_at, ended_seen_at=r.seen_at, at=now,
                )
                await write_events(uow, (ev,))
                alerts.append({"attempt_id": r.attempt_id, "creditor": r.creditor, "case_id": r.case_id,
                               "agent": r.agent, "number": r.number_masked, "dialed_at": r.dialed_at})
        return alerts

    async def missing(
        self, creditors: frozenset[str] | None, since: datetime, until: datetime
    ) -> list[dict[str, Any]]:
        """Connected calls dialled in [since, until) whose recording is overdue and
        has not arrived, oldest first."""
        q = select(recording_expectations).where(
            _exp.resolved_at.is_(None), _exp.alerted_at.is_not(None), _exp.dialed_at >= since, _exp.dialed_at < until
        )
        if creditors is not None:
            q = q.where(_exp.creditor.in_(sorted(creditors)))
        async with self._store.read() as uow:
            rows = (await uow.conn.execute(q.order_by(_exp.dialed_at))).all()
        return [
            {"attempt_id": r.attempt_id, "creditor": r.creditor, "case_id": r.case_id, "agent": r.agent,
             "number": r.number_masked, "dialed_at": r.dialed_at, "due_at": r.due_at}
            for r in rows
        ]

    async def open_count(self, creditors: frozenset[str] | None = None) -> int:
        q = select(func.count()).select_from(recording_expectations).where(
            _exp.resolved_at.is_(None), _exp.alerted_at.is_not(None)
        )
        if creditors is not None:
            q = q.where(_exp.creditor.in_(sorted(creditors)))
        async with self._store.read() as uow:
            return int((await uow.conn.execute(q)).scalar() or 0)
