"""The destruction register's hash chain.

Each entry's hash is a link over ``prev_hash`` and its canonical form: under the
service's evidence key (``HMAC-SHA-256``, `dialer.evidence`, passed in as `link`) from
the head's ``keyed_from`` on; ``SHA-256(prev_hash || canonical form)`` before it and
for a vault built without a key. The canonical form is the entry's fields (all but ``entry_hash``) as JSON with sorted keys, no spaces,
UTF-8, dates in ISO 8601 and datetimes in ISO 8601 UTC (so the hash survives a
database that hands times back in another offset). The first entry's ``prev_hash`` is
64 zeros.
Editing, removing or reordering any entry breaks every hash after it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import date, datetime, timezone

from recordings.model import DestructionEntry

__all__ = ["CHAIN", "GENESIS", "DestructionEntry", "canonical", "entry_hash", "legacy_hash", "seal", "verify_chain"]

CHAIN = "recordings.destruction_register"  # its head's name among the evidence heads
Link = Callable[[str, bytes], str]

GENESIS = "0" * 64


def canonical(entry: DestructionEntry) -> bytes:
    fields = asdict(entry)
    fields.pop("entry_hash")
    for k, v in fields.items():
        if isinstance(v, datetime):
            fields[k] = v.astimezone(timezone.utc).isoformat()
        elif isinstance(v, date):
            fields[k] = v.isoformat()
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def legacy_hash(prev_hash: str, data: bytes) -> str:
    return hashlib.sha256(prev_hash.encode() + data).hexdigest()


def entry_hash(entry: DestructionEntry, link: Link | None = None) -> str:
    return (link or legacy_hash)(entry.prev_hash, canonical(entry))


def seal(entry: DestructionEntry, link: Link | None = None) -> DestructionEntry:
    return replace(entry, entry_hash=entry_hash(entry, link))


def verify_chain(entries: list[DestructionEntry]) -> list[str]:
    """Problems of an unkeyed chain, in order; empty when intact. (The service verifies
    with the key: `dialer.evidence.verify_chain`.)"""
    problems: list[str] = []
    prev = GENESIS
    for expected_seq, e in enumerate(entries, start=1):
        if e.seq != expected_seq:
            problems.append(f"entry {e.seq}: expected sequence {expected_seq}")
        if e.prev_hash != prev:
            problems.append(f"entry {e.seq}: prev_hash does not match the entry before it")
        if entry_hash(e) != e.entry_hash:
            problems.append(f"entry {e.seq}: hash does not match its content")
        prev = e.entry_hash
    return problems
