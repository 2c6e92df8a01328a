"""Keyed hash chains: evidence that cannot be re-forged from the database alone.

Every append-only record DialGate keeps as evidence (the decision log, the destruction
register, any later history) is a chain of links. A link's hash is

    HMAC-SHA-256(key, prev_hash + "\\n" + record bytes)          (scheme hmac-sha256/v1)

so changing a record, or re-hashing it after a change, needs the key. The key lives
outside the database (a 0600 key file or an environment variable, like the recording
keys; see `load_key`). Each chain also has a *head* row: the last seq and hash plus a
MAC over them, so deleting records at the end of a chain, or rolling the head back to
an earlier link that is still in the table, is caught without the key too.

Records written before the key existed keep their unkeyed SHA-256 hashes. The switch is
part of the chain: the first keyed link's `prev_hash` is the last unkeyed hash (so the
old records are bound into the keyed chain) and the head's MAC covers `keyed_from`, the
first keyed seq. Moving `keyed_from` to pass keyed records off as old ones, or dropping
the MAC from the head, needs the key as well.

This module is the one place that knows the scheme: chains call `link` to append and
`verify_chain` (or, for a walk of their own, `expected_hash` and `head_problem`) to
check. It is pure but for `load_key`, which reads or creates the key file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast
from dataclasses import dataclass
from pathlib import Path

SCHEME = "hmac-sha256/v1"
GENESIS = "0" * 64
KEY_BYTES = 32
DEFAULT_KEY_FILE = Path("keys") / "evidence.key"  # under the data dir

Legacy = Callable[[str, bytes], str]


class EvidenceKeyError(Exception):
    """The evidence key is missing, malformed or exposed."""


@dataclass(frozen=True, slots=True)
class Head:
    """A chain's head row: its last link, the first keyed seq and the head's MAC (None:
    written before the key existed)."""

    chain: str
    seq: int
    hash: str
    keyed_from: int | None
    mac: str | None


@dataclass(frozen=True, slots=True)
class Link:
    """One stored record, as a verifier sees it: `data` is exactly the bytes hashed."""

    seq: int
    prev_hash: str
    hash: str
    data: bytes
    label: str = ""  # how a problem names the record (a decision id, a recording id)


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str  # edited | inserted | deleted | unkeyed
    seq: int
    detail: str


class EvidenceKey:
    """The secret behind every chain. `key_id` names it in exported heads without
    revealing it."""

    __slots__ = ("_keyed", "_secret", "key_id", "source")

    def __init__(self, secret: bytes, source: str = "") -> None:
        if len(secret) < KEY_BYTES:
            raise EvidenceKeyError(f"the evidence key from {source or 'memory'} has {len(secret)} bytes; "
                                   f"it needs {KEY_BYTES}")
        self._secret = secret
        # The key's pads hashed once; each MAC copies this state (runs on every decision).
        self._keyed = hmac.new(secret, digestmod=hashlib.sha256)
        self.source = source
        self.key_id = hashlib.sha256(b"dialgate-evidence-key-id\n" + secret).hexdigest()[:16]

    @classmethod
    def ephemeral(cls) -> "EvidenceKey":
        """A random key held in memory only: for stores built without configuration
        (tests, tools); what it chained verifies only while the process lives."""
        return cls(secrets.token_bytes(KEY_BYTES), "ephemeral")

    def link(self, prev_hash: str, data: bytes) -> str:
        mac = self._keyed.copy()
        mac.update(prev_hash.encode() + b"\n")
        mac.update(data)
        return mac.hexdigest()

    def head_mac(self, chain: str, seq: int, last_hash: str, keyed_from: int | None) -> str:
        mac = self._keyed.copy()
        mac.update(f"dialgate-head/v1\n{chain}\n{seq}\n{last_hash}\n{keyed_from}".encode())
        return mac.hexdigest()

    def seal_head(self, chain: str, seq: int, last_hash: str, keyed_from: int | None) -> Head:
        return Head(chain, seq, last_hash, keyed_from, self.head_mac(chain, seq, last_hash, keyed_from))

    def hand_over(self) -> str:
        """The secret as hex, for a child process through a pipe (never argv or a log)."""
        return self._secret.hex()

    def __repr__(self) -> str:  # never the secret
        return f"EvidenceKey(key_id={self.key_id!r}, source={self.source!r})"


def sha256_link(separator: bytes) -> Legacy:
    """The unkeyed link a chain used before keys: SHA-256(prev_hash + separator + data)."""

    def legacy(prev_hash: str, data: bytes) -> str:
        return hashlib.sha256(prev_hash.encode() + separator + data).hexdigest()

    return legacy


def next_keyed_from(head: Head | None, seq: int) -> int:
    """`keyed_from` for a link appended at `seq` after `head`: kept once set; else this
    link is the chain's first keyed one."""
    return head.keyed_from if head is not None and head.keyed_from is not None else seq


def expected_hash(key: EvidenceKey, legacy: Legacy, keyed_from: int | None, seq: int,
                  prev_hash: str, data: bytes) -> str:
    keyed = keyed_from is not None and seq >= keyed_from
    return key.link(prev_hash, data) if keyed else legacy(prev_hash, data)


