"""A small, strict RFC 3261 message parser and serializer for the SIP gate's edge.

Everything that arrives from the network goes through :func:`parse_message` (one UDP
datagram, or one message cut from a TCP stream by :class:`StreamFramer`). Any malformed
input raises exactly one exception type::

    SipParseError(reason)          every malformed, oversized or unsupported input
      .reason   str                a clear English reason naming what is wrong
      .status   int                the answer a server should give (400, 505, 416, 413)

No other exception (IndexError, ValueError, KeyError, UnicodeDecodeError, ...) leaves
this module for any input bytes; the fuzz test holds it to that.

What is supported: request and status lines; case-insensitive header names and the
compact forms (``i``, ``m``, ``f``, ``t``, ``v``, ``l``, ``c``, ``k``, ``s``, ``e``,
``o``, ``r`` ...); header folding (LWS); repeated and comma-joined multi-value headers
(commas inside quoted strings and ``<>`` URIs are not separators); Content-Length
framing (optional over UDP, required over TCP); limits on message size, header count
and numeric field length.

pyVoIP's ``SIPMessage`` is deliberately not used here: it raises IndexError/KeyError on
malformed input and misreads compact and lower-case header names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterable, Iterator, Literal, Sequence, TypeVar

Transport = Literal["udp", "tcp"]

MAX_MESSAGE_SIZE = 65_535  # bytes, one UDP datagram or one TCP-framed message
MAX_HEADERS = 256  # header fields after unfolding and comma-splitting is not counted
MAX_NUMBER_DIGITS = 10  # longest decimal field we convert (2**32-1 has 10 digits)
MAX_CSEQ = 2**32 - 1

# RFC 3261 7.3.3 and the IANA registry of compact forms.
COMPACT_FORMS: dict[str, str] = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

# How header names are written when we serialize them.
CANONICAL_NAMES: dict[str, str] = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "p-asserted-identity": "P-Asserted-Identity",
    "x-dialgate-attempt": "X-DialGate-Attempt",
    "x-agent-id": "X-Agent-ID",
    "x-case-id": "X-Case-ID",
}

# Headers that may occur at most once (RFC 3261 20 and 7.3.1: not comma-joinable).
SINGLETON_HEADERS = frozenset(
    {"call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type"}
)
REQUIRED_REQUEST_HEADERS = ("via", "from", "to", "call-id", "cseq")

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*\Z")
_VERSION_RE = re.compile(r"SIP/(\d{1,3})\.(\d{1,3})\Z")
_HEXDIGITS = frozenset("0123456789abcdefABCDEF")


class SipParseError(Exception):
    """The bytes are not a SIP message we can process; ``reason`` says why.

    ``status`` is the response a server should send when it can answer at all (400 by
    default, 505 for an unknown SIP version, 413 for an oversized message, 416 for an
    unsupported URI scheme).
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_HOST_RE = re.compile(r"[A-Za-z0-9\-._]+")
_IPV4ISH_RE = re.compile(r"[0-9.]+")  # a host of digits and dots must be an IPv4 address
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|[01]?[0-9]?[0-9])"  # 1-3 digits up to 255 (RFC 3261 IPv4address)
_IPV4_RE = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
# Control characters other than HTAB (CR and LF are checked in pairs separately): none
# may appear anywhere in a header section (RFC 3261 25.1 allows none in any header).
_CTL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_URI_FORBIDDEN_RE = re.compile(r"[ \t\r\n<>]")
# A quoted display name without quoted-pairs (the common case): "Agent 1001"
_PLAIN_QUOTED_RE = re.compile(r'"([^"\\]*)"')

# Valid header names seen so far -> their canonical key (bounded: a flood of invented
# names cannot grow it past this).
_NAME_CACHE: dict[str, str] = {}
_NAME_CACHE_MAX = 512

_T = TypeVar("_T")


