"""Case imports: rows/s on SQLite and PostgreSQL, and what an import does to click-to-dial.

    .venv/bin/python bench/import_bench.py                          # SQLite, 100,000 cases x 3 contacts
    .venv/bin/python bench/import_bench.py --store both --pg-url postgresql+asyncpg://…
    .venv/bin/python bench/import_bench.py --cases 20000 --dial-seconds 10   # a quicker look

Printed side by side, one run:

* anchor — raw `executemany` (sqlite3, one transaction, `synchronous=FULL` like the
  service) of the same cases and contacts into the same migrated schema: what the
  database alone takes for these rows; and the same with each new case's history entry
  (a chained record as long as the import's), which every import must write too; for
  context, that again in transactions of at most `batch_ms` each (what the database
  pays for the short transactions an import must use so decisions never wait long);
* the import through a real `dialgate serve`: `POST /v1/imports?kind=cases` with the
  JSON file, answered 202, polled until done. Cases/s over the whole job (decode,
  validation, staging, batched apply) and over the apply phase alone, and the ratio to
  the anchor;
* click-to-dial at a fixed rate offered (`--rate`, 200/s) from a client process of its
  own (the open-loop client of gate_bench.py: latency from each request's due time),
  for `--dial-seconds` without an import, then again while the import applies.

Goals: >= 5,000 cases/s on SQLite (>= 25% of the anchor); dial p99 during
the import <= 50 ms and <= 2x the p99 without it. On a machine shared with other work
the figures carry its load: the run prints /proc/loadavg before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gate_bench import POLICY, REPO, Load, Server, cases_doc, cli, drop_pg_db, free_port, http_request, make_users, private_pg_db  # noqa: E402
from dialer.import_jobs import ImportLimits  # noqa: E402


# A busy loop at the import worker's scheduling priority (dialer/import_worker.py).
HOG = "from dialer.import_worker import lower_priority\nlower_priority()\nwhile True: pass"


def import_doc(n: int, contacts: int) -> bytes:
    today = date.today()
    start, end = (today - timedelta(days=30)).isoformat(), (today + timedelta(days=60)).isoformat()
    cases = [
        {
            "case_id": f"IMP-{i}", "creditor": "bank-x", "debtor_name": "导入", "status": "active",
            "commission_start": start, "commission_end": end, "assigned_agent": f"agent-{i % 50}",
            "amount_due": "1234.50", "overdue_days": 40,
            "contacts": [{"number": f"+8613{5 + k}{i:08d}", "relation": "self" if k == 0 else "family"}
                         for k in range(contacts)],
        }
        for i in range(n)
    ]
    return json.dumps({"cases": cases}, ensure_ascii=False, separators=(",", ":")).encode()


def children_cpu_s(pid: int) -> float:
    """CPU seconds of `pid`'s children that it has waited for (the import worker, once
    it exits): /proc/<pid>/stat cutime + cstime."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def own_cpu_s(pid: int) -> float:
    """CPU seconds of `pid` itself, every thread, its children left out."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def live_children_cpu_s(pid: int) -> float:
    """CPU seconds so far of `pid`'s running children (the import worker while it runs)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


TXN_STEP = 8  # cases per executemany round inside a budgeted anchor transaction


def raw_anchor(cfg: Path, db: Path, n: int, contacts: int, history: bool = False, txn_ms: float = 0) -> float:
    """Seconds for raw executemany of the same rows (cases, then their contacts) into a
    freshly migrated copy of the schema, one transaction, synchronous=FULL. `history`:
    also each new case's history entry, as long as the import's (the rows an import
    must write that the bare anchor leaves out). `txn_ms`: with history, in transactions
    that each end once they have taken that long (runs of `TXN_STEP` cases), synchronous
    NORMAL: the write lock's budget and the setting an import's batches run under, to
    tell what short transactions cost the database from what the import adds."""
    if db.exists():
        for f in db.parent.glob(db.name + "*"):
            f.unlink()
    cli(cfg, "db", "upgrade")
    today = date.today()
    dates = (today - timedelta(days=30)).isoformat(), (today + timedelta(days=60)).isoformat()
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(f"PRAGMA synchronous={'NORMAL' if txn_ms else 'FULL'}")
    con.execute("INSERT OR IGNORE INTO creditors (id, name, created_at) VALUES ('bank-x', 'bank-x', ?)", (now,))
    t = time.perf_counter()
    if not txn_ms:
        con.execute("BEGIN IMMEDIATE")
        _insert_rows(con, range(n), contacts, history, dates, now)
        con.execute("COMMIT")
    i = 0
    while txn_ms and i < n:
        con.execute("BEGIN IMMEDIATE")
        began = time.perf_counter()
        while i < n and time.perf_counter() - began < txn_ms / 1000:
            run = range(i, min(n, i + TXN_STEP))
            _insert_rows(con, run, contacts, True, dates, now)
            i = run.stop
        con.execute("COMMIT")
    took = time.perf_counter() - t
    con.close()
    return took


