"""The suite's test data lives in the repository and is the bytes its README names."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from tests.conftest import data_dir

SUMS = sorted(data_dir().glob("*/SHA256SUMS"))
REPO = Path(__file__).resolve().parents[2]


def listed(sums: Path) -> list[tuple[str, Path]]:
    rows = []
    for line in sums.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        rows.append((digest, sums.parent / name.lstrip("*")))
    return rows


def test_both_data_sets_carry_a_checksum_list() -> None:
    assert {s.parent.name for s in SUMS} == {"sip-torture", "protos-sip"}


@pytest.mark.parametrize("sums", SUMS, ids=lambda p: p.parent.name)
def test_every_data_file_matches_its_recorded_sha256(sums: Path) -> None:
    rows = listed(sums)
    assert rows
    for digest, path in rows:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, path.name


def test_the_torture_set_has_all_fifty_messages_and_nothing_unlisted() -> None:
    folder = data_dir() / "sip-torture"
    named = {p.name for _, p in listed(folder / "SHA256SUMS")}
    assert {p.name for p in folder.glob("*.sip")} == named and len(named) == 50


def test_no_test_reads_a_shared_folder_outside_the_checkout() -> None:
    outside = re.compile(r"""(\.\./shared|["']/work/|DIALGATE_SHARED)""")
    offenders = [
        str(p.relative_to(REPO))
        for p in (REPO / "tests").rglob("*.py")
        if p != Path(__file__).resolve() and outside.search(p.read_text(encoding="utf-8"))
    ]
    assert offenders == []
