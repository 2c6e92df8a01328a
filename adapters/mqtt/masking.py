"""Last line of defence against phone numbers leaving in clear on the bus.

Events are built masked by the service; this guard masks any Chinese mobile number
(optionally +86/0086) still standing alone in a payload, as `138****0001`. It matches
only an 11-digit run not glued to letters, digits, '-' or '_', so ids such as
`C13800138000` or UUID parts are left alone.
"""

from __future__ import annotations

import re

_MOBILE = re.compile(rb"(?<![\w\-+])(?:\+?86|0086)?(1[3-9]\d)(\d{4})(\d{4})(?![\w\-])")
_MOBILE_TEXT = re.compile(r"(?<![\w\-+])(?:\+?86|0086)?(1[3-9]\d)(\d{4})(\d{4})(?![\w\-])")
_LONG_DIGITS = re.compile(r"\d{7,}")


def mask_phones_in_bytes(payload: bytes) -> tuple[bytes, int]:
    """Mask mobile numbers in a JSON payload; returns (payload, how many were masked)."""
    return _MOBILE.subn(lambda m: m.group(1) + b"****" + m.group(3), payload)


def mask_text(text: str) -> str:
    """Mask for logs and dead-letter excerpts: mobiles as 138****0001, any other run of
    7+ digits (landlines, card and ID numbers) down to its last 4 digits."""
    text = _MOBILE_TEXT.sub(lambda m: m.group(1) + "****" + m.group(3), text)
    return _LONG_DIGITS.sub(lambda m: "*" * (len(m.group(0)) - 4) + m.group(0)[-4:], text)