def head_problem(key: EvidenceKey, head: Head | None, last_seq: int, last_hash: str) -> Problem | None:
    """What is wrong with a chain's head given the last link actually stored."""
    if head is None:
        if last_seq == 0:
            return None
        return Problem("inserted", last_seq, "the chain has records but no head: written outside DialGate")
    if head.mac is None:
        return Problem("unkeyed", head.seq, "the chain head carries no MAC: not anchored under the evidence key "
                                            "(run the service or `dialgate audit anchor` once)")
    if not hmac.compare_digest(head.mac, key.head_mac(head.chain, head.seq, head.hash, head.keyed_from)):
        return Problem("edited", head.seq, "the chain head's MAC does not match: head edited without the key")
    if head.seq > last_seq:
        return Problem("deleted", last_seq + 1, f"records {last_seq + 1}..{head.seq} are missing at the end of the chain")
    if head.seq < last_seq or head.hash != last_hash:
        return Problem("inserted", last_seq, "records after the chain head")
    return None


def verify_chain(links: Iterable[Link], head: Head | None, key: EvidenceKey, legacy: Legacy) -> list[Problem]:
    """Every problem of one chain, in order; empty when intact. `links` in seq order."""
    problems: list[Problem] = []
    keyed_from = head.keyed_from if head is not None else None
    prev, last_seq = GENESIS, 0
    for expected_seq, ln in enumerate(links, start=1):
        name = f" ({ln.label})" if ln.label else ""
        if ln.seq != expected_seq:
            kind = "deleted" if ln.seq > expected_seq else "inserted"
            problems.append(Problem(kind, ln.seq, f"record {ln.seq}{name}: expected sequence {expected_seq}"))
        if ln.prev_hash != prev:
            problems.append(Problem("edited", ln.seq, f"record {ln.seq}{name}: does not link to the record before it"))
        if not hmac.compare_digest(ln.hash, expected_hash(key, legacy, keyed_from, ln.seq, ln.prev_hash, ln.data)):
            problems.append(Problem("edited", ln.seq, f"record {ln.seq}{name}: content does not match its "
                                                      f"{'MAC' if keyed_from is not None and ln.seq >= keyed_from else 'hash'}"))
        prev, last_seq = ln.hash, ln.seq
    hp = head_problem(key, head, last_seq, prev)
    if hp is not None:
        problems.append(hp)
    return problems


def export_line(heads: Iterable[Head], key: EvidenceKey, at: str) -> dict[str, object]:
    """The current heads as one JSON-able document for an outside copy (see `dialgate
    audit heads`): whoever keeps it can later prove a chain was not rolled back."""
    return {
        "at": at,
        "scheme": SCHEME,
        "key_id": key.key_id,
        "heads": [{"chain": h.chain, "seq": h.seq, "hash": h.hash, "keyed_from": h.keyed_from, "mac": h.mac}
                  for h in heads],
    }


def compare_with_export(heads: Mapping[str, Head], exported: Mapping[str, object]) -> list[str]:
    """Chains now behind (or beside) what an earlier export saw: a rollback."""
    problems = []
    # Parsed JSON: a malformed export fails here with a TypeError or KeyError.
    for item in cast(Iterable[Mapping[str, Any]], exported.get("heads", [])):
        chain, seq, digest = item["chain"], int(item["seq"]), item["hash"]
        now = heads.get(chain)
        if now is None:
            problems.append(f"{chain}: exported at seq {seq}, now missing")
        elif now.seq < seq:
            problems.append(f"{chain}: exported at seq {seq}, now at {now.seq}: rolled back")
        elif now.seq == seq and now.hash != digest:
            problems.append(f"{chain}: seq {seq} has another hash than exported")
    return problems


# ---------------------------------------------------------------------------------
# The key: file (0600, created in the data dir by default) or environment
# ---------------------------------------------------------------------------------
def load_key(data_dir: Path, key_file: str = "", key_env: str = "",
             env: Mapping[str, str] | None = None) -> EvidenceKey:
    """`key_env` names a variable holding the key (64 hex or base64 of 32+ bytes);
    else `key_file`, else `<data_dir>/keys/evidence.key`, created 0600 when missing
    (only the default is created: a named file that is missing is a mistake)."""
    env = os.environ if env is None else env
    if key_env:
        value = env.get(key_env, "")
        if not value:
            raise EvidenceKeyError(f"audit.key_env names {key_env}, which is not set")
        return EvidenceKey(_decode(value.strip(), key_env), f"${key_env}")
    path = Path(key_file) if key_file else Path(data_dir) / DEFAULT_KEY_FILE
    if not path.exists():
        if key_file:
            raise EvidenceKeyError(f"audit.key_file names {path}, which does not exist")
        _create(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise EvidenceKeyError(f"{path} is readable by group or others (mode {mode:04o}); run: chmod 600 {path}")
    return EvidenceKey(_decode(path.read_text("ascii").strip(), str(path)), str(path))


def _decode(value: str, where: str) -> bytes:
    try:
        return bytes.fromhex(value) if len(value) == 2 * KEY_BYTES else base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise EvidenceKeyError(f"the evidence key in {where} is neither hex nor base64") from exc


def _create(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_hex(KEY_BYTES).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # refuses to overwrite: when two processes race, the first key wins
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


__all__ = [
    "DEFAULT_KEY_FILE", "GENESIS", "SCHEME", "EvidenceKey", "EvidenceKeyError", "Head", "Link", "Problem",
    "compare_with_export", "expected_hash", "export_line", "head_problem", "load_key", "next_keyed_from",
    "sha256_link", "verify_chain",
]
