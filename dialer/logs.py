"""structlog set-up: JSON events, request / decision ids from contextvars, numbers masked."""

from __future__ import annotations

import json as jsonlib
import logging
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

import structlog

from dialer.masking import mask_log_deep, mask_log_text

# Keys whose values are identifiers, never phone numbers: not masked.
_ID_KEYS = frozenset({"request_id", "decision_id", "attempt_id", "event_id", "case_id", "timestamp", "level"})


_PLAIN = (bool, int, float, type(None))
_PLAIN_TYPES = frozenset(_PLAIN)


def mask_numbers(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Processor: mask phone, card and ID numbers in every value (last line of defence).

    It runs for every log line (one per decision at least), so the common values skip
    the regex: numbers, booleans, None, and strings shorter than the 7 digits a maskable
    number needs (exact types first: isinstance against a tuple of types is the slow
    test, kept for subclasses)."""
    for key, value in event.items():
        kind = type(value)
        if kind is str:
            if len(value) >= 7 and key not in _ID_KEYS:
                event[key] = mask_log_text(value)
        elif kind in _PLAIN_TYPES or key in _ID_KEYS or isinstance(value, _PLAIN):
            continue
        else:
            event[key] = mask_log_deep(value)
    return event


class _Json:
    """`json.dumps(obj, **kw)`, byte for byte, with one `JSONEncoder` kept for the
    keywords JSONRenderer passes (json.dumps builds a new encoder for every line
    when given a `default`)."""

    def __init__(self) -> None:
        self._encoder: tuple[dict[str, Any], jsonlib.JSONEncoder] | None = None

    def __call__(self, obj: Any, **kw: Any) -> str:
        kept = self._encoder
        if kept is None or kept[0] != kw:
            kept = self._encoder = (kw, jsonlib.JSONEncoder(**kw))
        return kept[1].encode(obj)


class _StderrLogger:
    """structlog's PrintLogger to sys.stderr, resolved at each line (test runners and
    daemons swap it), written as one ``line + "\n"`` and flushed: the bytes print()
    wrote, in one write call instead of print's two through a wrapper."""

    _lock = threading.Lock()

    def msg(self, message: str) -> None:
        with self._lock:
            err = sys.stderr
            err.write(message + "\n")
            err.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def _stderr_logger(*_args: Any) -> _StderrLogger:
    return _StderrLogger()


class _MaskingFormatter(logging.Formatter):
    """The standard `logging` lines (uvicorn's error log with an application's
    traceback, asyncio's unretrieved task exceptions, asyncpg, aiomqtt, alembic) masked
    like structlog's: they bypass its processors, and a traceback quotes SQL parameters,
    URIs and DSNs."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_log_text(super().format(record))


class _MaskingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler: a record that fails to format (a library's own bug) is reported
    masked, in one line; logging's own report prints its arguments as they are."""

    def handleError(self, record: logging.LogRecord) -> None:
        if not logging.raiseExceptions:
            return
        exc = sys.exc_info()[1]
        try:
            report = f"--- logging error in {record.name}: {type(exc).__name__}: {exc}; " \
                     f"message {record.msg!r}, arguments {record.args!r}"
            sys.stderr.write(mask_log_text(report) + "\n")
        except Exception:  # noqa: BLE001 - a report about a report: nothing left to tell
            pass


def configure_logging(level: str = "info", json: bool = True) -> None:
    lvl = getattr(logging, level.upper(), logging.INFO)
    handler = _MaskingHandler(sys.stderr)
    handler.setFormatter(_MaskingFormatter("%(message)s"))
    logging.basicConfig(level=lvl, handlers=[handler], force=True)
    # Alembic announces its plugins and migration context at INFO on every start: noise
    # for an operator; its warnings and errors still show.
    logging.getLogger("alembic").setLevel(max(lvl, logging.WARNING))
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_Json(), ensure_ascii=False) if json
        else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            mask_numbers,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=True,
    )
