"""`dialgate audit verify`: walk each decision-log chain and each case's history chain,
and name the first tampering of each; `register_problems`: the same for the destruction
register, and its completeness.

Each stored record holds its canonical JSON (`record`), the previous record's hash and
its own hash: HMAC-SHA-256 under the evidence key (`dialer.evidence`) from the chain
head's `keyed_from` on, SHA-256(prev_hash + "\\n" + record) before it (records written
before the key). A chain head row keeps the last seq and hash under a MAC, so a deleted
tail, or a head rolled back, is caught too. What is reported, first problem per chain:

* edited   — a record's JSON, or a column mirrored from it, no longer matches its hash,
             or the head's MAC does not match
* inserted — a record that links to the same predecessor as its successor, or repeats a seq
* deleted  — a gap in the sequence (or records missing after the last one kept)
* unkeyed  — a head not yet anchored under the key (`dialgate audit anchor`)

Case history entries (`case_history`) are checked the same way, one chain per case whose
head is the case row's `history_seq` / `history_hash`; problems are named
`history:<creditor>/<case_id>`, and `Report.history_entries` counts the entries.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any


from dialer.chain import GENESIS_HASH, LEGACY_LINK
from dialer import evidence
from recordings import register
from recordings.model import RecordingFilter

if TYPE_CHECKING:
    from dialer.ports import UnitOfWork
    from dialer.services import ServiceStore

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


def _self_check(row: dict[str, Any], key: evidence.EvidenceKey, keyed_from: int | None) -> str | None:
    text = row["record"]
    expected = evidence.expected_hash(key, LEGACY_LINK, keyed_from, row["seq"], row["prev_hash"], text.encode("utf-8"))
    if expected != row["hash"]:
        return "record content does not match its " + ("MAC" if keyed_from and row["seq"] >= keyed_from else "hash")
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


async def verify(store: ServiceStore) -> Report:
    report = Report()
    key = store.evidence
    async with store.read() as uow:
        heads = {h.chain: h for h in await uow.decisions.heads()}
        names = sorted(set(heads) | set(await uow.decisions.chain_names()))
        for chain in names:
            problem: Problem | None = None
            prev: dict[str, Any] | None = None
            prev_seq_body = 0
            count = 0
            keyed_from = heads[chain].keyed_from if chain in heads else None
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
                why = _self_check(row, key, keyed_from)
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
                last_seq = prev["seq"] if prev else 0
                found = evidence.head_problem(key, heads.get(chain), last_seq, prev["hash"] if prev else GENESIS_HASH)
                if found is not None:
                    last_id = prev["decision_id"] if found.kind != "deleted" and prev is not None else None
                    problem = Problem(chain, found.kind, found.seq, last_id, found.detail)
            if problem is not None:
                report.problems.append(problem)
        await verify_history(uow, report, key)
    return report


# ---------------------------------------------------------------------------------
# Case history: one chain per case, its head on the case row
# ---------------------------------------------------------------------------------
_HISTORY_MIRRORED = ("creditor", "case_id", "seq", "actor", "role", "source", "source_ref", "source_row", "field",
                     "prev_hash")


def _history_self_check(row: dict[str, Any], key: evidence.EvidenceKey) -> str | None:
    text = row["record"]
    if key.link(row["prev_hash"], text.encode("utf-8")) != row["hash"]:
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


async def verify_history(uow: UnitOfWork, report: Report, key: evidence.EvidenceKey) -> None:
    """Walk every case's history chain (HMAC links under the evidence key); the first
    problem of each case is reported under the chain name `history:<creditor>/<case_id>`."""
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
        chain = name(row["case_pk"], row)  # the case now walked, as `pk`
        expected_seq = prev["seq"] + 1 if prev else 1
        expected_prev = prev["hash"] if prev else GENESIS_HASH
        if row["seq"] == (prev["seq"] if prev else 0):
            problem = Problem(chain, "inserted", row["seq"], None, "repeats a sequence number")
        elif row["seq"] > expected_seq and row["prev_hash"] != expected_prev:
            problem = Problem(chain, "deleted", expected_seq, None,
                              f"entries {expected_seq}..{row['seq'] - 1} are missing")
        elif (why := _history_self_check(row, key)) is not None:
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


async def register_problems(repo: Any, key: evidence.EvidenceKey) -> list[str]:
    """The destruction register checked as evidence: its chain and head under the
    evidence key (`dialer.evidence`), and complete: every destroyed recording has
    exactly one entry, and every entry names a recording that is destroyed."""
    entries = await repo.destruction_register()
    head = await repo.register_head()
    links = [evidence.Link(e.seq, e.prev_hash, e.entry_hash, register.canonical(e), e.recording_id) for e in entries]
    as_head = evidence.Head(register.CHAIN, head.seq, head.entry_hash, head.keyed_from, head.mac) if head else None
    problems = [f"{p.kind}: {p.detail}" for p in evidence.verify_chain(links, as_head, key, register.legacy_hash)]
    count: dict[str, int] = {}
    for e in entries:
        count[e.recording_id] = count.get(e.recording_id, 0) + 1
    destroyed = await repo.find(RecordingFilter(state="destroyed", include_destroyed=True, limit=None))
    for rec in destroyed:
        n = count.pop(rec.recording_id, 0)
        if n != 1:
            problems.append(f"{'deleted' if n == 0 else 'inserted'}: recording {rec.recording_id} is destroyed "
                            f"with {n} register entries (expected exactly 1)")
    for rid, n in sorted(count.items()):
        problems.append(f"inserted: {n} register entr{'y' if n == 1 else 'ies'} for recording {rid}, "
                        "which is not destroyed")
    return problems


# ---------------------------------------------------------------------------------
# Heads: exported for an outside copy, compared with it later
# ---------------------------------------------------------------------------------
async def current_heads(store: Any) -> list[evidence.Head]:
    """Every evidence chain's head: the decision log's chains and the others (the
    destruction register)."""
    async with store.read() as uow:
        return list(await uow.decisions.heads()) + list(await uow.decisions.other_heads())


async def export_heads(store: ServiceStore, path: Path, at: datetime) -> dict[str, Any]:
    """Append the current heads to `path` as one JSON line (the file created 0600) and
    return them. Whoever keeps a copy of the file elsewhere can later prove that no chain
    was rolled back behind a line of it (`dialgate audit verify --heads FILE`)."""
    doc = evidence.export_line(await current_heads(store), store.evidence, at.isoformat())
    line = (json.dumps(doc, separators=(",", ":"), sort_keys=True) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return doc


async def compare_heads(store: ServiceStore, path: Path) -> list[str]:
    """The current heads against the last line of an export file: chains rolled back,
    missing, or forked since."""
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except OSError as exc:
        return [f"{path}: cannot read the exported heads: {exc.strerror}"]
    if not lines:
        return [f"{path}: no exported heads in it"]
    try:
        exported = json.loads(lines[-1])
    except ValueError:
        return [f"{path}: the last line is not JSON"]
    heads = {h.chain: h for h in await current_heads(store)}
    return evidence.compare_with_export(heads, exported)
