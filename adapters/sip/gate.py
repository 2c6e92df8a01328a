"""The SIP gate's port to the application, and the mapping INVITE → question → answer.

The listener (``server.py``) knows SIP; the application knows dial policy. They meet at
:class:`SipDialAuthorizer`: the listener turns a parsed INVITE into a
:class:`SipDialInput`, awaits ``authorize()``, and turns the :class:`SipDialAnswer` into
``302 Moved Temporarily`` (allowed) or ``603 Decline`` (blocked).

Contract with the PBX (headers it may send, headers we return):

* Request-URI user: the dialed number (normalised to E.164, default region CN).
* ``P-Asserted-Identity`` (else the From user): the caller line presented.
* ``X-Agent-ID``: the agent; else the From user is looked up in ``[sip.extensions]``.
* ``X-Case-ID``: the case, when the PBX knows it (click-to-dial passes it).
* ``X-DialGate-Attempt``: a pre-authorised attempt id (click-to-dial); on a 302 we
  return the attempt id under the same header so the PBX can carry it on.
* 603 carries ``Reason: SIP;cause=603;text="<rule_id>"``, ``Warning: 399 dialgate
  "<English reason>"`` and ``Retry-After`` (seconds) when the policy knows the next
  lawful time.
* 503 with ``Retry-After: 1`` and ``Reason: SIP;cause=503;text="system.no_decision"``
  when no decision came in time or the deciding process could not be reached: not a
  decision, so a dispatcher may ask another gate (it never re-asks after a 603).
"""

from __future__ import annotations

import hashlib

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping, Protocol

import phonenumbers

from adapters.sip.message import NameAddr, SipMessage, SipParseError
from policy.numbers import mask_number as _mask_number

STORE_UNAVAILABLE = "system.store_unavailable"
STORE_UNAVAILABLE_REASON = "The dial gate could not reach its store; the call is blocked (fail closed)."
STORE_UNAVAILABLE_REASON_ZH = "拨号网关无法访问数据存储，呼叫已拦截（故障时拒绝）。"
NO_DECISION = "system.no_decision"
NO_DECISION_REASON = "This gate got no decision in time; the call is not placed here (another gate may decide)."
NO_DECISION_REASON_ZH = "本网关未能及时得到决定，呼叫未在此放行（可由另一网关决定）。"

_VISUAL_SEPARATORS = re.compile(r"[\s\-().]")
# RFC 3966's dial string as the gate takes it: digits, one leading "+", and the visual
# separators "-", ".", "(", ")". ASCII digits only (a full-width digit is not one), no
# letters (not even its hex digits: a number the policy decides must be the number the
# carrier dials), no "*"/"#" (service codes are not collection calls).
_DIAL_STRING = re.compile(r"\+?[0-9().\-]*[0-9][0-9().\-]*")
MAX_DIALED = 32  # characters of the dialed user part (E.164 has at most 15 digits)
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
# Caller fields read from the From/P-Asserted-Identity user part: bounded, printable.
MAX_CALLER_FIELD = 128
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1 control characters
MAX_CALL_ID = 256
# An 11-digit mainland mobile number as dialed (13x-19x, but not the 11x/12x/179xx
# carrier-selection prefixes that libphonenumber's CN metadata strips when parsing): its
# E.164 form is +86 and the digits, which is what phonenumbers returns for it (checked
# prefix by prefix by the unit tests), without the full parse each new number would pay.
_CN_MOBILE = re.compile(r"1(?:[3-68-9]\d|7[0-8])\d{8}")


@dataclass(frozen=True, slots=True)
class SipDialInput:
    """What the PBX asked, as read from one INVITE."""

    number: str  # dialed number, E.164 when it could be normalised, else as dialed
    dialed: str  # Request-URI user as received (unescaped)
    caller_line: str | None  # P-Asserted-Identity user, else From user (E.164 when phone-like)
    extension: str | None  # From user: the calling extension
    agent_id: str | None  # X-Agent-ID, else [sip.extensions][extension]
    case_id: str | None  # X-Case-ID
    attempt_id: str | None  # X-DialGate-Attempt (pre-authorised by click-to-dial)
    call_id: str
    request_key: str | None = None  # `invite_identity`: the same INVITE at any gate instance


