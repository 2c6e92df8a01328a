"""Replay of a month of logged dials with --compare, beside the raw evaluation rate.

Setup (not timed): a SQLite store with 1,000 cases (debtor and relative numbers, 40
collectors) and N logged dial decisions over November 2026 (default 100,000, about
3,300 a day), decided under a policy allowing 3 calls an hour per number and written
as the gate writes them (the canonical record with every check, attempt rows for the
dials that went out, some connected).

Timed, in one run:

* anchor — `evaluate()` of one allowed dial with 30 events of history (the raw rate of
  `bench/policy_bench.py`), per CPU-second;
* replay — what `dialgate simulate --from-log --compare --format jsonl` does under the
  default policy (2 calls an hour): read the period from the store, decide every dial
  again, write the changed decisions and the summary (to /dev/null). Wall seconds and
  CPU seconds, and decisions per CPU-second beside the anchor.

Goal: the replay of 100,000 logged decisions finishes in under a minute.
Run: `.venv/bin/python bench/replay_bench.py [N]`.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402
from sqlalchemy import create_engine, insert  # noqa: E402

from adapters.db import tables as t  # noqa: E402
from adapters.db.migrate import upgrade  # noqa: E402
from dialer import replay_cli  # noqa: E402
from dialer.config import build_config  # noqa: E402
from dialer.masking import mask_number  # noqa: E402
from dialer.replay import LoggedDial, ReplayData, StoredCase, StoredContact, replay  # noqa: E402
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
GOAL_S = 60.0
CASES = 1_000
LOGGED_POLICY = {"caps": [{"id": "cap.number_hourly", "limit": 3}, {"id": "cap.number_daily"},
                          {"id": "cap.third_party_hourly"}, {"id": "cap.third_party_daily"}, {"id": "cap.case_daily"}]}


def anchor_rate(seconds: float = 0.6) -> float:
    contacts = (ContactSnapshot("+8613800000001", "self"), ContactSnapshot("+8613700000003", "family"))
    case = CaseSnapshot("A-1", "bank-a", "active", date(2026, 1, 1), date(2026, 12, 31), assigned_agent="a1",
                        contacts=contacts)
    request = DialRequest(case=case, number="+8613800000001", agent=AgentSnapshot("a1", "collector", frozenset({"bank-a"})))
    now = datetime(2026, 11, 24, 11, 0, tzinfo=SH)
    history = [HistoryEvent(now - timedelta(hours=3 + i), "A-1", "+8613700000003", "family") for i in range(30)]
    pol = load_policy({}).default
    best = 0.0
    for _ in range(3):
        n, c0, w0 = 0, time.process_time(), time.perf_counter()
        while time.perf_counter() - w0 < seconds:
            for _ in range(200):
                evaluate(request, history, pol, now)
            n += 200
        best = max(best, n / max(time.process_time() - c0, 1e-9))
    return best


def seed(path: Path, n: int) -> None:
    """A store with CASES cases and `n` logged dials decided under LOGGED_POLICY."""
    rng = random.Random(17)
    asyncio.run(_migrate(path))
    engine = create_engine(f"sqlite:///{path / 'dialgate.db'}")
    created = datetime(2026, 10, 1, tzinfo=UTC)
    cases: dict[tuple[str, str], StoredCase] = {}
    with engine.begin() as conn:
        conn.execute(insert(t.creditors), [{"id": c, "name": c, "created_at": created} for c in ("bank-a", "bank-b")])
        case_rows, contact_rows = [], []
        for i in range(CASES):
            creditor = "bank-a" if i % 3 else "bank-b"
            agent = f"col-{i % 40}"
            case_rows.append({"id": i + 1, "creditor": creditor, "case_id": f"C{i:05d}", "debtor_name": "-",
                              "status": "active", "commission_start": date(2026, 10, 1),
                              "commission_end": date(2026, 12, 31), "assigned_agent": agent, "flags": "",
                              "follow_up_status": "new", "event_seq": 0, "created_at": created, "updated_at": created})
            numbers = [(f"+86138{i:08d}", "self"), (f"+86139{i:08d}", "family")]
            for number, relation in numbers:
                contact_rows.append({"case_pk": i + 1, "number": number, "relation": relation, "status": "valid",
                                     "do_not_call": False, "source": "creditor", "added_at": created})
            cases[(creditor, f"C{i:05d}")] = StoredCase(
                creditor, f"C{i:05d}", "active", date(2026, 10, 1), date(2026, 12, 31), agent,
                tuple(StoredContact(num, rel, None, created) for num, rel in numbers))
        conn.execute(insert(t.cases), case_rows)
        conn.execute(insert(t.contacts), contact_rows)
    # Decide the traffic under the logged policy with the replay machinery itself, so the
    # log is consistent (allowed dials are the history of later ones).
    # Working hours mostly (08:00-21:30 callee time), a few late calls blocked by the window.
    times = sorted(datetime(2026, 11, 1 + rng.randrange(30), 8, 0, tzinfo=SH)
                   + timedelta(seconds=rng.randrange(13 * 3600 + 1800)) for _ in range(n))
    dials = []
    keys = list(cases)
    for k, at in enumerate(times):
        creditor, case_id = keys[rng.randrange(len(keys))]
        contact = cases[(creditor, case_id)].contacts[rng.random() < 0.3]
        dials.append(LoggedDial(f"d{k:07d}", at, creditor, case_id, f"col-{int(case_id[1:]) % 40}",
                                mask_number(contact.number), True, "allow", frozenset(), attempt_id=f"a{k:07d}",
                                number=contact.number, relation=contact.relation, connected=rng.random() < 0.25))
    logged = replay(ReplayData(dials, cases), load_policy(LOGGED_POLICY))
    decision_rows, attempt_rows = [], []
    pk = {key: i + 1 for i, key in enumerate(cases)}
    for k, r in enumerate(logged):
        d = r.dial
        request_checks = _checks(cases[(d.creditor, d.case_id)], d, r)
        record = {"decision_id": d.decision_id, "kind": "dial", "channel": "api", "number": d.number_masked,
                  "allowed": r.allowed, "rule_id": r.rule_id, "checks": request_checks}
        went_out = r.allowed
        decision_rows.append({"chain": d.creditor, "seq": k + 1, "decision_id": d.decision_id, "kind": "dial",
                              "at": d.at, "creditor": d.creditor, "case_id": d.case_id, "agent_id": d.agent_id,
                              "allowed": r.allowed, "rule_id": r.rule_id,
                              "attempt_id": d.attempt_id if went_out else None,
                              "record": json.dumps(record, ensure_ascii=False, separators=(",", ":")),
                              "prev_hash": "0" * 64, "hash": f"{k:064d}"})
        if went_out:
            attempt_rows.append({"id": d.attempt_id, "case_pk": pk[(d.creditor, d.case_id)], "creditor": d.creditor,
                                 "case_id": d.case_id, "number": d.number, "relation": d.relation,
                                 "agent_id": d.agent_id, "channel": "api", "state": "completed", "at": d.at,
                                 "valid_until": d.at + timedelta(minutes=2), "decision_id": d.decision_id,
                                 "connected": d.connected})
    with engine.begin() as conn:
        conn.execute(insert(t.attempts), attempt_rows)
        conn.execute(insert(t.decisions), decision_rows)
    engine.dispose()


async def _migrate(path: Path) -> None:
    from dialer.bootstrap import make_store

    async with make_store(build_config({"paths": {"data_dir": str(path)}})) as store:
        await upgrade(store)


_CHECK_CACHE: dict[tuple[bool, str], list[dict[str, object]]] = {}


def _checks(case: StoredCase, dial: LoggedDial, r: object) -> list[dict[str, object]]:
    """The decision's checks as the gate logs them (texts from a real evaluation)."""
    key = (r.allowed, r.rule_id)  # type: ignore[attr-defined]
    if key not in _CHECK_CACHE:
        snapshot = CaseSnapshot(case.case_id, case.creditor, "active", case.commission_start, case.commission_end,
                                assigned_agent=dial.agent_id,
                                contacts=tuple(ContactSnapshot(c.number, c.relation) for c in case.contacts))
        request = DialRequest(case=snapshot, number=dial.number or "",
                              agent=AgentSnapshot(dial.agent_id, "collector", frozenset({case.creditor})))
        decision = evaluate(request, [], load_policy({}).default, dial.at)
        _CHECK_CACHE[key] = [{"rule_id": c.rule_id, "passed": c.passed or c.rule_id != r.rule_id,  # type: ignore[attr-defined]
                              "detail": c.detail, "detail_zh": c.detail_zh} for c in decision.checks]
    return _CHECK_CACHE[key]


