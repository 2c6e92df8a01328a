"""Raw SIP message helpers: requests pyVoIP cannot parse, and the responses we build."""

from __future__ import annotations

import re


ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS"
_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length", "c": "content-type"}


def split_headers(raw: bytes) -> tuple[str, list[tuple[str, str]]]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines: list[str] = []
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    start, headers = lines[0], []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        headers.append((_COMPACT.get(key, key), value.strip()))
    return start, headers


def first_header(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((v for n, v in headers if n == name), None)


def all_headers(headers: list[tuple[str, str]], name: str) -> list[str]:
    out: list[str] = []
    for n, v in headers:
        if n == name:
            out.extend(_split_comma(v))
    return out


def _split_comma(value: str) -> list[str]:
    parts, depth, cur, quoted = [], 0, "", False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth -= 1
        if ch == "," and depth == 0 and not quoted:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def build_response(raw: bytes, code: int, reason: str, *, to_tag: str, extra: tuple[str, ...] = ()) -> bytes:
    """A response to the request `raw` mirroring Via/From/To/Call-ID/CSeq (RFC 3261 8.2.6)."""
    _, headers = split_headers(raw)
    out = [f"SIP/2.0 {code} {reason}"]
    out += [f"Via: {v}" for n, v in headers if n == "via"]
    for name, label in (("from", "From"), ("to", "To"), ("call-id", "Call-ID"), ("cseq", "CSeq")):
        value = first_header(headers, name)
        if value is None:
            continue
        if name == "to" and code > 100 and ";tag=" not in value.replace(" ", ""):
            value += f";tag={to_tag}"
        out.append(f"{label}: {value}")
    out += list(extra)
    out.append("Server: dialgate")
    out.append("Content-Length: 0")
    return ("\r\n".join(out) + "\r\n\r\n").encode()


def uri_of(value: str) -> str:
    m = re.search(r"<([^>]*)>", value)
    return (m.group(1) if m else value.split(";")[0]).strip()


def tag_of(value: str) -> str:
    m = re.search(r";\s*tag=([^;>\s]+)", value)
    return m.group(1) if m else ""