@dataclass(frozen=True, slots=True)
class SipDialAnswer:
    allowed: bool
    rule_id: str
    reason: str  # English
    reason_zh: str = ""
    attempt_id: str | None = None
    retry_after: int | None = None  # seconds until the next lawful attempt, when known
    decision_id: str | None = None
    number: str | None = None  # the E.164 number decided on (a 302's Contact routes exactly it)


class DecisionUnavailable(ConnectionError):
    """The deciding side could not be asked at all (its process is gone or unreachable):
    no decision was made, so the listener answers 503 rather than a 603."""


class SipDialAuthorizer(Protocol):
    """Decide-and-reserve one SIP dial. Must not raise for a refusal: a refusal is an
    answer with ``allowed=False``. An exception means "could not decide": the listener
    declines the call with 603 ``system.store_unavailable`` (fail closed), except for
    :class:`DecisionUnavailable` and a time-out, which it answers 503
    ``system.no_decision`` (no decision was made: another gate may make it).
    """

    async def authorize(self, invite: SipDialInput) -> SipDialAnswer: ...


@lru_cache(maxsize=4096)  # caller lines and re-dialed numbers repeat
def normalize_number(raw: str, region: str = "CN") -> str:
    """E.164 for anything phone-like (``013800000001``, ``+86 138-0000-0001``, ``tel`` users).

    Returns the input unchanged when it is not a valid phone number (a PBX extension such
    as ``1001`` stays ``1001``), so it can still be compared and logged.
    """
    if region == "CN" and _CN_MOBILE.fullmatch(raw) is not None:
        return "+86" + raw
    text = _VISUAL_SEPARATORS.sub("", raw)
    if text.startswith("00"):
        text = "+" + text[2:]
    if not text or not all(ch.isdigit() for ch in text.lstrip("+")) or text.count("+") > 1:
        return raw
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return raw
    if not phonenumbers.is_possible_number(parsed):
        return raw
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def normalize_line(raw: str) -> str:
    """A caller line as configured or presented: E.164 for phone numbers, else as is."""
    return normalize_number(raw.strip())


def mask_number(number: str | None) -> str:
    """The service's one masking rule (``138****0001``), tolerating an absent number."""
    return _mask_number(number) if number else ""


def dial_input_from_invite(msg: SipMessage, extensions: Mapping[str, str]) -> SipDialInput:
    """Read the question out of a parsed INVITE. Raises SipParseError (status 484/416)
    when the Request-URI carries no number."""
    assert msg.uri is not None
    if msg.uri.scheme not in ("sip", "sips", "tel"):
        raise SipParseError(f"URI scheme {msg.uri.scheme!r} is not supported", status=416)
    dialed = msg.uri.user_number
    if not dialed:
        raise SipParseError("Request-URI has no user part (the dialed number)", status=484)
    if len(dialed) > MAX_DIALED or _DIAL_STRING.fullmatch(dialed) is None:
        raise SipParseError(
            "Request-URI user part is not a dial string (ASCII digits, a leading '+', separators - . ( ))", status=484
        )
    # RFC 3261 8.1.1: an INVITE carries both; one without them was not built by a PBX,
    # and what the gate decides on is read only from messages built exactly as specified
    if msg.get("max-forwards") is None:
        raise SipParseError("Max-Forwards header is missing from the INVITE")
    if not msg.get("contact"):
        raise SipParseError("Contact header is missing from the INVITE")
    if len(msg.call_id) > MAX_CALL_ID:
        raise SipParseError(f"Call-ID is longer than {MAX_CALL_ID} characters")
    from_ = msg.from_
    extension = _caller_field(from_.uri.user_number, "From user part")
    pai = _first_pai(msg)
    pai_user = _caller_field(pai.uri.user_number, "P-Asserted-Identity user part") if pai is not None else None
    line_source = pai_user or extension
    agent = _header_token(msg, "x-agent-id")
    if agent is None and extension is not None:
        agent = extensions.get(extension)
    return SipDialInput(
        number=normalize_number(dialed),
        dialed=dialed,
        caller_line=normalize_line(line_source) if line_source else None,
        extension=extension,
        agent_id=agent,
        case_id=_header_token(msg, "x-case-id"),
        attempt_id=_header_token(msg, "x-dialgate-attempt"),
        call_id=msg.call_id,
        request_key=invite_identity(msg),
    )


