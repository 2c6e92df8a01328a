"""The link between the SIP edge process and the service: one UNIX stream socket
carrying JSON lines (:class:`Lines`), a question per INVITE and its answer, matched by
request id.

Wire format, one JSON array per line::

    edge -> service   ["link", token, pid]                 first, before the SIP port is bound
                      ["hello", token, pid, host, port]   once the listener is bound
                      ["failed", token, pid, reason]       instead, when it cannot listen
                      [id, number, caller_line, extension, agent_id, case_id,
                       attempt_id, call_id, request_key]   one per INVITE to decide
    service -> edge   [id, allowed, rule_id, reason, reason_zh, attempt_id,
                       retry_after, decision_id, number]

No input breaks the link. Every field of a question is bounded by the listener before
it is asked (a dial string of at most 32 characters, printable caller fields, a Call-ID
of at most 256 characters), so a line stays far below ``MAX_LINE`` even escaped; a line
that would not is refused by the edge before it is sent (the INVITE gets its 603, the
link is untouched). On a link that has introduced itself, a line the other end cannot
read (too long, not JSON, wrong shape) is logged and skipped, answered fail closed
when its request id can be read: one bad message costs one call, never the link.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import orjson
import structlog

from adapters.sip.gate import DecisionUnavailable, SipDialAnswer, SipDialInput

log = structlog.get_logger("dialgate.sip")

MAX_LINE = 65536  # far above any question or answer (their fields are bounded before sending)
_INPUT_FIELDS = 8  # SipDialInput's fields on the wire, after the request id (the number once)


class LinkError(ConnectionError):
    """The link between the edge and the service is down or spoke nonsense."""


class LinkDown(LinkError, DecisionUnavailable):
    """No link to the service, or it closed with the question unanswered: nothing was
    decided (the listener answers 503, not 603)."""


class BadLine(LinkError):
    """One line the other end cannot read; ``req_id`` when its request id could be read.
    The line is skipped, the link stays up."""

    def __init__(self, message: str, req_id: int | None = None) -> None:
        super().__init__(message)
        self.req_id = req_id


# -- the wire -----------------------------------------------------------------------------


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON (orjson: a line each way per decision, so the encoder is on the hot path)."""
    return orjson.dumps(obj)


def encode_input(req_id: int, d: SipDialInput) -> bytes:
    """One question as a line (the dialed number once: its E.164 form, or the clean dial
    string the listener let through). Raises BadLine if it would exceed ``MAX_LINE``."""
    line = dumps([req_id, d.number, d.caller_line, d.extension, d.agent_id, d.case_id, d.attempt_id, d.call_id,
                  d.request_key])
    if len(line) > MAX_LINE:
        raise BadLine(f"a question of {len(line)} bytes exceeds the link's {MAX_LINE}", req_id)
    return line


def _req_id(msg: Any) -> int | None:
    return msg[0] if isinstance(msg, list) and msg and type(msg[0]) is int else None


def decode_input(msg: Any) -> tuple[int, SipDialInput]:
    if not (isinstance(msg, list) and len(msg) == 1 + _INPUT_FIELDS and type(msg[0]) is int):
        raise BadLine(f"a request must be [id, {_INPUT_FIELDS} fields], got {str(msg)[:80]!r}", _req_id(msg))
    req_id, number, caller_line, extension, agent_id, case_id, attempt_id, call_id, request_key = msg
    for name, value in (("number", number), ("call_id", call_id)):
        if type(value) is not str:
            raise BadLine(f"request field {name} must be a string, got {type(value).__name__}", req_id)
    for name, value in (("caller_line", caller_line), ("extension", extension), ("agent_id", agent_id),
                        ("case_id", case_id), ("attempt_id", attempt_id), ("request_key", request_key)):
        if value is not None and type(value) is not str:
            raise BadLine(f"request field {name} must be a string or null, got {type(value).__name__}", req_id)
    return req_id, SipDialInput(number, number, caller_line, extension, agent_id, case_id, attempt_id, call_id,
                                request_key)


def encode_answer(req_id: int, a: SipDialAnswer) -> bytes:
    return dumps([req_id, a.allowed, a.rule_id, a.reason, a.reason_zh, a.attempt_id, a.retry_after, a.decision_id,
                   a.number])


