"""The worklist: which cases to call today, and the first calls that were missed.

`GET /v1/worklist`: active cases whose next action date is due (today or overdue) and
new cases with their first-call deadline (首催2天内: two days after assignment), most
urgent first — missed first calls, then the most overdue, then urgent and night
follow-ups, then today's, then new cases not yet due. A collector sees their own cases;
a supervisor their creditors' (any agent, or one with `agent=`).

`sweep_first_calls` (every minute on the primary) emits `case.first_call_overdue` once
per case whose first call was missed.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Callable, Mapping, Sequence
from zoneinfo import ZoneInfo

import structlog

from dialer.model import FOLLOW_UP_STATUSES, Principal
from dialer.usecases import Gate, _narrow, require_role
from policy.text import Text

log = structlog.get_logger("dialgate.worklist")

WORKLIST_ROLES = frozenset({"collector", "supervisor", "admin"})
MAX_ITEMS = 1000
SWEEP_BATCH = 50
FIRST_CALL_OVERDUE = Text("first call not made within 2 days of assignment", "新案未在分案后2天内首催")
_HURRY = {"urgent": 0, "night": 0, "complaint_risk": 0, "dispute": 0}


def _rank(item: dict[str, Any]) -> tuple[int, int, str]:
    """Missed first calls, then most overdue, then urgent statuses, then due today, then
    new cases not yet due."""
    if item["first_call"] is not None:
        tier = 0 if item["first_call"]["missed"] else 4
    elif item["days_overdue"] > 0:
        tier = 1
    else:
        tier = 2 if item["status"] in _HURRY else 3
    return tier, -item["days_overdue"], item["case_id"]


def worklist_items(rows: Sequence[Mapping[str, Any]], today_of: Callable[[str], date]) -> list[dict[str, Any]]:
    """The worklist's entries from case rows (`SqlCaseRepository.worklist`), most urgent
    first; `today_of(creditor)` is the day they are due by."""
    items = []
    for r in rows:
        today = today_of(r["creditor"])
        nad = r["next_action_date"]
        new = r["follow_up_status"] == "new"
        if not new and (nad is None or nad > today):
            continue
        items.append({
            "case_id": r["case_id"],
            "creditor": r["creditor"],
            "assigned_agent": r["assigned_agent"],
            "status": r["follow_up_status"],
            "status_zh": FOLLOW_UP_STATUSES.get(r["follow_up_status"], r["follow_up_status"]),
            "next_action_date": nad.isoformat() if nad else None,
            "days_overdue": max(0, (today - nad).days) if nad else 0,
            "first_call": ({"deadline": nad.isoformat() if nad else None,
                            "missed": bool(nad and today > nad)} if new else None),
            "amount_due": r["amount_due"],
        })
    items.sort(key=_rank)
    return items


class Worklist:
    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def today(self, creditor: str) -> date:
        """Today in the creditor's policy zone."""
        zone = ZoneInfo(self.gate.policies.for_creditor(creditor).timezone)
        return self.gate._now().astimezone(zone).date()

    def latest_due(self) -> date:
        """The latest day any creditor's "today" can be (zones east of UTC are ahead)."""
        return self.gate._now().date() + timedelta(days=1)

    async def items(
        self, actor: Principal, *, agent: str | None = None, creditor: str | None = None, due: date | None = None,
        limit: int = 200,
    ) -> dict[str, Any]:
        require_role(actor, WORKLIST_ROLES, "read worklists")
        if actor.role == "collector":
            agent = actor.name  # a collector's worklist is their own cases, whatever was asked
        scope = _narrow(actor, creditor)
        async with self.gate.store.read() as uow:
            rows = await uow.cases.worklist(scope, agent, due or self.latest_due(), min(limit, MAX_ITEMS))
        items = worklist_items(rows, (lambda _c: due) if due else self.today)
        return {"due": (due.isoformat() if due else None), "agent": agent, "items": items}

    async def sweep_first_calls(self) -> int:
        """Emit `case.first_call_overdue` for each new case past its first-call date, once."""
        now = self.gate._now()
        n = after = 0
        while True:
            # Small transactions, like the attempt expiry: dials wait behind the write lock.
            async with self.gate.store.write() as uow:
                batch = await uow.cases.first_calls_overdue(now.date() + timedelta(days=1), SWEEP_BATCH, after)
                for r in batch:
                    after = r["id"]
                    today = self.today(r["creditor"])
                    if r["next_action_date"] >= today:
                        continue  # still within the deadline in the creditor's zone
                    await uow.outbox.add(
                        "case.first_call_overdue", creditor=r["creditor"], case_pk=r["id"], case_id=r["case_id"],
                        occurred_at=now,
                        payload={"assigned_agent": r["assigned_agent"],
                                 "deadline": r["next_action_date"].isoformat(),
                                 "days_overdue": (today - r["next_action_date"]).days,
                                 **FIRST_CALL_OVERDUE.fields("message")},
                    )
                    await uow.cases.mark_first_call_alerted(r["id"], now)
                    n += 1
            if len(batch) < SWEEP_BATCH:
                if n:
                    log.info("worklist.first_calls_overdue", cases=n)
                return n
