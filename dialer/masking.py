"""The one place numbers are masked: phone, card and PRC ID numbers, in fields that hold
one and inside free text, for logs, events, exports and roles that must not see them.

Rules (the same everywhere):

* a phone number: ``+8613800000001`` → ``138****0001``; other countries keep ``+`` and
  the country code's first digits: ``+12125550123`` → ``+121****0123`` (`mask_number`,
  the policy core's rule, which decision details and recordings use too);
* a card-like number (13-19 digits, alone or in groups of 4 split by spaces or dashes,
  passing the Luhn check) and a PRC resident ID number (18 characters whose ISO 7064
  check character matches, or the old 15-digit form): every character but the last
  four becomes ``*``: ``6222021234567890`` → ``************7890``;
* any other run of 7 or more digits in free text counts as a phone number, and so do a
  mainland mobile in groups (``138-0013-8000``, ``+86 138 0013 8000``) and a landline
  with its area code (``010-62345678``).

Where it applies:

* `mask_text` / `mask_deep` — every string a role without full-number rights is
  shown (notes, names, any text field) over the API, in the console and its CSV
  files, and everything written to logs and events;
* `redact_on_input` — free text as it is stored (outcome notes, debtor and contact
  names, listening and legal-hold reasons): card and ID numbers are masked *before* they reach the database, since no
  role needs them there (cases carry the numbers a collector works with in structured
  fields) and a stored one would be in every backup. Phone numbers in a note are kept:
  a collector notes a new number for data staff to verify and add; roles without
  full-number rights see it masked on the way out.
* `mask_bytes` — the event bus's last guard over a serialised payload.
"""

from __future__ import annotations

import re
from typing import Any

# One masking rule for the whole service: the policy core's (its check details use it).
from policy.numbers import mask_number

__all__ = [
    "is_card_number", "is_prc_id", "mask_bytes", "mask_deep", "mask_log_deep", "mask_number", "mask_optional", "mask_path", "mask_sip_text",
    "mask_log_text", "mask_text", "redact_on_input",
]

# A run of 7+ digits, optionally with a leading + (an ID may end in X); card-style
# groups of four split by a space or dash; a mainland mobile as people write it
# (138-0013-8000, +86 138 0013 8000) and a landline with its area code (010-62345678).
# Not inside identifiers, dates or decimals (uuid segments, 2026-11-24, 1732368000.5).
# The neighbours checked are ASCII only: Chinese text runs numbers into its words
# (电话13800000001), which \w would count as letters and so leave the number whole.
_NUMBER_RE = re.compile(
    r"(?<![0-9A-Za-z_\-:])(?<!\d\.)(?:\+?\d{7,}[Xx]?|\d{4}(?:[ \-]\d{4}){2,3}(?:[ \-]\d{1,3})?"
    r"|(?:\+?86[ \-]?)?1[3-9]\d[ \-]\d{4}[ \-]\d{4}|0\d{2,3}-\d{7,8})"
    r"(?![0-9A-Za-z_\-:]|\.\d)"
)
_MOBILE_BYTES = re.compile(rb"(?<![\w\-+])(?:(?:\+?86|0086)[ \-]?)?(1[3-9]\d)[ \-]?(\d{4})[ \-]?(\d{4})(?![\w\-])")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def is_card_number(digits: str) -> bool:
    """13-19 digits passing the Luhn check (payment cards)."""
    if not (13 <= len(digits) <= 19 and digits.isdigit()):
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def is_prc_id(text: str) -> bool:
    """A PRC resident ID number: 18 characters with a matching check character, or the
    15-digit first-generation form (which has none: its date of birth must be valid)."""
    if len(text) == 18 and text[:17].isdigit():
        check = _ID_CHECK[sum(int(c) * w for c, w in zip(text[:17], _ID_WEIGHTS)) % 11]
        return text[17].upper() == check
    if len(text) == 15 and text.isdigit():
        month, day = int(text[8:10]), int(text[10:12])
        return 1 <= month <= 12 and 1 <= day <= 31
    return False


def _last_four(digits: str) -> str:
    return "*" * (len(digits) - 4) + digits[-4:]


def _repl(m: re.Match[str]) -> str:
    found = m.group(0)
    bare = found.replace(" ", "").replace("-", "")
    if is_prc_id(bare) or is_card_number(bare):
        return _last_four(bare)
    return mask_number(bare)


def _redact(m: re.Match[str]) -> str:
    found = m.group(0)
    bare = found.replace(" ", "").replace("-", "")
    return _last_four(bare) if is_prc_id(bare) or is_card_number(bare) else found


