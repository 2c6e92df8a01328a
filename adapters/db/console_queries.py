"""`SqlAlchemyConsoleQueries`: the web console's port (`dialer.console.ports.ConsoleQueries`)
over the gate service's case store, and over the recordings vault when one is wired.

Reads run in the store's read units of work (`store.read()`), with SQLAlchemy Core on
the service's tables; nothing here writes to the store. The blocked-dial view is built
for a large decision log: keyset paging newest first on (at, id), counts and chart
groupings as aggregate queries the indexes of migration `0002_console` cover, so no
decision record is decoded except the page shown.

Scope: every query is restricted to the principal's creditors (admin: all) in SQL, and
an id outside the scope raises `NotFound` exactly like an unknown id.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import insert, select

from adapters.db import tables as t
from adapters.db.console_blocked import BlockedDialQueries
from adapters.db.console_health import HealthQueries
from adapters.db.console_recordings import RecordingQueries, actor
from dialer.chain import decision_from_record
from dialer.console.ports import (
    CaseEvent,
    CaseView,
    ContactView,
    HistoryView,
    WorklistItem,
    LegalHoldView,
    NotFound,
    OutcomeView,
    Principal,
    TimelineEntry,
)
from dialer.errors import Unauthenticated
from dialer.masking import mask_number, mask_optional, mask_text


# Case-state changes worth showing on the case page, from the data-change log.
CASE_EVENT_LIMIT = 200
CASE_HISTORY_LIMIT = 200  # the newest entries of the case history on its page


def _principal(p: Any) -> Principal:
    # The console keys sessions by user name: unique, and what the decision log records.
    return Principal(user_id=p.name, name=p.name, role=p.role, creditors=frozenset(p.creditors))


class SqlAlchemyConsoleQueries(BlockedDialQueries, RecordingQueries, HealthQueries):
    """`ConsoleQueries` over `services.store` (and `vault`, a `recordings.vault.Vault`)."""

    # -- users -------------------------------------------------------------------------
    async def authenticate(self, token: str) -> Principal | None:
        try:
            p = await self.services.auth.authenticate(f"Bearer {token}")
        except Unauthenticated:
            return None
        return _principal(p)

    async def principal(self, user_id: str) -> Principal | None:
        async with self.store.read() as uow:
            p = await uow.users.by_name(user_id)
        return _principal(p) if p is not None else None

    async def sign_out(self, sid: str, until: float) -> None:
        now = self.services.clock.now()
        async with self.store.write() as uow:
            await uow.conn.execute(t.console_signouts.delete().where(t.console_signouts.c.expires_at < now))
            exists = await uow.conn.execute(select(t.console_signouts.c.sid).where(t.console_signouts.c.sid == sid))
            if exists.first() is None:
                await uow.conn.execute(insert(t.console_signouts).values(
                    sid=sid, expires_at=datetime.fromtimestamp(until, timezone.utc)))

    async def signed_out(self, sid: str, user_id: str | None = None, issued_at: int = 0) -> bool:
        async with self.store.read() as uow:
            row = await uow.conn.execute(select(t.console_signouts.c.sid).where(t.console_signouts.c.sid == sid))
            if row.first() is not None:
                return True
            if user_id is None:
                return False
            c = t.console_session_cutoffs
            cut = (await uow.conn.execute(select(c.c.not_before).where(c.c.user_name == user_id))).scalar()
        # Sessions are stamped in whole seconds: one opened in the cutoff's own second (the
        # new token's first sign-in) stays.
        return cut is not None and issued_at < int(cut.timestamp())

    # -- cases -------------------------------------------------------------------------------
    async def case(self, who: Principal, creditor: str, case_id: str) -> CaseView:
        if not who.sees(creditor):
            raise NotFound(f"no case {case_id}", f"没有案件 {case_id}")
        d = t.decisions.c
        a = t.audit_log.c
        async with self.store.read() as uow:
            c = await uow.cases.get(creditor, case_id)
            if c is None:
                raise NotFound(f"no case {case_id}", f"没有案件 {case_id}")
            outcomes = {o.attempt_id: o for o in await uow.attempts.outcomes_for_case(c.pk)}
            drows = (
                await uow.conn.execute(
                    select(d.record, d.hash)
                    .where(d.creditor == creditor, d.case_id == case_id, d.kind == "dial")
                    .order_by(d.at.desc(), d.id.desc())
                    .limit(500)
                )
            ).all()
            erows = (
                await uow.conn.execute(
                    select(a.at, a.actor, a.action, a.details)
                    .where(a.creditor == creditor, a.case_id == case_id)
                    .order_by(a.at.desc(), a.id.desc())
                    .limit(CASE_EVENT_LIMIT)
                )
            ).all()
            history = await uow.cases.history(c.pk, after=max(0, c.history_seq - CASE_HISTORY_LIMIT),
                                              limit=CASE_HISTORY_LIMIT)
        recs_by_attempt: dict[str, list[str]] = {}
        hold = None
        if self.vault is not None:
            from recordings.model import RecordingFilter as VaultFilter

            try:
                if who.may("recordings"):
                    for rec in await self.vault.list(actor(who), VaultFilter(creditors=frozenset({creditor}), case_id=case_id)):
                        if rec.source_kind == "attempt":
                            recs_by_attempt.setdefault(rec.source_id, []).append(rec.recording_id)
                h = await self.vault.repo.case_hold(creditor, case_id)
                if h is not None:
                    hold = LegalHoldView(mask_text(h.reason), h.by, h.at)
            except Exception:  # noqa: BLE001 - the case page stays up when the vault is down
                recs_by_attempt = {}
        timeline = []
        for rec_text, _hash in drows:
            r = decision_from_record(rec_text)
            o = outcomes.get(r.attempt_id or "")
            timeline.append(
                TimelineEntry(
                    at=r.at, decision_id=r.decision_id, attempt_id=r.attempt_id, agent_id=r.agent_id,
                    number_masked=r.number_masked, allowed=r.allowed, rule_id=r.rule_id, reason=r.reason,
                    reason_zh=r.reason_zh,
                    outcome=_outcome(o) if o else None,
                    recording_ids=tuple(recs_by_attempt.get(r.attempt_id or "", ())),
                )
            )
        events = tuple(
            CaseEvent(at=row[0], actor=row[1], what=_event_text(row[3]), action=row[2]) for row in erows
        )
        return CaseView(
            # The console shows numbers masked to every role, in free text as in fields.
            creditor=c.creditor, case_id=c.case_id, debtor_name=mask_text(c.debtor_name), status=c.status,
            follow_up=c.follow_up_status, next_action_date=c.next_action_date, flags=tuple(sorted(c.flags)),
            legal_hold=hold, commission_start=c.commission_start, commission_end=c.commission_end,
            assigned_agent=c.assigned_agent, amount_due=c.amount_due, overdue_days=c.overdue_days,
            contacts=tuple(
                ContactView(mask_number(x.number), x.relation, mask_optional(x.name), x.status, x.do_not_call,
                            mask_text(x.source))
                for x in c.contacts
            ),
            timeline=tuple(timeline), events=events,
            history=tuple(
                HistoryView(seq=h.seq, at=h.at, actor=h.actor, role=h.role, source=h.source, source_ref=h.source_ref,
                            source_row=h.source_row, field=h.field, old=_history_value(h.old),
                            new=_history_value(h.new), reason=h.reason)
                for h in reversed(history)
            ),
        )

    async def worklist(self, who: Principal) -> list[WorklistItem]:
        from dialer.worklist import MAX_ITEMS, Worklist, worklist_items

        wl = Worklist(self.services.gate)
        scope = None if who.role == "admin" else frozenset(who.creditors)
        async with self.store.read() as uow:
            rows = await uow.cases.worklist(scope, None, wl.latest_due(), MAX_ITEMS)
        return [
            WorklistItem(
                case_id=i["case_id"], creditor=i["creditor"], assigned_agent=i["assigned_agent"], status=i["status"],
                next_action_date=i["next_action_date"], days_overdue=i["days_overdue"],
                first_call_deadline=i["first_call"]["deadline"] if i["first_call"] else None,
                first_call_missed=bool(i["first_call"] and i["first_call"]["missed"]),
            )
            for i in worklist_items(rows, wl.today)
        ]


def _outcome(o: Any) -> OutcomeView:
    return OutcomeView(
        disposition=o.disposition, result=o.result, note=mask_optional(o.note), recorded_at=o.logged_at,
        callback_at=o.callback_at, promise_amount=o.promise_amount, promise_date=o.promise_date,
    )


def _event_text(details: str) -> str:
    try:
        d = json.loads(details)
    except ValueError:
        return ""
    if not isinstance(d, dict):
        return ""
    # ids are noise on a case page; notes are shown on the timeline already
    bits = [f"{k}={v}" for k, v in sorted(d.items())
            if k not in ("note", "attempt_id", "decision_id") and not isinstance(v, (dict, list))]
    return mask_text(", ".join(bits))


__all__ = ["SqlAlchemyConsoleQueries"]


def _history_value(value: Any) -> str:
    """A history entry's old or new value as one line for the case page."""
    if value is None:
        return "—"
    if isinstance(value, list):
        return ", ".join(str(v) if not isinstance(v, dict) else _history_value(v) for v in value) or "[]"
    if isinstance(value, dict):
        return "; ".join(f"{k}={_history_value(v)}" for k, v in value.items())
    return str(value)