class _cached(Generic[_T]):
    """A computed-once attribute: functools' cached_property without the lock that
    Python 3.11 takes on every first access (a parsed message is not shared between
    threads)."""

    def __init__(self, fn: Callable[[Any], _T]) -> None:
        self._fn = fn
        self._name = fn.__name__
        self.__doc__ = fn.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, obj: Any, owner: type | None = None) -> _T:
        if obj is None:
            return self  # type: ignore[return-value]
        value = self._fn(obj)
        obj.__dict__[self._name] = value
        return value


def is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None


def canonical_header_name(name: str) -> str:
    """Lower-case long form of a header name: ``"v"`` and ``"VIA"`` both give ``"via"``."""
    low = name.lower()
    return COMPACT_FORMS.get(low, low)


def display_header_name(key: str) -> str:
    if key in CANONICAL_NAMES:
        return CANONICAL_NAMES[key]
    return "-".join(part[:1].upper() + part[1:] for part in key.split("-"))


def parse_number(text: str, what: str, *, maximum: int | None = None) -> int:
    """A non-negative decimal field (leading zeros allowed), bounded in length and value."""
    if not text or not text.isascii() or not text.isdigit():
        raise SipParseError(f"{what} is not a non-negative decimal number: {text[:40]!r}")
    stripped = text.lstrip("0") or "0"
    if len(stripped) > MAX_NUMBER_DIGITS:
        raise SipParseError(f"{what} is too large: {text[:40]!r}")
    value = int(stripped)
    if maximum is not None and value > maximum:
        raise SipParseError(f"{what} is larger than {maximum}: {value}")
    return value


def unescape(text: str, what: str) -> str:
    """Decode ``%HH`` escapes (RFC 3261 25.1 ``escaped``); a bad escape is a parse error."""
    if "%" not in text:
        return text
    out = bytearray()
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "%":
            hexpart = text[i + 1 : i + 3]
            if len(hexpart) != 2 or not all(c in _HEXDIGITS for c in hexpart):
                raise SipParseError(f"bad %-escape in {what}: {text[i : i + 3]!r}")
            out.append(int(hexpart, 16))
            i += 3
        else:
            out += ch.encode("utf-8")
            i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError(f"{what} decodes to invalid UTF-8") from exc


# ---------------------------------------------------------------------------------
# Splitting helpers that respect quoted strings and <> brackets


_SPECIALS = {sep: re.compile(r'["<>\\' + re.escape(sep) + "]") for sep in (",", ";")}


def split_outside(text: str, sep: str, *, what: str) -> list[str]:
    """Split on ``sep`` where it is outside a quoted string and outside ``<...>``.

    Raises on an unterminated quoted string or ``<``. Only the special characters are
    visited (found by a compiled pattern), so long values stay cheap.
    """
    if '"' not in text:
        if "<" not in text:
            return text.split(sep)  # the common case, at C speed
        if sep not in text:
            # a single <URI> value (Contact, P-Asserted-Identity): without quotes the
            # scan below only tracks <...>, which is left open exactly when the last
            # '<' comes after the last '>'
            if text.rfind("<") > text.rfind(">"):
                raise SipParseError(f"unterminated '<' in {what}")
            return [text]
    pattern = _SPECIALS.get(sep) or re.compile(r'["<>\\' + re.escape(sep) + "]")
    parts: list[str] = []
    start = 0
    in_quotes = False
    in_angle = False
    skip_until = -1
    n = len(text)
    for m in pattern.finditer(text):
        i = m.start()
        if i < skip_until:
            continue
        ch = text[i]
        if in_quotes:
            if ch == "\\":
                if i + 1 >= n:
                    raise SipParseError(f"unterminated quoted-pair in {what}")
                skip_until = i + 2
            elif ch == '"':
                in_quotes = False
        elif in_angle:
            if ch == ">":
                in_angle = False
        elif ch == '"':
            in_quotes = True
        elif ch == "<":
            in_angle = True
        elif ch == sep:
            parts.append(text[start:i])
            start = i + 1
    if in_quotes:
        raise SipParseError(f"unterminated quoted string in {what}")
    if in_angle:
        raise SipParseError(f"unterminated '<' in {what}")
    parts.append(text[start:])
    return parts


