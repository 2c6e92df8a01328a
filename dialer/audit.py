"""`dialgate audit verify`: walk each decision-log chain and each case's history chain,
and name the first tampering of each.

Each stored record holds its canonical JSON (`record`), the previous record's hash and
its own hash = SHA-256(prev_hash + "\\n" + record). A chain head row keeps the last seq
and hash, so a deleted tail is caught too. What is reported, first problem per chain:

* edited   — a record's JSON, or a column mirrored from it, no longer matches its hash
* inserted — a record that links to the same predecessor as its successor, or repeats a seq
* deleted  — a gap in the sequence (or records missing after the last one kept)

Case history entries (`case_history`) are checked the same way, one chain per case whose
head is the case row's `history_seq` / `history_hash`; problems are named
`history:<creditor>/<case_id>`, and `Report.history_entries` counts the entries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adapters.db.store import GENESIS_HASH, chain_hash

_MIRRORED = ("decision_id", "kind", "creditor", "case_id", "agent_id", "allowed", "rule_id", "attempt_id")


@dataclass
class Problem:
    chain: str
    kind: str  # edited | inserted | deleted
    seq: int
    decision_id: str | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"chain": self.chain, "kind": self.kind, "seq": self.seq, "decision_id": self.decision_id,
                "detail": self.detail}


@dataclass
class Report:
    chains: dict[str, int] = field(default_factory=dict)  # decision chain → records checked
    problems: list[Problem] = field(default_factory=list)
    history_entries: int = 0  # case-history entries checked (every case's chain)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "chains": self.chains, "history_entries": self.history_entries,
                "problems": [p.to_dict() for p in self.problems]}


def _self_check(row: dict[str, Any]) -> str | None:
    text = row["record"]
    if chain_hash(row["prev_hash"], text) != row["hash"]:
        return "record content does not match its hash"
    try:
        body = json.loads(text)
    except ValueError:
        return "record is not valid JSON"
    for col in _MIRRORED:
        if body.get(col if col != "number" else "number") != row[col]:
            return f"column {col} differs from the hashed record"
    if body.get("seq") != row["seq"] or body.get("prev_hash") != row["prev_hash"]:
        return "seq or prev_hash column differs from the hashed record"
    at = row["at"]
    if isinstance(at, datetime) and datetime.fromisoformat(body["at"]) != at:
        return "column at differs from the hashed record"
    return None


async def verify(store: Any) -> Report:
    report = Report()
    async with store.read() as uow:
        heads = {c: (seq, h) for c, seq, h in await uow.decisions.chains()}
        names = sorted(set(heads) | set(await uow.decisions.chain_names()))
        for chain in names:
            problem: Problem | None = None
            prev: dict[str, Any] | None = None
            prev_seq_body = 0
            count = 0
            async for row in uow.decisions.iterate(chain):
                count += 1
                if problem is not None:
                    continue
                try:
                    body_seq = int(json.loads(row["record"]).get("seq", row["seq"]))
                except (ValueError, TypeError):
                    body_seq = row["seq"]
                expected_prev = prev["hash"] if prev else GENESIS_HASH
                if prev is not None and row["prev_hash"] != expected_prev and row["prev_hash"] == prev["prev_hash"]:
                    problem = Problem(chain, "inserted", prev["seq"], prev["decision_id"],
                                      f"record seq {prev['seq']} does not belong: its successor links past it")
                    continue
                if prev is not None and row["seq"] == prev["seq"]:
                    problem = Problem(chain, "inserted", row["seq"], row["decision_id"], "repeats a sequence number")
                    continue
                if row["prev_hash"] != expected_prev and body_seq > prev_seq_body + 1:
                    problem = Problem(chain, "deleted", prev_seq_body + 1, None,
                                      f"records {prev_seq_body + 1}..{body_seq - 1} are missing before "
                                      f"decision {row['decision_id']}")
                    continue
                why = _self_check(row)
                if why is not None:
                    problem = Problem(chain, "edited", row["seq"], row["decision_id"], why)
                    continue
                if row["prev_hash"] != expected_prev:
                    problem = Problem(chain, "edited", row["seq"], row["decision_id"],
                                      "does not link to the previous record's hash")
                    continue
                prev, prev_seq_body = row, body_seq
            report.chains[chain] = count
            if problem is None:
                head = heads.get(chain)
                last_seq = prev["seq"] if prev else 0
                if head is None:
                    problem = Problem(chain, "inserted", last_seq, prev["decision_id"] if prev else None,
                                      "chain has records but no head: written outside the gate")
                elif head[0] > last_seq:
                    problem = Problem(chain, "deleted", last_seq + 1, None,
                                      f"records {last_seq + 1}..{head[0]} are missing at the end of the chain")
                elif head[0] < last_seq or (prev is not None and head[1] != prev["hash"]):
                    problem = Problem(chain, "inserted", last_seq, prev["decision_id"] if prev else None,
                                      "records after the recorded chain head")
            if problem is not None:
                report.problems.append(problem)
        await verify_history(uow, report)
    return report


# ---------------------------------------------------------------------------------
# Case history: one chain per case, its head on the case row
# ---------------------------------------------------------------------------------
_HISTORY_MIRRORED = ("creditor", "case_id", "seq", "actor", "role", "source", "source_ref", "source_row", "field",
                     "prev_hash")


def _history_self_check(row: dict[str, Any]) -> str | None:
    text = row["record"]
    if chain_hash(row["prev_hash"], text) != row["hash"]:
        return "entry content does not match its hash"
    try:
        body = json.loads(text)
    except ValueError:
        return "entry is not valid JSON"
    for col in _HISTORY_MIRRORED:
        if body.get(col) != row[col]:
            return f"column {col} differs from the hashed entry"
    at = row["at"]
    if isinstance(at, datetime) and datetime.fromisoformat(body["at"]) != at:
        return "column at differs from the hashed entry"
    return None


async def verify_history(uow: Any, report: Report) -> None:
    """Walk every case's history chain; the first problem of each case is reported under
    the chain name `history:<creditor>/<case_id>`."""
    heads = {pk: (creditor, case_id, seq, h) for pk, creditor, case_id, seq, h in await uow.cases.history_heads()}
    seen: set[int] = set()
    total = 0
    pk: int | None = None
    prev: dict[str, Any] | None = None
    problem: Problem | None = None

    def name(case_pk: int, row: dict[str, Any] | None) -> str:
        if case_pk in heads:
            return f"history:{heads[case_pk][0]}/{heads[case_pk][1]}"
        return f"history:{row['creditor']}/{row['case_id']}" if row else f"history:case-{case_pk}"

    def finish() -> None:
        nonlocal problem
        if pk is None:
            return
        if problem is None:
            problem = _tail_problem(name(pk, prev), heads.get(pk), prev)
        if problem is not None:
            report.problems.append(problem)

    async for row in uow.cases.iterate_history():
        total += 1
        if row["case_pk"] != pk:
            finish()
            pk, prev, problem = row["case_pk"], None, None
            seen.add(pk)
        if problem is not None:
            continue
        chain = name(pk, row)
        expected_seq = prev["seq"] + 1 if prev else 1
        expected_prev = prev["hash"] if prev else GENESIS_HASH
        if row["seq"] == (prev["seq"] if prev else 0):
            problem = Problem(chain, "inserted", row["seq"], None, "repeats a sequence number")
        elif row["seq"] > expected_seq and row["prev_hash"] != expected_prev:
            problem = Problem(chain, "deleted", expected_seq, None,
                              f"entries {expected_seq}..{row['seq'] - 1} are missing")
        elif (why := _history_self_check(row)) is not None:
            problem = Problem(chain, "edited", row["seq"], None, why)
        elif row["prev_hash"] != expected_prev or row["seq"] != expected_seq:
            problem = Problem(chain, "edited", row["seq"], None, "does not link to the previous entry's hash")
        else:
            prev = row
    finish()
    for case_pk, (creditor, case_id, seq, _h) in heads.items():
        if case_pk not in seen and seq > 0:
            report.problems.append(Problem(f"history:{creditor}/{case_id}", "deleted", 1, None,
                                           f"entries 1..{seq} are missing"))
    report.history_entries = total


def _tail_problem(chain: str, head: tuple[str, str, int, str] | None, last: dict[str, Any] | None) -> Problem | None:
    last_seq = last["seq"] if last else 0
    if head is None:
        return Problem(chain, "inserted", last_seq, None, "history entries for a case that does not exist")
    if head[2] > last_seq:
        return Problem(chain, "deleted", last_seq + 1, None,
                       f"entries {last_seq + 1}..{head[2]} are missing at the end of the history")
    if head[2] < last_seq or (last is not None and head[3] != last["hash"]):
        return Problem(chain, "inserted", last_seq, None, "entries after the case's recorded history head")
    return None