def invite_identity(msg: SipMessage) -> str:
    """What makes an INVITE the same request wherever it arrives: Call-ID, From tag and
    CSeq number (RFC 3261 8.1.1). The Via branch is left out on purpose: a proxy that
    fails over to another gate forwards with a Via branch of its own per target, and a
    UAC that retries at the next server opens a new transaction with a new branch
    (RFC 3263 4.3); both are the same request, to be answered once. A new request of the
    same call (after a redirect, a re-INVITE) has a higher CSeq. Hashed: bounded on the
    edge's wire and in the store whatever the tag's length."""
    return hashlib.sha256("\x1f".join((msg.call_id, msg.from_.tag or "", str(msg.cseq[0]))).encode()).hexdigest()


def _caller_field(value: str | None, what: str) -> str | None:
    """A user part the decision record keeps (extension, caller line): bounded and free
    of control characters (an escape such as ``%01`` is unescaped by then)."""
    if value is None:
        return None
    if len(value) > MAX_CALLER_FIELD or _CONTROL.search(value) is not None:
        raise SipParseError(f"{what} must be at most {MAX_CALLER_FIELD} characters without control characters")
    return value


def is_e164(number: str | None) -> bool:
    return number is not None and _E164.fullmatch(number) is not None


def _first_pai(msg: SipMessage) -> NameAddr | None:
    return msg.p_asserted_identity  # parsed (once) when the message was validated


def _header_token(msg: SipMessage, key: str) -> str | None:
    value = msg.get(key)
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > 128 or any(ord(ch) < 0x21 or ord(ch) > 0x7E for ch in value):
        raise SipParseError(f"{key} must be 1-128 printable ASCII characters")
    return value


def ascii_quoted(text: str, limit: int = 200) -> str:
    """Text safe inside a SIP quoted-string and ASCII-only (Warning, Reason)."""
    clean = "".join(ch if 0x20 <= ord(ch) < 0x7F else " " for ch in text)
    clean = " ".join(clean.split())[:limit]
    return clean.replace("\\", "\\\\").replace('"', '\\"')


def answer_headers(answer: SipDialAnswer, contact: str | None) -> tuple[int, str, list[tuple[str, str]]]:
    """Status, reason phrase and extra headers for a decision."""
    if answer.allowed:
        headers = [("Contact", contact or "")]
        if answer.attempt_id:
            headers.append(("X-DialGate-Attempt", ascii_quoted(answer.attempt_id, 128)))
        return 302, "Moved Temporarily", headers
    headers = [
        ("Reason", f'SIP;cause=603;text="{ascii_quoted(answer.rule_id, 100)}"'),
        ("Warning", f'399 dialgate "{ascii_quoted(answer.reason)}"'),
    ]
    if answer.retry_after is not None and answer.retry_after >= 0:
        headers.append(("Retry-After", str(int(answer.retry_after))))
    if answer.attempt_id:
        headers.append(("X-DialGate-Attempt", ascii_quoted(answer.attempt_id, 128)))
    return 603, "Decline", headers


def fail_closed_answer(detail: str = "") -> SipDialAnswer:
    return SipDialAnswer(
        allowed=False,
        rule_id=STORE_UNAVAILABLE,
        reason=STORE_UNAVAILABLE_REASON,
        reason_zh=STORE_UNAVAILABLE_REASON_ZH,
    )