def parse_params(text: str, *, what: str) -> dict[str, str | None]:
    """``;name[=value]`` parameters (the text after the first ``;``), names lower-cased.

    Empty parameters (``;;``) and non-token names are errors.
    """
    params: dict[str, str | None] = {}
    for raw in split_outside(text, ";", what=what):
        item = raw.strip(" \t")
        if not item:
            raise SipParseError(f"empty parameter in {what}")
        if "=" in item:
            name, _, value = item.partition("=")
            name = name.strip(" \t")
            value = value.strip(" \t")
            if not value:
                raise SipParseError(f"parameter {name[:40]!r} in {what} has an empty value")
        else:
            name, value = item, None
        if not is_token(name):
            raise SipParseError(f"bad parameter name {name[:40]!r} in {what}")
        params[name.lower()] = value
    return params


# ---------------------------------------------------------------------------------
# URIs and name-addr values


@dataclass(frozen=True, slots=True)
class SipUri:
    """The parts of a URI the gate needs. ``user`` is unescaped; ``raw`` is as received."""

    raw: str
    scheme: str  # lower-case
    user: str | None  # sip/sips user part (incl. user params like ;phone-context) or tel number
    host: str | None
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def user_number(self) -> str | None:
        """The user part without user parameters (``+861380...;phone-context=x`` → number)."""
        if self.user is None:
            return None
        return self.user.split(";", 1)[0]


# Parsed URI and name-addr values by their text. The same values recur in every call
# from a PBX: its Contact and P-Asserted-Identity, the agent's From URI, the dialed
# URI in the Request-URI, To and the ACK. A value parses the same whatever header it is
# in (``what`` only words errors, which are never memoised), and the parsed values are
# frozen. Bounded: short values only, and the table starts over when full.
_MEMO_MAX = 1024
_MEMO_VALUE_MAX = 256
_URI_MEMO: dict[str, "SipUri"] = {}
_NAME_ADDR_MEMO: dict[str, "NameAddr"] = {}
_VIA_MEMO: dict[str, "Via"] = {}


def _remember(memo: dict[str, Any], raw: str, parsed: Any) -> Any:
    """Keep `parsed` as the value of `raw` in `memo` (short values only; bounded)."""
    if len(raw) <= _MEMO_VALUE_MAX:
        if len(memo) >= _MEMO_MAX:
            memo.clear()
        memo[raw] = parsed
    return parsed


def parse_uri(raw: str, *, what: str) -> SipUri:
    found = _URI_MEMO.get(raw)
    return found if found is not None else _remember(_URI_MEMO, raw, _parse_uri(raw, what))


def _parse_uri(raw: str, what: str) -> SipUri:
    text = raw.strip(" \t")
    if not text or _URI_FORBIDDEN_RE.search(text) is not None:
        raise SipParseError(f"{what} is not a valid URI: {raw[:80]!r}")
    scheme, sep, rest = text.partition(":")
    if not sep or not _SCHEME_RE.match(scheme):
        raise SipParseError(f"{what} has no valid URI scheme: {raw[:80]!r}")
    scheme = scheme.lower()
    if scheme in ("sip", "sips"):
        # '@' never appears unescaped in the user part, but '?' may (RFC 4475 3.1.1.2)
        user: str | None = None
        if "@" in rest:
            userinfo, _, hostpart = rest.partition("@")
            userinfo = userinfo.split(":", 1)[0]  # drop a password
            if not userinfo:
                raise SipParseError(f"{what} has an empty user part: {raw[:80]!r}")
            user = unescape(userinfo, what)
        else:
            hostpart = rest
        hostpart = hostpart.split("?", 1)[0]  # escaped headers are ignored, never applied
        hostport, _, paramtext = hostpart.partition(";")
        host, port = parse_hostport(hostport, what=what)
        params = parse_params(paramtext, what=what) if paramtext else {}
        return SipUri(raw=text, scheme=scheme, user=user, host=host, port=port, params=params)
    if scheme == "tel":
        number, _, paramtext = rest.partition(";")
        if not number:
            raise SipParseError(f"{what} is a tel URI without a number")
        params = parse_params(paramtext, what=what) if paramtext else {}
        return SipUri(raw=text, scheme=scheme, user=unescape(number, what), host=None, port=None, params=params)
    # A syntactically acceptable URI of a scheme we do not interpret (RFC 4475 3.3.2).
    if not rest:
        raise SipParseError(f"{what} has an empty URI after the scheme")
    return SipUri(raw=text, scheme=scheme, user=None, host=None, port=None)


