"""Phone numbers for the policy core: E.164 normalisation, the callee's zone, masking.

`phonenumbers` is the only source of truth about numbering plans. Lookups are cached
because the gate asks about the same few thousand numbers all day long.
"""

from __future__ import annotations

import re
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, ValidationResult
from phonenumbers import timezone as pn_timezone

__all__ = ["NumberFormatError", "normalize_number", "number_zone", "number_zones", "mask_number", "load_zone"]


class NumberFormatError(ValueError):
    """A phone number that cannot be read as a dialable number; the message says why."""

    def __init__(self, raw: str, reason: str) -> None:
        super().__init__(f"{mask_number(raw)!s}: {reason}")
        self.raw = raw
        self.reason = reason


_PARSE_REASONS = {
    NumberParseException.INVALID_COUNTRY_CODE: "unknown country calling code",
    NumberParseException.NOT_A_NUMBER: "not a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short after the international prefix",
    NumberParseException.TOO_SHORT_NSN: "too short",
    NumberParseException.TOO_LONG: "too long",
}

_POSSIBLE_REASONS = {
    ValidationResult.INVALID_COUNTRY_CODE: "unknown country calling code",
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.INVALID_LENGTH: "wrong length for its country",
}


def normalize_number(raw: str, region: str = "CN") -> str:
    """Return `raw` as E.164 (``"13800000001"`` → ``"+8613800000001"``).

    National-format numbers are read in `region` (ISO 3166 alpha-2). Raises
    `NumberFormatError` (a `ValueError`) naming what is wrong: empty, not a number,
    unknown country code, too short/long, or not a number of any numbering plan.
    """
    if not isinstance(raw, str):
        raise NumberFormatError(str(raw), f"expected a string, got {type(raw).__name__}")
    if raw in _VALID:  # an E.164 number this module produced: valid in any region
        return raw
    region = region.upper() if region else "CN"
    return _cn_mobile(raw, region) or _normalize(raw.strip(), region)


def _cn_mobile(raw: str, region: str) -> str | None:
    """A Chinese mobile number written plainly (``+8613800000001``, or ``13800000001``
    read in CN) checked against phonenumbers' own CN mobile pattern, without a parse: the
    numbers a collections call center dials most, and on a SIP gate mostly new ones,
    each of which would pay for a full parse. Anything else (spaces, other forms, other countries): None."""
    if raw.startswith("+86"):
        nsn = raw[3:]
    elif region == "CN" and raw[:1] == "1":
        nsn = raw
    else:
        return None
    if len(nsn) != 11 or not (nsn.isascii() and nsn.isdigit()) or _CN_MOBILE_NSN.fullmatch(nsn) is None:
        return None
    e164 = "+86" + nsn
    _remember(e164, _CN_MOBILE_ZONE)
    return e164


def _remember(e164: str, zone: str | None) -> None:
    if len(_VALID) >= _VALID_MAX:
        _VALID.clear()
    _VALID[e164] = zone


# E.164 numbers `_normalize` produced → their single zone (None: several or unknown).
# One parse of a never-seen number then serves the gate's normalisation, the policy's
# own check of the normalised number and the callee's zone (three parses before; the
# SIP gate sees a new number on most calls). Bounded: emptied when full.
_VALID: dict[str, str | None] = {}
_VALID_MAX = 65536


@lru_cache(maxsize=65536)
def _normalize(raw: str, region: str) -> str:
    if not raw:
        raise NumberFormatError(raw, "empty phone number")
    try:
        parsed = phonenumbers.parse(raw, region)
    except NumberParseException as exc:
        raise NumberFormatError(raw, _PARSE_REASONS.get(exc.error_type, str(exc))) from exc
    possible = phonenumbers.is_possible_number_with_reason(parsed)
    if possible not in (ValidationResult.IS_POSSIBLE, ValidationResult.IS_POSSIBLE_LOCAL_ONLY):
        raise NumberFormatError(raw, _POSSIBLE_REASONS.get(possible, "not a possible number"))
    if not phonenumbers.is_valid_number(parsed):
        code = parsed.country_code  # parse() always sets it; typed optional by the library
        region_of = phonenumbers.region_code_for_country_code(code) if code is not None else "ZZ"
        raise NumberFormatError(raw, f"not a valid number in the numbering plan of {region_of}")
    e164 = phonenumbers.format_number(parsed, PhoneNumberFormat.E164)
    _remember(e164, _single_zone(parsed))
    return e164


def is_dialable(number: str, region: str = "CN") -> bool:
    try:
        _normalize(number.strip(), region)
    except NumberFormatError:
        return False
    return True


@lru_cache(maxsize=1024)
def load_zone(name: str) -> ZoneInfo | None:
    """The IANA zone `name`, or None when it does not exist."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return None


@lru_cache(maxsize=65536)
def number_zone(number: str) -> str | None:
    """The single IANA zone of an E.164 number, or None when it has none or several.

    A `+1 212…` number answers ``America/New_York``; a `+1` number whose area code
    spans zones, or a country with several zones and no finer data, answers None so
    the caller falls back to the policy's default zone.
    """
    if number in _VALID:
        return _VALID[number]
    try:
        parsed = phonenumbers.parse(number, None)
    except NumberParseException:
        return None
    return _single_zone(parsed)


@lru_cache(maxsize=4096)
def number_zones(number: str) -> tuple[str, ...]:
    """Every IANA zone phonenumbers names for an E.164 number (empty when none)."""
    try:
        parsed = phonenumbers.parse(number, None)
    except NumberParseException:
        return ()
    zones = pn_timezone.time_zones_for_number(parsed)
    return tuple(z for z in zones if z != pn_timezone.UNKNOWN_TIMEZONE and load_zone(z) is not None)


def _single_zone(parsed: phonenumbers.PhoneNumber) -> str | None:
    zones = pn_timezone.time_zones_for_number(parsed)
    if len(zones) != 1:
        return None
    zone = zones[0]
    if zone == pn_timezone.UNKNOWN_TIMEZONE or load_zone(zone) is None:
        return None
    return zone


def mask_number(number: str) -> str:
    """Mask the middle of a phone number: the service's one rule, for logs, details,
    recordings and every role without full-number rights.

    A Chinese number (``+86``) loses its country code; any other keeps ``+`` and its
    first digits. Then the first three and last four digits stay, the middle is four
    ``*``: ``+8613800000001`` → ``138****0001``, ``+12125550100`` → ``+121****0100``.
    A short number (5-7 digits) keeps its first digit and last two; four digits or
    fewer are all hidden, since the last four would be the whole number."""
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


def _cn_mobile_pattern() -> re.Pattern[str]:
    metadata = phonenumbers.PhoneMetadata.metadata_for_region("CN")
    desc = metadata.mobile if metadata is not None else None
    if desc is None or desc.national_number_pattern is None:
        raise ImportError("phonenumbers has no metadata for CN mobile numbers")
    return re.compile(desc.national_number_pattern)


# phonenumbers' own pattern of CN mobile national numbers (11 digits), and their zone.
_CN_MOBILE_NSN = _cn_mobile_pattern()
_CN_MOBILE_ZONE = _single_zone(phonenumbers.parse("+8613800000000", None))
