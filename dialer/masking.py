"""Masking phone numbers for logs, events and roles that must not see them.

``+8613800000001`` → ``138****0001``; other countries keep ``+`` and the country code's
first digits: ``+12125550123`` → ``+121****0123``.
"""

from __future__ import annotations

import re
from typing import Any

# A run of 7+ digits, optionally with a leading + : phone, card and ID numbers alike.
# Not inside identifiers, dates or decimals (uuid segments, 2026-11-24, 1732368000.5).
_NUMBER_RE = re.compile(r"(?<![\w\-.:])\+?\d{7,}[Xx]?(?![\w\-.:])")


def mask_number(number: str) -> str:
    digits = number.strip()
    plus = ""
    if digits.startswith("+86") and len(digits) > 6:
        digits = digits[3:]
    elif digits.startswith("+"):
        plus, digits = "+", digits[1:]
    if len(digits) <= 4:
        return plus + "*" * len(digits)
    if len(digits) <= 7:
        return plus + digits[:1] + "*" * (len(digits) - 3) + digits[-2:]
    return plus + digits[:3] + "****" + digits[-4:]


def mask_text(text: str) -> str:
    """Mask every number-looking run of 7 or more digits inside free text."""

    def repl(m: re.Match[str]) -> str:
        return mask_number(m.group(0))

    return _NUMBER_RE.sub(repl, text)


def mask_deep(value: Any) -> Any:
    """Mask numbers in every string of a JSON-like structure."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: mask_deep(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_deep(v) for v in value]
    return value