# Short texts seen to hold no number (rule ids, zones, windows, local times): every
# decision masks a dozen of them, the same ones again and again. Only texts without a
# number are kept, so no phone number stays behind in this set.
_CLEAN: set[str] = set()
_CLEAN_MAX = 4096
_CLEAN_LEN = 80


def mask_text(text: str) -> str:
    """Mask every phone, card and ID number inside free text."""
    if text in _CLEAN:
        return text
    if _NUMBER_RE.search(text) is None:
        if len(text) <= _CLEAN_LEN:
            if len(_CLEAN) >= _CLEAN_MAX:
                _CLEAN.clear()
            _CLEAN.add(text)
        return text
    return _NUMBER_RE.sub(_repl, text)


def mask_optional(text: str | None) -> str | None:
    return None if text is None else mask_text(text)


def redact_on_input(text: str | None) -> str | None:
    """Free text as it may be stored: card and PRC ID numbers masked, the rest kept."""
    if not text or _NUMBER_RE.search(text) is None:
        return text
    return _NUMBER_RE.sub(_redact, text)


# SIP carries numbers as URI users (sip:13800000001@pbx, tel:+86…), right after a colon.
_URI_USER_RE = re.compile(r"(?<=[:])\+?\d{7,}(?=[@;>\s]|$)")


def mask_sip_text(text: str) -> str:
    """`mask_text` for SIP messages and URIs: numbers as URI users too."""
    return mask_text(_URI_USER_RE.sub(lambda m: mask_number(m.group(0)), text))


# Secrets a library or an exception text may carry: API tokens, a URL's password (a
# database DSN, a broker URL), key=value credentials; replaced whole, never partly shown.
_TOKEN_RE = re.compile(r"dg_[A-Za-z0-9_\-]{8,}")
_URL_PASSWORD_RE = re.compile(r"(?<=://)([^/\s:@]*):[^@\s/]+@")
_KEY_SECRET_RE = re.compile(r"(?i)\b(password|passwd|pwd|secret|pin|api[_-]?key|token)(['\"]?\s*[=:]\s*['\"]?)(?!\*\*\*)[^\s&'\",;)}\]]+")


def mask_log_text(text: str) -> str:
    """A log line's text: `mask_text`, numbers as SIP URI users too (library and
    exception texts quote INVITEs), and secrets replaced by ``***``. The cheap tests
    first: most values have neither a colon, an ``=`` nor a token prefix."""
    if ":" in text or "=" in text or "dg_" in text:
        text = _TOKEN_RE.sub("dg_***", text)
        text = _URL_PASSWORD_RE.sub(r"\1:***@", text)
        text = _KEY_SECRET_RE.sub(r"\1\2***", text)
        return mask_sip_text(text)
    return mask_text(text)


def mask_log_deep(value: Any) -> Any:
    """`mask_deep` with `mask_log_text`, keys included (a dict keyed by number)."""
    if isinstance(value, str):
        return mask_log_text(value)
    if isinstance(value, dict):
        return {mask_log_text(k) if isinstance(k, str) else k: mask_log_deep(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_log_deep(v) for v in value]
    return value


_ANY_RUN_RE = re.compile(r"\d{7,}")


def mask_path(text: str) -> str:
    """Paths and URLs (a PBX's recording file name): every run of 7+ digits, wherever it
    stands, since names glue the number to other parts (13800000001-a84b.wav)."""
    return _ANY_RUN_RE.sub(lambda m: mask_number(m.group(0)), text)


def mask_deep(value: Any) -> Any:
    """Mask numbers in every string of a JSON-like structure."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: mask_deep(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_deep(v) for v in value]
    return value


def mask_bytes(payload: bytes) -> tuple[bytes, int]:
    """A serialised event's last guard: Chinese mobile numbers (optionally +86/0086)
    standing alone, as ``138****0001``, and card and ID numbers as their last four;
    returns (payload, how many were masked). Ids such as ``C13800138000`` or UUID parts
    are left alone."""
    payload, count = _MOBILE_BYTES.subn(lambda m: m.group(1) + b"****" + m.group(3), payload)
    text = payload.decode("utf-8", errors="surrogateescape")
    if _NUMBER_RE.search(text) is None:
        return payload, count
    hits = 0

    def redact(m: re.Match[str]) -> str:
        nonlocal hits
        out = _redact(m)
        hits += out != m.group(0)
        return out

    text = _NUMBER_RE.sub(redact, text)
    return (text.encode("utf-8", errors="surrogateescape"), count + hits) if hits else (payload, count)
