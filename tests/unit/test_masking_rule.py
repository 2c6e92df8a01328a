"""One masking rule for phone numbers, whoever masks: the policy core, the application,
the SIP gate and the recordings vault all show a number the same way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from adapters.sip.gate import mask_number as sip_mask_number
from dialer.masking import mask_number as dialer_mask_number
from dialer.masking import mask_path, mask_sip_text, mask_text
from policy.numbers import mask_number

ROOT = Path(__file__).resolve().parents[2]

RULE = [
    # (number, masked)
    ("+8613800000001", "138****0001"),  # China: the country code goes, 3 + 4 stay
    ("13800000001", "138****0001"),  # a national mobile number reads the same
    ("+8602165430000", "021****0000"),  # a fixed line with its area code
    ("+12125550100", "+121****0100"),  # elsewhere: the plus and first digits stay
    ("+447911123456", "+447****3456"),
    ("1234567", "1****67"),  # short numbers keep the first digit and last two
    ("12345", "1**45"),
    ("1001", "****"),  # four digits or fewer: nothing of them
    ("+861", "+***"),
    (" 13800000001 ", "138****0001"),  # surrounding blanks are not digits
]


@pytest.mark.parametrize(("number", "masked"), RULE)
def test_a_phone_number_is_masked_by_the_one_rule(number: str, masked: str) -> None:
    assert mask_number(number) == masked


@pytest.mark.parametrize(("number", "masked"), RULE)
def test_the_application_and_the_sip_gate_mask_with_the_policy_cores_rule(number: str, masked: str) -> None:
    assert dialer_mask_number(number) == masked
    assert sip_mask_number(number) == masked


def test_the_sip_gate_masks_an_absent_number_as_empty() -> None:
    assert sip_mask_number(None) == ""
    assert sip_mask_number("") == ""


@pytest.mark.parametrize(("number", "masked"), [r for r in RULE if len(r[0].strip().lstrip("+")) >= 7])
def test_a_number_inside_text_a_sip_uri_or_a_path_is_masked_the_same_way(number: str, masked: str) -> None:
    bare = number.strip()
    assert mask_text(f"called {bare} twice") == f"called {masked} twice"
    assert mask_sip_text(f"<sip:{bare}@pbx>") == f"<sip:{masked}@pbx>"
    assert mask_path(f"/rec/{bare.lstrip('+')}-a84b.wav") == f"/rec/{mask_number(bare.lstrip('+'))}-a84b.wav"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("家属提供新号码138-0013-8000", "家属提供新号码138****8000"),
        ("new number 138 0013 8000, call after 18:00", "new number 138****8000, call after 18:00"),
        ("+86 138 0013 8000", "138****8000"),
        ("+86-138-0013-8000 (mother)", "138****8000 (mother)"),
        ("office 010-62345678", "office 010****5678"),
        ("0755-12345678", "075****5678"),
        # not numbers: a date, a UUID, an amount, a time of day
        ("2026-11-24 550e8400-e29b-41d4-a716-446655440000 1,234.50 12:30:45",
         "2026-11-24 550e8400-e29b-41d4-a716-446655440000 1,234.50 12:30:45"),
    ],
)
def test_a_phone_number_written_with_spaces_or_dashes_is_masked_in_text(text: str, masked: str) -> None:
    assert mask_text(text) == masked


def test_no_module_defines_a_phone_masking_rule_of_its_own() -> None:
    """Every other `mask_number` is an import or a thin wrapper of the policy core's,
    so a second rule cannot creep back in beside it."""
    own = []
    for package in ("policy", "recordings", "dialer", "adapters"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef) and node.name == "mask_number":
                    own.append(str(path.relative_to(ROOT)))
    assert sorted(own) == ["adapters/sip/gate.py", "policy/numbers.py"]