class _Null:
    def __init__(self) -> None:
        self.chars = 0

    def __call__(self, text: str) -> None:
        self.chars += len(text)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    # Not pinned to a core: the goal is wall time, as an operator waits for it.
    with open("/proc/loadavg", encoding="ascii") as fh:
        load = fh.read().split()[:3]
    work = Path(tempfile.mkdtemp(prefix="dialgate-replay-bench-"))
    try:
        s0 = time.perf_counter()
        seed(work, n)
        seeded = time.perf_counter() - s0
        anchor = anchor_rate()
        cfg = build_config({"paths": {"data_dir": str(work)}})
        book = load_policy({})
        start, end = replay_cli.period("2026-11-01", "2026-11-30", SH)
        sink = _Null()
        c0, w0 = time.process_time(), time.perf_counter()
        data = asyncio.run(replay_cli.load_from_store(cfg, start, end, None))
        w1 = time.perf_counter()
        results = replay(data, book)
        w2 = time.perf_counter()
        summary = replay_cli.report(results, data, compare=True, fmt="jsonl", write=sink,
                                    err=Console(file=open(os.devnull, "w")))
        w3 = time.perf_counter()
        cpu = time.process_time() - c0
        wall = w3 - w0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"replay_bench: {len(data.dials):,} logged dials (Nov 2026, {CASES:,} cases), one process, "
          f"load average {' '.join(load)} (shared machine; seeding took {seeded:.0f} s, not timed)")
    print(f"  anchor: evaluate(), allowed, 30 events          {anchor:12,.0f} /CPU-s")
    print(f"  replay --compare (read + decide + report)       {len(data.dials) / cpu:12,.0f} /CPU-s"
          f"   ({len(data.dials) / cpu / anchor:.2f} of the anchor)")
    print(f"    read the log {w1 - w0:6.1f} s · decide {w2 - w1:6.1f} s · report {w3 - w2:6.1f} s · "
          f"total {wall:.1f} s wall, {cpu:.1f} s CPU")
    print(f"    {summary['changed']:,} decisions change ({summary['allowed_to_blocked']:,} allowed → blocked, "
          f"{summary['blocked_to_allowed']:,} blocked → allowed)")
    ok = wall < GOAL_S
    print(f"  goal: {n:,} logged decisions replayed with --compare in < {GOAL_S:.0f} s -> {'MET' if ok else 'NOT MET'}")


if __name__ == "__main__":
    main()