def parse_hostport(text: str, *, what: str) -> tuple[str, int | None]:
    text = text.strip(" \t")
    if not text:
        raise SipParseError(f"{what} has no host")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"{what} has an unterminated IPv6 reference")
        host = text[: end + 1]
        rest = text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise SipParseError(f"{what} has junk after the IPv6 host")
        portpart = rest[1:] if rest else None
    else:
        host, sep, portpart_s = text.partition(":")
        portpart = portpart_s if sep else None
        if _HOST_RE.fullmatch(host) is None:
            raise SipParseError(f"{what} has an invalid host {host[:60]!r}")
        if host[-1:].isdigit() and _IPV4_RE.fullmatch(host) is None and _IPV4ISH_RE.fullmatch(host) is not None:
            raise SipParseError(f"{what} has an invalid IPv4 address {host[:60]!r}")
    port: int | None = None
    if portpart is not None:
        port = parse_number(portpart.strip(" \t"), f"port in {what}", maximum=65535)
    return host, port


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From/To/Contact/P-Asserted-Identity value: display name, URI and header params."""

    display: str | None
    uri: SipUri
    params: dict[str, str | None]

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")


def parse_name_addr(value: str, *, what: str) -> NameAddr:
    """``[display] <uri> *(;param)`` or ``addr-spec *(;param)`` (RFC 3261 20.10, 20.20)."""
    found = _NAME_ADDR_MEMO.get(value)
    return found if found is not None else _remember(_NAME_ADDR_MEMO, value, _parse_name_addr(value, what))


def _parse_name_addr(value: str, what: str) -> NameAddr:
    text = value.strip(" \t")
    if not text:
        raise SipParseError(f"{what} is empty")
    display: str | None = None
    if "<" in text or text.startswith('"'):
        rest = text
        plain = _PLAIN_QUOTED_RE.match(rest) if rest.startswith('"') else None
        if plain is not None:
            # no backslash inside: the loop below would copy it verbatim
            display = plain.group(1)
            rest = rest[plain.end() :].lstrip(" \t")
            if not rest.startswith("<"):
                raise SipParseError(f"{what} has a display name without a <URI>")
        elif rest.startswith('"'):
            i = 1
            chars: list[str] = []
            while True:
                if i >= len(rest):
                    raise SipParseError(f"unterminated quoted display name in {what}")
                ch = rest[i]
                if ch == "\\":
                    if i + 1 >= len(rest):
                        raise SipParseError(f"unterminated quoted-pair in {what}")
                    chars.append(rest[i + 1])
                    i += 2
                    continue
                if ch == '"':
                    break
                chars.append(ch)
                i += 1
            display = "".join(chars)
            rest = rest[i + 1 :].lstrip(" \t")
            if not rest.startswith("<"):
                raise SipParseError(f"{what} has a display name without a <URI>")
        else:
            lt = rest.find("<")
            words = rest[:lt].strip(" \t")
            if words:
                for word in words.split():
                    if not is_token(word):
                        raise SipParseError(f"display name in {what} has non-token characters; quote it")
                display = " ".join(words.split())
            rest = rest[lt:]
        gt = rest.find(">")
        if gt < 0:
            raise SipParseError(f"unterminated '<' in {what}")
        uri = parse_uri(rest[1:gt], what=what)
        tail = rest[gt + 1 :].strip(" \t")
    else:
        # addr-spec: the URI cannot contain ';' params (they are header params), RFC 20.10
        uri_text, sep, after = text.partition(";")
        uri = parse_uri(uri_text, what=what)
        tail = sep + after
    params: dict[str, str | None] = {}
    if tail:
        if not tail.startswith(";"):
            raise SipParseError(f"unexpected text after the URI in {what}: {tail[:40]!r}")
        params = parse_params(tail[1:], what=what)
    return NameAddr(display=display, uri=uri, params=params)


# ---------------------------------------------------------------------------------
# Via


@dataclass(frozen=True, slots=True)
class Via:
    raw: str
    transport: str  # upper-case (UDP, TCP, TLS, SCTP, ...)
    host: str
    port: int | None
    params: dict[str, str | None]

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> str:
        return f"{self.host.lower()}:{self.port or 5060}"


def parse_via(value: str) -> Via:
    """One Via value. Memoised like URIs: an ACK for a non-2xx answer carries its
    INVITE's top Via unchanged (RFC 3261 17.1.1.3), and so does a retransmission."""
    found = _VIA_MEMO.get(value)
    return found if found is not None else _remember(_VIA_MEMO, value, _parse_via(value))