def _insert_rows(con: sqlite3.Connection, cases: range, contacts: int, history: bool, dates: tuple[str, str],
                 now: str) -> None:
    start, end = dates
    con.executemany(
        "INSERT INTO cases (id, creditor, case_id, debtor_name, status, commission_start, commission_end, "
        "assigned_agent, flags, amount_due, overdue_days, follow_up_status, next_action_date, event_seq, "
        "created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        ((1_000_000 + i, "bank-x", f"IMP-{i}", "导入", "active", start, end, f"agent-{i % 50}", "", "1234.50", 40,
          "new", None, 0, now, now) for i in cases),
    )
    con.executemany(
        "INSERT INTO contacts (case_pk, number, relation, name, tz, status, do_not_call, source, added_at) "
        "VALUES (?,?,?,?,?,?,?,?,?)",
        ((1_000_000 + i, f"+8613{5 + k}{i:08d}", "self" if k == 0 else "family", None, None, "valid", 0, "creditor",
          now) for i in cases for k in range(contacts)),
    )
    if history:
        record, link = "x" * 775, "f" * 64  # a new case's chained entry: about 775 characters of canonical JSON
        con.executemany(
            "INSERT INTO case_history (case_pk, creditor, case_id, seq, at, actor, role, source, source_ref, "
            "source_row, field, record, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            ((1_000_000 + i, "bank-x", f"IMP-{i}", 1, now, "data-x", "data", "import", "anchor", i + 1, "case", record,
              "0" * 64, link) for i in cases),
        )


