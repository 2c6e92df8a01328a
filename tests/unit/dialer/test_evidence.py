"""The keyed chain scheme (dialer/evidence.py) on its own: links, heads, the switch from
unkeyed SHA-256 records, exported heads, and the key file."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

import pytest

from dialer import evidence
from dialer.evidence import GENESIS, EvidenceKey, EvidenceKeyError, Head, Link

KEY = EvidenceKey(b"0123456789abcdef0123456789abcdef", "test")
LEGACY = evidence.sha256_link(b"\n")


def _chain(n: int, *, legacy_until: int = 0, key: EvidenceKey = KEY) -> tuple[list[Link], Head]:
    """`n` records; those with seq <= legacy_until in the unkeyed scheme."""
    links, prev = [], GENESIS
    for seq in range(1, n + 1):
        data = f'{{"seq":{seq},"allowed":false}}'.encode()
        digest = LEGACY(prev, data) if seq <= legacy_until else key.link(prev, data)
        links.append(Link(seq, prev, digest, data, f"d-{seq}"))
        prev = digest
    return links, key.seal_head("bank-a", n, prev, legacy_until + 1)


def test_a_link_is_hmac_sha256_of_the_previous_hash_and_the_record() -> None:
    assert KEY.link("ab", b"rec") == hmac.new(b"0123456789abcdef0123456789abcdef", b"ab\nrec", hashlib.sha256).hexdigest()
    assert KEY.link("ab", b"rec") != LEGACY("ab", b"rec")


def test_an_untouched_keyed_chain_verifies() -> None:
    links, head = _chain(5)
    assert evidence.verify_chain(links, head, KEY, LEGACY) == []


def test_a_record_edited_and_rehashed_without_the_key_is_reported_as_edited() -> None:
    links, head = _chain(3)
    data = links[1].data.replace(b"false", b"true")
    links[1] = Link(2, links[1].prev_hash, LEGACY(links[1].prev_hash, data), data)
    kinds = [(p.kind, p.seq) for p in evidence.verify_chain(links, head, KEY, LEGACY)]
    assert ("edited", 2) in kinds


def test_the_last_record_deleted_is_caught_by_the_head() -> None:
    links, head = _chain(4)
    [problem] = evidence.verify_chain(links[:3], head, KEY, LEGACY)
    assert (problem.kind, problem.seq) == ("deleted", 4)


def test_a_head_rolled_back_to_an_earlier_stored_link_fails_its_mac() -> None:
    links, head = _chain(4)
    rolled = Head(head.chain, 3, links[2].hash, head.keyed_from, head.mac)
    [problem] = evidence.verify_chain(links[:3], rolled, KEY, LEGACY)
    assert problem.kind == "edited" and "head" in problem.detail


def test_records_before_the_switch_verify_in_the_old_scheme_and_are_bound_by_the_first_keyed_one() -> None:
    links, head = _chain(5, legacy_until=3)
    assert head.keyed_from == 4
    assert evidence.verify_chain(links, head, KEY, LEGACY) == []
    # Re-chaining the old part in its own scheme breaks record 4, which needs the key.
    data = links[0].data.replace(b"false", b"true")
    forged, prev = [], GENESIS
    for ln in links[:3]:
        d = data if ln.seq == 1 else ln.data
        forged.append(Link(ln.seq, prev, LEGACY(prev, d), d))
        prev = forged[-1].hash
    kinds = [(p.kind, p.seq) for p in evidence.verify_chain(forged + links[3:], head, KEY, LEGACY)]
    assert kinds == [("edited", 4)]


def test_passing_keyed_records_off_as_old_ones_needs_the_key() -> None:
    links, head = _chain(5, legacy_until=3)
    moved = Head(head.chain, head.seq, head.hash, 6, head.mac)
    assert any(p.kind == "edited" and "head" in p.detail for p in evidence.verify_chain(links, moved, KEY, LEGACY))


def test_a_chain_under_another_key_does_not_verify() -> None:
    other = EvidenceKey(os.urandom(32))
    links, head = _chain(3, key=other)
    problems = evidence.verify_chain(links, head, KEY, LEGACY)
    assert problems[0].kind == "edited" and problems[-1].kind == "edited"


def test_a_head_without_a_mac_is_reported_unkeyed() -> None:
    links, head = _chain(2, legacy_until=2)
    [problem] = evidence.verify_chain(links, Head(head.chain, 2, head.hash, None, None), KEY, LEGACY)
    assert problem.kind == "unkeyed"


def test_an_export_taken_earlier_shows_a_rollback() -> None:
    links, head = _chain(4)
    exported = evidence.export_line([head], KEY, "2026-12-07T03:00:00Z")
    assert exported["key_id"] == KEY.key_id and "0123" not in str(exported)
    now = {"bank-a": KEY.seal_head("bank-a", 3, links[2].hash, 1)}
    assert evidence.compare_with_export(now, exported) == ["bank-a: exported at seq 4, now at 3: rolled back"]
    assert evidence.compare_with_export({"bank-a": head}, exported) == []


def test_the_default_key_file_is_created_0600_and_read_back(tmp_path: Path) -> None:
    first = evidence.load_key(tmp_path, env={})
    path = tmp_path / "keys" / "evidence.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert evidence.load_key(tmp_path, env={}).link("x", b"y") == first.link("x", b"y")
    assert "evidence.key" in repr(first) and path.read_text().strip() not in repr(first)


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text("ab" * 32)
    path.chmod(0o644)
    with pytest.raises(EvidenceKeyError, match="chmod 600"):
        evidence.load_key(tmp_path, str(path), env={})


def test_a_named_key_file_that_is_missing_is_refused_not_created(tmp_path: Path) -> None:
    with pytest.raises(EvidenceKeyError, match="does not exist"):
        evidence.load_key(tmp_path, str(tmp_path / "missing.key"), env={})
    assert not (tmp_path / "missing.key").exists()


def test_the_key_comes_from_the_named_environment_variable(tmp_path: Path) -> None:
    key = evidence.load_key(tmp_path, key_env="EVIDENCE_KEY", env={"EVIDENCE_KEY": "cd" * 32})
    assert key.link("a", b"b") == EvidenceKey(bytes.fromhex("cd" * 32)).link("a", b"b")
    with pytest.raises(EvidenceKeyError, match="not set"):
        evidence.load_key(tmp_path, key_env="EVIDENCE_KEY", env={})
    with pytest.raises(EvidenceKeyError, match="bytes"):
        evidence.load_key(tmp_path, key_env="EVIDENCE_KEY", env={"EVIDENCE_KEY": "c2hvcnQ="})
