"""Dial policy evaluations per second on one core, with realistic history.

Scenario: a case with 5 contacts (debtor, guarantor, two relatives, a colleague) and
30 attempt/connected events of that case inside the look-back window, evaluated with
the default policy at different times of day. Printed side by side in one run:

* anchor   — the floor any evaluation pays: building the request's frozen snapshots'
             equivalent work is excluded; the anchor is `sorted()` over the 30 event
             times plus one `astimezone` per event (what any cap counting must touch);
* allowed  — the common path (every rule passes: no next_allowed_at search);
* blocked  — hourly cap reached late in the evening: the search for next_allowed_at
             runs (window + caps fixpoint);
* hard stop — a paused case (all rules still evaluated, no search);
* us-reg-f — 7-day look-back with 120 events, most of other cases on the same numbers;
* cn_holidays — the allowed path with PRC holidays on, and one raw calendar lookup of
             a date not seen before (arrangement breaks, then the statutory days).

Goal: >= 30,000 allowed evaluations/s. Run: `.venv/bin/python bench/policy_bench.py`.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Callable
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policy import (  # noqa: E402
    AgentSnapshot,
    CaseSnapshot,
    ContactSnapshot,
    DialRequest,
    HistoryEvent,
    evaluate,
    load_policy,
)

SH = ZoneInfo("Asia/Shanghai")
UTC = timezone.utc
GOAL = 30_000


def scenario() -> tuple[list[DialRequest], list[HistoryEvent], DialRequest, DialRequest, list[HistoryEvent]]:
    contacts = (
        ContactSnapshot("+8613800000001", "self"),
        ContactSnapshot("+8613900000002", "guarantor"),
        ContactSnapshot("+8613700000003", "family"),
        ContactSnapshot("+8615000000004", "family"),
        ContactSnapshot("+862161234567", "work"),
    )
    case = CaseSnapshot(
        "BENCH-1", "bank-a", "active", date(2026, 1, 1), date(2026, 12, 31),
        assigned_agent="a1", contacts=contacts,
    )
    agent = AgentSnapshot("a1", "collector", frozenset({"bank-a"}))
    now = datetime(2026, 11, 24, 11, 0, tzinfo=SH)
    history: list[HistoryEvent] = []
    # 30 events over the last two days, spread over the five numbers, in UTC as a
    # database would return them; some answered.
    for i in range(30):
        c = contacts[i % 5]
        at = (now - timedelta(minutes=65 + 94 * i)).astimezone(UTC)
        history.append(HistoryEvent(at, case.case_id, c.number, c.relation, "attempt"))
        if i % 7 == 0:
            history.append(HistoryEvent(at, case.case_id, c.number, c.relation, "connected"))
    history = history[:30]
    requests = [DialRequest(case, c.number, agent) for c in contacts]
    late = now.replace(hour=20, minute=59)
    blocked_hist = history + [
        HistoryEvent((late - timedelta(minutes=49)).astimezone(UTC), case.case_id, contacts[0].number, "self"),
        HistoryEvent((late - timedelta(minutes=20)).astimezone(UTC), case.case_id, contacts[0].number, "self"),
    ]
    paused = DialRequest(
        CaseSnapshot(case.case_id, "bank-a", "paused", case.commission_start, case.commission_end,
                     assigned_agent="a1", contacts=contacts),
        contacts[0].number, agent,
    )
    return requests, history, requests[0], paused, blocked_hist


def rate(fn: Callable[[], object], seconds: float = 0.6, runs: int = 3) -> tuple[float, float]:
    """(per CPU-second, per wall-second), best of `runs` timed runs.

    This machine's two cores are shared with other work; CPU time (`process_time`)
    counts only the time this process actually ran, so it is the steadier figure of
    "evaluations per second on one core". Wall-clock rate is printed beside it.
    """
    best_cpu = best_wall = 0.0
    for _ in range(runs):
        n = 0
        c0, w0 = time.process_time(), time.perf_counter()
        deadline = w0 + seconds
        while True:
            for _ in range(200):
                fn()
            n += 200
            w = time.perf_counter()
            if w >= deadline:
                break
        c = time.process_time()
        best_cpu = max(best_cpu, n / max(c - c0, 1e-9))
        best_wall = max(best_wall, n / (w - w0))
    return best_cpu, best_wall


def main() -> None:
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    except (AttributeError, OSError):
        pass
    pol = load_policy({}).for_creditor("bank-a")
    requests, history, first, paused, blocked_hist = scenario()
    now = datetime(2026, 11, 24, 11, 0, tzinfo=SH)
    late = datetime(2026, 11, 24, 20, 59, tzinfo=SH)

    d = evaluate(first, history, pol, now)
    assert d.allowed, d.reason
    b = evaluate(first, blocked_hist, pol, late)
    assert not b.allowed and b.next_allowed_at is not None, b.reason
    assert evaluate(paused, history, pol, now).rule_id == "case.paused"

    times = [e.at for e in history]
    idx = [0]

    def anchor() -> None:
        sorted([t.astimezone(SH) for t in times])

    def allowed() -> None:
        i = idx[0] = (idx[0] + 1) % 5
        evaluate(requests[i], history, pol, now)

    def blocked() -> None:
        evaluate(first, blocked_hist, pol, late)

    def hard_stop() -> None:
        evaluate(paused, history, pol, now)

    # A US creditor on Regulation F loads 7 days of history: 120 events.
    regf = load_policy({"preset": "us-reg-f"}).default
    week = [
        HistoryEvent((now - timedelta(minutes=80 * i + 61)).astimezone(UTC), "BENCH-1", e.number, e.relation, e.kind)
        for i, e in enumerate(history * 4)
    ]
    week = [e for e in week if e.kind == "attempt"][:5] + [
        HistoryEvent(e.at, "OTHER", e.number, e.relation, e.kind) for e in week[5:]
    ]
    assert evaluate(requests[2], week, regf, now).allowed, evaluate(requests[2], week, regf, now).reason

    def allowed_regf() -> None:
        evaluate(requests[2], week, regf, now)

    # cn_holidays: the engine asks the calendar once per callee date and policy (cached);
    # the raw lookup, with its per-date memo cleared, is what a new date costs.
    holidays_pol = load_policy({"cn_holidays": True}).default
    assert evaluate(requests[0], history, holidays_pol, now).allowed
    calendar = holidays_pol.calendar
    days = [date(2024, 1, 1) + timedelta(days=i) for i in range(7 * 366)]
    day_idx = [0]

    def allowed_holidays() -> None:
        i = idx[0] = (idx[0] + 1) % 5
        evaluate(requests[i], history, holidays_pol, now)

    def calendar_lookup() -> None:
        i = day_idx[0] = (day_idx[0] + 1) % len(days)
        calendar._memo.clear()
        calendar.holiday(days[i])

    print(f"policy_bench: {len(history)} events in look-back, 5 contacts, default policy, one core")
    rows = [("anchor (sort+astimezone of 30 events)", anchor), ("allowed", allowed),
            ("blocked by cap (next_allowed_at search)", blocked), ("hard stop (case.paused)", hard_stop),
            ("allowed, us-reg-f, 120 events in 7 days*", allowed_regf),
            ("allowed, cn_holidays", allowed_holidays),
            ("PRC calendar lookup, a new date (uncached)", calendar_lookup)]
    results = {}
    print(f"  {'':42s} {'per CPU-second':>16s} {'per wall-second':>16s} {'µs (CPU)':>9s}")
    for name, fn in rows:
        cpu, wall = rate(fn)
        results[name] = cpu
        print(f"  {name:42s} {cpu:16,.0f} {wall:16,.0f} {1e6 / cpu:9.1f}")
    print(f"  allowed / anchor: {results['allowed'] / results[rows[0][0]]:.2f}")
    print("  * 5 attempts of this case, 115 events of other cases on the same numbers (number-scope rows)")
    ok = results["allowed"] >= GOAL
    print(f"  goal: allowed >= {GOAL:,}/s per CPU-second on one core -> {'MET' if ok else 'NOT MET'}")


if __name__ == "__main__":
    main()