def _parse_via(value: str) -> Via:
    text = value.strip(" \t")
    if not text:
        raise SipParseError("empty Via value")
    main, sep, paramtext = text.partition(";")
    pieces = main.split("/")
    if len(pieces) != 3:
        raise SipParseError(f"Via sent-protocol is malformed: {main[:60]!r}")
    name = pieces[0].strip(" \t")
    version = pieces[1].strip(" \t")
    last = pieces[2].strip(" \t").split(None, 1)
    if len(last) != 2:
        raise SipParseError(f"Via has no sent-by: {main[:60]!r}")
    transport, sent_by = last
    if name.upper() != "SIP" or version != "2.0" or not is_token(transport):
        raise SipParseError(f"Via sent-protocol is not SIP/2.0/<transport>: {main[:60]!r}")
    host, port = parse_hostport(sent_by, what="Via sent-by")
    params = parse_params(paramtext, what="Via") if sep else {}
    if "branch" in params and not params["branch"]:
        raise SipParseError("Via branch parameter is empty")
    return Via(raw=text, transport=transport.upper(), host=host, port=port, params=params)


# ---------------------------------------------------------------------------------
# Messages


@dataclass
class SipMessage:
    """A parsed request or response. Header values are unfolded, order is kept.

    ``headers`` is a list of ``(key, value)`` with ``key`` the lower-case long name; a
    header line holding comma-joined values stays one entry (see :meth:`values`).
    """

    start_line: str
    headers: list[tuple[str, str]]
    body: bytes
    method: str | None = None  # requests
    uri: SipUri | None = None  # requests
    status: int | None = None  # responses
    reason: str | None = None  # responses

    @property
    def is_request(self) -> bool:
        return self.method is not None

    @_cached
    def _index(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for k, v in self.headers:
            index.setdefault(k, []).append(v)
        return index

    def get(self, key: str) -> str | None:
        index = self._index
        found = index.get(key)  # keys are canonical already: callers mostly pass one
        if found is None:
            found = index.get(canonical_header_name(key))
        return found[0] if found else None

    def all(self, key: str) -> list[str]:
        return list(self._index.get(canonical_header_name(key), ()))

    def values(self, key: str) -> list[str]:
        """Every value of a multi-value header, comma-joined lines split (quotes/<> respected)."""
        lines = self._index.get(key)
        if lines is None:
            key = canonical_header_name(key)
            lines = self._index.get(key)
        if not lines:
            return []
        if len(lines) == 1 and '"' not in lines[0] and "<" not in lines[0]:
            return lines[0].split(",")  # what split_outside does for such a line
        out: list[str] = []
        for line in lines:
            out.extend(split_outside(line, ",", what=display_header_name(key)))
        return out

    # Parsed views of the headers every request must have (valid after parse_message);
    # parsed once and cached: the headers of a parsed message are not changed afterwards.
    @_cached
    def vias(self) -> list[Via]:
        return [parse_via(v) for v in self.values("via")]

    @_cached
    def call_id(self) -> str:
        return self.get("call-id") or ""

    @_cached
    def cseq(self) -> tuple[int, str]:
        return parse_cseq(self.get("cseq") or "")

    @_cached
    def from_(self) -> NameAddr:
        return parse_name_addr(self.get("from") or "", what="From")

    @_cached
    def to(self) -> NameAddr:
        return parse_name_addr(self.get("to") or "", what="To")

    @_cached
    def p_asserted_identity(self) -> NameAddr | None:
        """The first P-Asserted-Identity value, parsed (None without one)."""
        values = self.values("p-asserted-identity")
        return parse_name_addr(values[0], what="P-Asserted-Identity") if values else None


def parse_cseq(value: str) -> tuple[int, str]:
    parts = value.split()
    if len(parts) != 2:
        raise SipParseError(f"CSeq is not '<number> <method>': {value[:60]!r}")
    number = parse_number(parts[0], "CSeq number", maximum=MAX_CSEQ)
    if not is_token(parts[1]):
        raise SipParseError(f"CSeq method is not a token: {parts[1][:40]!r}")
    return number, parts[1]


def _split_header_block(block: str) -> list[str]:
    """Header lines of the section after the start line, with folding undone.

    Built from lists and joined once: a flood of continuation lines stays linear.
    """
    if block[:1] not in (" ", "\t") and "\r\n " not in block and "\r\n\t" not in block:
        return block.split("\r\n")  # nothing folded (the usual message): no list per line
    lines: list[list[str]] = []
    for line in block.split("\r\n"):
        if line[:1] in (" ", "\t"):
            if not lines:
                raise SipParseError("message starts with a continuation line")
            lines[-1].append(line.strip(" \t"))
        else:
            lines.append([line])
    return [" ".join(parts) if len(parts) > 1 else parts[0] for parts in lines]


def parse_message(data: bytes, transport: Transport = "udp") -> SipMessage:
    """Parse one complete SIP message (one UDP datagram or one TCP-framed message).

    Over UDP, a missing Content-Length means the body is the rest of the datagram, and
    octets after the Content-Length are ignored (RFC 3261 18.3). Over TCP the
    Content-Length is required.
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise SipParseError(f"message is larger than {MAX_MESSAGE_SIZE} bytes", status=413)
    data = data.lstrip(b"\r\n")  # RFC 3261 7.5: ignore CRLFs before the start line
    if not data:
        raise SipParseError("empty message")
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise SipParseError("no empty line after the header fields")
    head_bytes = data[:end]
    rest = data[end + 4 :]
    try:
        head = head_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError(f"header section is not valid UTF-8 (byte {exc.start})") from exc
    if "\x00" in head.split("\r\n", 1)[0]:
        raise SipParseError("NUL byte in the start line")
    ctl = _CTL_RE.search(head)
    if ctl is not None:
        raise SipParseError(f"control character {ord(ctl.group()):#04x} in the header section")
    crlf = head.count("\r\n")
    if head.count("\r") != crlf or head.count("\n") != crlf:
        raise SipParseError("bare CR or LF inside the header section")
    start_line, _, block = head.partition("\r\n")
    msg = _parse_start_line(start_line)
    headers: list[tuple[str, str]] = []
    if block:
        lines = _split_header_block(block)
        if len(lines) > MAX_HEADERS:
            raise SipParseError(f"more than {MAX_HEADERS} header fields")
        names = _NAME_CACHE
        for line in lines:
            name, sep, value = line.partition(":")
            if not sep:
                raise SipParseError(f"header line without a colon: {line[:60]!r}")
            key = names.get(name)
            if key is None:
                name = name.rstrip(" \t")
                if not is_token(name):
                    raise SipParseError(f"invalid header name {name[:60]!r}")
                key = canonical_header_name(name)
                if len(names) < _NAME_CACHE_MAX:
                    names[name] = key  # (a name with trailing blanks is looked up stripped: a miss)
            # no CR/LF can be left in a value here (checked above), so no regex is needed
            headers.append((key, value.strip(" \t")))
    msg.headers = headers
    seen: set[str] = set()
    for key, _ in headers:
        if key in SINGLETON_HEADERS:
            if key in seen:
                raise SipParseError(f"{display_header_name(key)} occurs more than once")
            seen.add(key)
    cl_text = msg.get("content-length")
    if cl_text is None:
        if transport == "tcp":
            raise SipParseError("Content-Length is required over TCP")
        msg.body = rest
    else:
        length = parse_number(cl_text, "Content-Length", maximum=MAX_MESSAGE_SIZE)
        if length > len(rest):
            raise SipParseError(f"Content-Length {length} is larger than the {len(rest)} body bytes received")
        msg.body = rest[:length]
    _validate(msg)
    return msg


def _parse_start_line(line: str) -> SipMessage:
    if not line:
        raise SipParseError("empty start line")
    if line.startswith("SIP/"):
        parts = line.split(" ", 2)
        if len(parts) < 2:
            raise SipParseError(f"status line is malformed: {line[:80]!r}")
        _check_version(parts[0])
        code = parts[1]
        if len(code) != 3 or not code.isascii() or not code.isdigit() or not (100 <= int(code) <= 699):
            raise SipParseError(f"status code is not 100-699: {code[:20]!r}")
        return SipMessage(start_line=line, headers=[], body=b"", status=int(code), reason=parts[2] if len(parts) > 2 else "")
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError(f"request line is not 'Method SP Request-URI SP SIP-Version': {line[:80]!r}")
    method, uri_text, version = parts
    if not is_token(method):
        raise SipParseError(f"method is not a token: {method[:40]!r}")
    _check_version(version)
    uri = parse_uri(uri_text, what="Request-URI")
    return SipMessage(start_line=line, headers=[], body=b"", method=method, uri=uri)


def _check_version(version: str) -> None:
    m = _VERSION_RE.match(version)
    if not m:
        raise SipParseError(f"not a SIP version: {version[:40]!r}")
    if version != "SIP/2.0":
        raise SipParseError(f"SIP version {version[:20]} is not supported", status=505)


def _validate(msg: SipMessage) -> None:
    """Syntax of the headers the gate relies on; raises SipParseError."""
    if not msg.values("via"):
        raise SipParseError("Via header is missing")
    msg.vias  # parses (and caches) every Via value
    if not msg.is_request:
        return
    for key in REQUIRED_REQUEST_HEADERS:
        if msg.get(key) is None:
            raise SipParseError(f"{display_header_name(key)} header is missing")
    call_id = msg.call_id
    if not call_id or " " in call_id or "\t" in call_id:
        raise SipParseError("Call-ID is empty or contains whitespace")
    _, cseq_method = msg.cseq
    if cseq_method != msg.method:
        raise SipParseError(f"CSeq method {cseq_method[:30]!r} does not match the request method {msg.method!r}")
    msg.from_
    msg.to
    mf = msg.get("max-forwards")
    if mf is not None:
        parse_number(mf, "Max-Forwards")

    for key in ("contact", "p-asserted-identity", "route", "record-route"):
        values = msg.values(key)
        if not values:
            continue
        what = display_header_name(key)
        for i, value in enumerate(values):
            if key == "contact" and value.strip(" \t") == "*":
                continue
            parsed = parse_name_addr(value, what=what)
            if i == 0 and key == "p-asserted-identity":
                msg.__dict__["p_asserted_identity"] = parsed  # the cached view, parsed once


# ---------------------------------------------------------------------------------
# TCP framing


class StreamFramer:
    """Cut complete messages out of a TCP byte stream by Content-Length (RFC 3261 18.3).

    ``feed()`` returns the complete messages so far; it raises SipParseError when the
    stream cannot be framed (no Content-Length, bad value, header section or message
    too large). After an error the stream is unusable: close the connection.
    """

    def __init__(self, max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buf = bytearray()
        self._max = max_message_size
        self._deferred: SipParseError | None = None

    @property
    def pending(self) -> int:
        return len(self._buf)

    @property
    def remaining(self) -> bytes:
        """The unframed bytes (what an error response can be addressed from)."""
        return bytes(self._buf)

    def check(self) -> None:
        """Raise the framing error found after the messages the last feed() returned."""
        if self._deferred is not None:
            raise self._deferred

    def feed(self, data: bytes) -> list[bytes]:
        """Complete messages so far. A framing error is raised at once when no complete
        message precedes it, else deferred to :meth:`check` (and the next feed)."""
        self.check()
        self._buf += data
        out: list[bytes] = []
        try:
            self._cut(out)
        except SipParseError as exc:
            if not out:
                raise
            self._deferred = exc
        return out

    def _cut(self, out: list[bytes]) -> None:
        while True:
            # keep-alive CRLFs between messages (RFC 5626 3.5.1) are skipped
            while self._buf[:2] == b"\r\n":
                del self._buf[:2]
            if not self._buf:
                break
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > self._max:
                    raise SipParseError(f"header section is larger than {self._max} bytes", status=413)
                break
            length = self._content_length(bytes(self._buf[:end]))
            total = end + 4 + length
            if total > self._max:
                raise SipParseError(f"message is larger than {self._max} bytes", status=413)
            if len(self._buf) < total:
                break
            out.append(bytes(self._buf[:total]))
            del self._buf[:total]

    @staticmethod
    def _content_length(head: bytes) -> int:
        found: int | None = None
        lines = head.split(b"\r\n")
        for line in lines[1:]:
            if line[:1] in (b" ", b"\t"):
                continue
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            key = name.strip(b" \t").lower()
            if key in (b"content-length", b"l"):
                if found is not None:
                    raise SipParseError("Content-Length occurs more than once")
                text = value.strip(b" \t")
                try:
                    decoded = text.decode("ascii")
                except UnicodeDecodeError as exc:
                    raise SipParseError("Content-Length is not ASCII") from exc
                found = parse_number(decoded, "Content-Length", maximum=MAX_MESSAGE_SIZE)
        if found is None:
            raise SipParseError("Content-Length is required over TCP")
        return found


# ---------------------------------------------------------------------------------
# Serialization


@dataclass(slots=True)
class SipResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]  # (display name, value), serialized in order
    body: bytes = b""

    def get(self, name: str) -> str | None:
        key = canonical_header_name(name)
        for k, v in self.headers:
            if canonical_header_name(k) == key:
                return v
        return None

    def to_bytes(self) -> bytes:
        return serialize(f"SIP/2.0 {self.status} {self.reason}", self.headers, self.body)


def serialize(start_line: str, headers: Iterable[tuple[str, str]], body: bytes = b"") -> bytes:
    """Serialize a start line, headers and body; Content-Length is computed here."""
    lines = [start_line]
    for name, value in headers:
        if canonical_header_name(name) == "content-length":
            continue
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"header {name!r} would break the message framing")
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def iter_headers_in_order(msg: SipMessage, keys: Sequence[str]) -> Iterator[tuple[str, str]]:
    wanted = {canonical_header_name(k) for k in keys}
    for key, value in msg.headers:
        if key in wanted:
            yield display_header_name(key), value
