"""Masking phone numbers for logs, events and roles that must not see them.

``+8613800000001`` → ``138****0001``; other countries keep ``+`` and the country code's
first digits: ``+12125550123`` → ``+121****0123``.
"""

from __future__ import annotations

import re
from typing import Any

# One masking rule for the whole service: the policy core's (its check details use it).
from policy.numbers import mask_number

__all__ = ["mask_number", "mask_text", "mask_deep"]

# A run of 7+ digits, optionally with a leading + : phone, card and ID numbers alike.
# Not inside identifiers, dates or decimals (uuid segments, 2026-11-24, 1732368000.5).
_NUMBER_RE = re.compile(r"(?<![\w\-.:])\+?\d{7,}[Xx]?(?![\w\-.:])")


# Short texts seen to hold no number (rule ids, zones, windows, local times): every
# decision masks a dozen of them, the same ones again and again. Only texts without a
# number are kept, so no phone number stays behind in this set.
_CLEAN: set[str] = set()
_CLEAN_MAX = 4096
_CLEAN_LEN = 80


def _repl(m: re.Match[str]) -> str:
    return mask_number(m.group(0))


def mask_text(text: str) -> str:
    """Mask every number-looking run of 7 or more digits inside free text."""
    if text in _CLEAN:
        return text
    if _NUMBER_RE.search(text) is None:
        if len(text) <= _CLEAN_LEN:
            if len(_CLEAN) >= _CLEAN_MAX:
                _CLEAN.clear()
            _CLEAN.add(text)
        return text
    return _NUMBER_RE.sub(_repl, text)


def mask_deep(value: Any) -> Any:
    """Mask numbers in every string of a JSON-like structure."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: mask_deep(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_deep(v) for v in value]
    return value