def decode_answer(msg: Any) -> tuple[int, SipDialAnswer]:
    if not (isinstance(msg, list) and len(msg) == 9 and type(msg[0]) is int):
        raise BadLine(f"an answer must be [id, 8 fields], got {str(msg)[:80]!r}", _req_id(msg))
    req_id, allowed, rule_id, reason, reason_zh, attempt_id, retry_after, decision_id, number = msg
    if type(allowed) is not bool or type(rule_id) is not str or type(reason) is not str or type(reason_zh) is not str:
        raise BadLine("answer fields allowed/rule_id/reason/reason_zh have the wrong types", req_id)
    if retry_after is not None and type(retry_after) is not int:
        raise BadLine("answer field retry_after must be an integer or null", req_id)
    for value in (attempt_id, decision_id, number):
        if value is not None and type(value) is not str:
            raise BadLine("answer fields attempt_id/decision_id/number must be strings or null", req_id)
    return req_id, SipDialAnswer(allowed, rule_id, reason, reason_zh, attempt_id, retry_after, decision_id, number)


class Lines(asyncio.Protocol):
    """JSON lines over a stream socket. Complete lines go to ``on_line``. Until the link
    is ``trusted`` (its first line carried the token) anything unreadable closes it;
    after that a line that is too long, not JSON or refused by the handler (BadLine) is
    logged and skipped, and ``on_bad`` hears of it (with the request id when readable),
    so one bad message never takes the link down. Writes made in one loop turn leave in
    one ``write``, so a burst of decisions costs one system call each way."""

    def __init__(self, on_line: Callable[["Lines", Any], None], on_lost: Callable[["Lines", Exception | None], None],
                 on_bad: Callable[["Lines", BadLine], None] | None = None, *, trusted: bool = False) -> None:
        self._on_line = on_line
        self._on_lost = on_lost
        self._on_bad = on_bad
        self._rest = b""
        self._skipping = False  # inside an over-long line: drop bytes up to its end
        self._out: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.trusted = trusted
        self.skipped = 0  # bad lines skipped

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._rest:
            data = self._rest + data
        lines = data.split(b"\n")
        self._rest = lines.pop()
        try:
            for line in lines:
                if self.closed:
                    return
                if self._skipping:
                    self._skipping = False  # the end of the over-long line
                    continue
                if len(line) > MAX_LINE:
                    if not self.trusted:
                        raise LinkError(f"a line longer than {MAX_LINE} bytes")
                    self._bad(BadLine(f"a line longer than {MAX_LINE} bytes (skipped)"))
                elif line:
                    self._line(line)
            if len(self._rest) > MAX_LINE:
                if not self.trusted:
                    raise LinkError(f"a line longer than {MAX_LINE} bytes")
                self._rest, self._skipping = b"", True
                self._bad(BadLine(f"a line longer than {MAX_LINE} bytes (skipped)"))
        except LinkError as exc:
            log.error("sip.edge_link_error", error=str(exc))
            self.close()

    def _line(self, line: bytes) -> None:
        try:
            msg = orjson.loads(line)
        except ValueError as exc:
            if not self.trusted:
                raise LinkError(f"not JSON: {exc}") from None
            self._bad(BadLine(f"not JSON: {exc}"))
            return
        try:
            self._on_line(self, msg)
        except BadLine as exc:
            if not self.trusted:
                raise
            self._bad(exc)

    def _bad(self, exc: BadLine) -> None:
        self.skipped += 1
        log.error("sip.edge_bad_line", error=str(exc)[:200], request=exc.req_id)
        if self._on_bad is not None:
            self._on_bad(self, exc)

    def send(self, line: bytes) -> None:
        if self.closed:
            return
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(line)

    def _flush(self) -> None:
        if self._out and not self.closed and self.transport is not None:
            self._out.append(b"")
            self.transport.write(b"\n".join(self._out))
        self._out = []

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self._flush()
            self.transport.close()
        self.closed = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._on_lost(self, exc)


__all__ = [
    "MAX_LINE",
    "BadLine",
    "LinkDown",
    "LinkError",
    "Lines",
    "decode_answer",
    "decode_input",
    "dumps",
    "encode_answer",
    "encode_input",
]
