"""Building the gate's SIP responses: the reason phrases, the headers every response
mirrors from its request (RFC 3261 8.2.6.2), To-tags, and a best-effort error response
for a request the parser refused.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from adapters.sip.gate import NO_DECISION, NO_DECISION_REASON, ascii_quoted
from adapters.sip.message import (
    SipMessage,
    SipParseError,
    SipResponse,
    Via,
    canonical_header_name,
    parse_via,
    split_outside,
)

SERVER_NAME = "DialGate SIP gate"
REASON_PHRASES = {
    100: "Trying",
    200: "OK",
    302: "Moved Temporarily",
    400: "Bad Request",
    405: "Method Not Allowed",
    413: "Request Entity Too Large",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    481: "Call/Transaction Does Not Exist",
    484: "Address Incomplete",
    487: "Request Terminated",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "Version Not Supported",
    603: "Decline",
}
NO_DECISION_HEADERS = [
    ("Retry-After", "1"),
    ("Reason", f'SIP;cause=503;text="{NO_DECISION}"'),
    ("Warning", f'399 dialgate "{NO_DECISION_REASON}"'),
]
_RPORT_RE = re.compile(r";\s*rport(?=\s*(;|$))", re.IGNORECASE)


def tag_for(*parts: str) -> str:
    return hashlib.blake2s("\x00".join(parts).encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()


def _top_via_for_response(top: str, source: tuple[Any, ...], parsed: Via | None = None) -> str:
    """RFC 3261 18.2.1 / RFC 3581: add ``received`` and fill ``rport`` on the top Via
    (``parsed``: the same value already parsed, when the caller has it)."""
    if not source:
        return top
    ip, port = str(source[0]), source[1] if len(source) > 1 else None
    out = top
    if parsed is not None and parsed.raw == top:
        via = parsed
    else:
        try:
            via = parse_via(top)
        except SipParseError:
            return top
    if via.host.strip("[]") != ip and "received" not in via.params:
        out += f";received={ip}"
    if port is not None and _RPORT_RE.search(out):
        out = _RPORT_RE.sub(f";rport={port}", out, count=1)
    return out


def build_response(
    msg: SipMessage,
    status: int,
    source: tuple[Any, ...],
    to_tag: str | None,
    extra: list[tuple[str, str]] | None = None,
) -> SipResponse:
    """A response mirroring Via/From/To/Call-ID/CSeq (RFC 3261 8.2.6.2), To-tag added."""
    headers: list[tuple[str, str]] = []
    vias = msg.values("via")
    for i, v in enumerate(vias):
        v = v.strip()
        headers.append(("Via", _top_via_for_response(v, source, _parsed_top_via(msg)) if i == 0 else v))
    headers.append(("From", msg.get("from") or ""))
    to = msg.get("to") or ""
    if to_tag and msg.to.tag is None:
        to = f"{to};tag={to_tag}"
    headers.append(("To", to))
    headers.append(("Call-ID", msg.call_id))
    headers.append(("CSeq", msg.get("cseq") or ""))
    headers.append(("Server", SERVER_NAME))
    headers.extend(extra or [])
    return SipResponse(status, REASON_PHRASES.get(status, "Unknown"), headers)


def _parsed_top_via(msg: SipMessage) -> Via | None:
    try:
        vias = msg.vias  # parsed and cached when the message was validated
    except SipParseError:
        return None
    return vias[0] if vias else None


_LIBERAL_VIA_RE = re.compile(r"SIP\s*/\s*\d{1,3}\.\d{1,3}\s*/\s*[A-Za-z0-9-]+\s+[A-Za-z0-9.\-\[\]:]+\s*(;[^\r\n]*)?\Z")
_ERROR_KEYS = ("via", "from", "to", "call-id", "cseq")


def best_effort_error_response(data: bytes, exc: SipParseError, source: tuple[Any, ...]) -> SipResponse | None:
    """An error response for a request we could not parse, if it is addressable.

    Only when the start line looks like a request (never a response, never an ACK) and
    Via, From, To, Call-ID and CSeq can each be read on their own; otherwise None (drop).
    """
    head = data.split(b"\r\n\r\n", 1)[0][:16384]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    folded: list[list[str]] = []
    for line in text.split("\r\n"):
        if line[:1] in (" ", "\t") and folded:
            folded[-1].append(line.strip())
        else:
            folded.append([line])
    lines = [" ".join(parts) for parts in folded]
    if not lines:
        return None
    start = lines[0]
    first = start.split(" ", 1)[0]
    if not first or first.startswith("SIP/") or first.upper() == "ACK":
        return None
    found: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = canonical_header_name(name.strip(" \t"))
        if key in _ERROR_KEYS:
            value = value.strip(" \t")
            if not value or len(value) > 2048 or any(ord(ch) < 0x20 and ch != "\t" for ch in value):
                return None
            found.setdefault(key, []).append(value)
    if any(k not in found for k in _ERROR_KEYS):
        return None
    vias = [v.strip(" \t;") for line in found["via"] for v in _split_commas(line)]
    vias = [v for v in vias if v]
    # liberal on purpose: the Via may be what is wrong (SIP/7.0, ";;"), we only need to mirror it
    if not vias or not all(_LIBERAL_VIA_RE.match(v) for v in vias):
        return None
    headers: list[tuple[str, str]] = []
    for i, v in enumerate(vias):
        headers.append(("Via", _top_via_for_response(v, source) if i == 0 else v))
    to = found["to"][0]
    if ";tag=" not in to.replace(" ", "").lower():
        to += f";tag={tag_for(found['call-id'][0], found['cseq'][0], 'err')}"
    headers += [("From", found["from"][0]), ("To", to), ("Call-ID", found["call-id"][0]), ("CSeq", found["cseq"][0])]
    headers.append(("Server", SERVER_NAME))
    headers.append(("Warning", f'399 dialgate "{ascii_quoted(exc.reason)}"'))
    status = exc.status if exc.status in REASON_PHRASES else 400
    return SipResponse(status, REASON_PHRASES[status], headers)


def _split_commas(value: str) -> list[str]:
    try:
        return split_outside(value, ",", what="Via")
    except SipParseError:
        return [value]


__all__ = [
    "NO_DECISION_HEADERS",
    "REASON_PHRASES",
    "SERVER_NAME",
    "best_effort_error_response",
    "build_response",
    "tag_for",
]
