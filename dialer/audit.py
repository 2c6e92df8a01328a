"""`dialgate audit verify`: walk each decision-log chain and name the first tampering.

Each stored record holds its canonical JSON (`record`), the previous record's hash and
its own hash = SHA-256(prev_hash + "\\n" + record). A chain head row keeps the last seq
and hash, so a deleted tail is caught too. What is reported, first problem per chain:

* edited   — a record's JSON, or a column mirrored from it, no longer matches its hash
* inserted — a record that links to the same predecessor as its successor, or repeats a seq
* deleted  — a gap in the sequence (or records missing after the last one kept)
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
    chains: dict[str, int] = field(default_factory=dict)  # chain → records checked
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "chains": self.chains, "problems": [p.to_dict() for p in self.problems]}


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
    return report