async def run_store(store: str, args: argparse.Namespace, body: bytes) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="i18imports-bench-") as d:
        wd = Path(d)
        url = f"sqlite+aiosqlite:///{wd / 'var' / 'dialgate.db'}" if store == "sqlite" else await private_pg_db(args.pg_url)
        cfg = wd / "config.toml"
        cfg.write_text(f'[paths]\ndata_dir = "{wd / "var"}"\n[store]\nurl = "{url}"\n[log]\nlevel = "warning"\n'
                       f'[gate]\nauth_cache_s = 300.0\n[imports]\nmax_bytes = {len(body) + 1024}\n'
                       + (f'batch_ms = {args.batch_ms}\n' if args.batch_ms else '') + POLICY,
                       encoding="utf-8")
        res: dict[str, Any] = {"store": store}
        if store == "sqlite":
            anchor_cfg = wd / "anchor" / "config.toml"
            anchor_cfg.parent.mkdir()
            anchor_db = wd / "anchor" / "var" / "dialgate.db"
            anchor_cfg.write_text(f'[paths]\ndata_dir = "{anchor_db.parent}"\n{POLICY}', encoding="utf-8")
            res["anchor_s"] = raw_anchor(anchor_cfg, anchor_db, args.cases, args.contacts)
            res["anchor_history_s"] = raw_anchor(anchor_cfg, anchor_db, args.cases, args.contacts, history=True)
            res["anchor_budget_s"] = raw_anchor(anchor_cfg, anchor_db, args.cases, args.contacts, history=True,
                                                txn_ms=args.batch_ms or ImportLimits().batch_ms)
        cli(cfg, "db", "upgrade")
        tokens = await make_users(cfg, [("data-x", "data")] + [(f"agent-{i}", "collector") for i in range(50)])
        port = free_port()
        server = Server(cfg, port)
        load = Load("127.0.0.1", [port], [server.proc.pid], 1, 30.0)
        try:
            await server.ready(tokens["data-x"])
            auth = {"Authorization": f"Bearer {tokens['data-x']}"}
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as c:
                # Each dial stage gets cases of its own, so the caps block as few dials in one
                # stage as in the other (a blocked decision costs more than an allowed one).
                r = await c.post("/v1/cases:import", json={"cases": cases_doc(2_000, 50)}, headers=auth)
                assert r.status_code == 200, r.text

                def dial(i: int, first: int) -> bytes:
                    k = first + i % 500
                    w = k % 50
                    number = f"+86139{k:08d}" if (i // 500) % 2 == 0 else f"+86137{k:08d}"
                    return http_request("127.0.0.1", port, "POST", "/v1/dials", tokens[f"agent-{w}"],
                                        {"case_id": f"K-{k}", "number": number, "agent_id": f"agent-{w}"})

                def stream(n: int, first: int) -> list[bytes]:
                    return [dial(i, first) for i in range(n)]

                n_dials = int(args.rate * args.dial_seconds)
                if args.dials:
                    await load.open(stream(200, 0), args.rate, 50)  # warm-up
                    own = own_cpu_s(server.proc.pid)
                    res["dial_alone"] = await load.open(stream(n_dials, 500), args.rate, 50)
                    res["dial_alone"]["own_cpu_s"] = own_cpu_s(server.proc.pid) - own
                    if args.hog:
                        # The machine's floor: the same dials while a process that holds no
                        # lock and writes nothing keeps one core busy at the worker's priority.
                        hog = subprocess.Popen([sys.executable, "-c", HOG], env={**os.environ, "PYTHONPATH": str(REPO)})
                        try:
                            res["dial_hog"] = await load.open(stream(n_dials, 1_500), args.rate, 50)
                        finally:
                            hog.kill()
                            hog.wait()
                cpu0 = children_cpu_s(server.proc.pid)
                t0 = time.perf_counter()
                r = await c.post("/v1/imports", params={"kind": "cases"}, content=body,
                                 headers={**auth, "Content-Type": "application/json"})
                assert r.status_code == 202, r.text
                import_id = r.json()["import_id"]
                t_applying = None
                dials_task = None
                while True:
                    job = (await c.get(f"/v1/imports/{import_id}", headers=auth)).json()
                    if job["state"] == "applying" and t_applying is None:
                        t_applying = time.perf_counter()
                        res["validate_cpu_s"] = live_children_cpu_s(server.proc.pid)
                        if args.dials:
                            own = own_cpu_s(server.proc.pid)
                            dials_task = asyncio.create_task(load.open(stream(n_dials, 1_000), args.rate, 50))
                    if job["state"] not in ("validating", "applying"):
                        break
                    await asyncio.sleep(0.2)
                t_done = time.perf_counter()
                if dials_task is not None:
                    res["dial_during"] = await dials_task
                    res["dial_during"]["own_cpu_s"] = own_cpu_s(server.proc.pid) - own
                    res["dial_during_overlapped"] = job["state"] == "done" and t_done - (t_applying or t_done) > args.dial_seconds
                assert job["state"] == "done", job
                for _ in range(50):  # the worker is reaped just after it marks the job done
                    await asyncio.sleep(0.1)
                    res["import_cpu_s"] = children_cpu_s(server.proc.pid) - cpu0
                    if res["import_cpu_s"] > 0:
                        break
                res["job"] = job
                res["total_s"] = t_done - t0
                res["apply_s"] = t_done - (t_applying or t0)
        finally:
            load.close()
            server.stop()
            if store == "postgres":
                await drop_pg_db(url)
        return res


def show(r: dict[str, Any], args: argparse.Namespace) -> None:
    n = args.cases
    print(f"\n== {r['store']}: {n:,} cases x {args.contacts} contacts ==")
    if "anchor_s" in r:
        print(f"  anchor  raw executemany, one transaction: {n / r['anchor_s']:>10,.0f} cases/s  ({r['anchor_s']:.2f} s)")
        print(f"  anchor  the same with each case's history entry: {n / r['anchor_history_s']:>6,.0f} cases/s  "
              f"({r['anchor_history_s']:.2f} s)")
        print(f"  context the same in transactions of at most {args.batch_ms or ImportLimits().batch_ms} ms (an import "
              f"batch's write-lock budget; synchronous=NORMAL as its batches): {n / r['anchor_budget_s']:,.0f} cases/s"
              f"  ({r['anchor_budget_s']:.2f} s)")
    total, apply = n / r["total_s"], n / r["apply_s"]
    ratio = (f"  = {apply / (n / r['anchor_s']):.1%} of the anchor, {apply / (n / r['anchor_history_s']):.1%} of the "
             "anchor with history") if "anchor_s" in r else ""
    print(f"  import  whole job (decode, validate, stage, apply): {total:>8,.0f} cases/s  ({r['total_s']:.1f} s)")
    print(f"  import  apply phase alone:                          {apply:>8,.0f} cases/s  ({r['apply_s']:.1f} s){ratio}")
    if r.get("import_cpu_s"):
        print(f"  import  worker process CPU, whole job:              {r['import_cpu_s'] / n * 1e6:>8,.0f} us/case  "
              f"({r['import_cpu_s']:.1f} s; {n / r['import_cpu_s']:,.0f} cases per CPU-second)")
        if r.get("validate_cpu_s"):
            applying = r["import_cpu_s"] - r["validate_cpu_s"]
            print(f"  import  worker process CPU, applying:               {applying / n * 1e6:>8,.0f} us/case  "
                  f"({applying:.1f} s; {n / applying:,.0f} cases per CPU-second; the rest validated and staged)")
    for key, label in (("dial_alone", "without an import"), ("dial_hog", "beside a busy loop"),
                       ("dial_during", "during the import")):
        if key in r:
            x = r[key]
            print(f"  dial at {x['rate']:.0f}/s offered {label:>18}: p50 {x['p50_ms']:6.1f} ms  p99 {x['p99_ms']:6.1f} ms  "
                  f"max {x['max_ms']:6.1f} ms  n={x['n']} statuses={x['statuses']}  server CPU {x['server_cpu']:.0%}  "
                  f"CPU pressure {x['cpu_pressure']:.0%}")
            if "own_cpu_s" in x:
                print(f"  {'':>48}the service process alone (its import child left out): "
                      f"{x['own_cpu_s'] / x['n'] * 1e3:.2f} ms CPU per dial")
    if "dial_during" in r and not r.get("dial_during_overlapped"):
        print("  note: the import finished before the dial stage did; part of that stage ran after it")
    if r["store"] == "sqlite":
        goals = [f"{apply:,.0f} cases/s >= 5,000: {'yes' if apply >= 5000 else 'no'}"]
        if "anchor_s" in r:
            goals.append(f">= 25% of anchor: {'yes' if apply / (n / r['anchor_s']) >= 0.25 else 'no'}")
        if "dial_during" in r and "dial_alone" in r:
            p_in, p_out = r["dial_during"]["p99_ms"], r["dial_alone"]["p99_ms"]
            goals.append(f"dial p99 during {p_in:.1f} ms <= 50: {'yes' if p_in <= 50 else 'no'}")
            goals.append(f"<= 2x without ({p_out:.1f} ms): {'yes' if p_in <= 2 * p_out else 'no'}")
        print("  goals:", "; ".join(goals))


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--contacts", type=int, default=3)
    ap.add_argument("--store", choices=("sqlite", "postgres", "both"), default="sqlite")
    ap.add_argument("--pg-url", default="")
    ap.add_argument("--rate", type=float, default=200.0, help="click-to-dials offered per second")
    ap.add_argument("--dial-seconds", type=float, default=15.0)
    ap.add_argument("--no-dials", dest="dials", action="store_false", help="import rates only")
    ap.add_argument("--hog", action="store_true",
                    help="also dial beside a busy loop at the import worker's priority (the machine's floor)")
    ap.add_argument("--batch-ms", type=int, default=0, help="[imports] batch_ms (default: the service's)")
    args = ap.parse_args()

    args.pg_url = args.pg_url or os.environ.get("DIALGATE_TEST_PG_URL", "")
    stores = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    if "postgres" in stores and not args.pg_url:
        raise SystemExit("--pg-url (or DIALGATE_TEST_PG_URL) is needed for PostgreSQL")
    print("load before:", Path("/proc/loadavg").read_text().strip())
    body = import_doc(args.cases, args.contacts)
    print(f"file: {len(body) / 1e6:.1f} MB JSON")
    for store in stores:
        show(await run_store(store, args, body), args)
    print("\nload after:", Path("/proc/loadavg").read_text().strip())


if __name__ == "__main__":
    asyncio.run(main())
