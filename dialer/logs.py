"""structlog set-up: JSON events, request / decision ids from contextvars, numbers masked."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from dialer.masking import mask_deep, mask_text

# Keys whose values are identifiers, never phone numbers: not masked.
_ID_KEYS = frozenset({"request_id", "decision_id", "attempt_id", "event_id", "case_id", "timestamp", "level"})


_PLAIN = (bool, int, float, type(None))


def mask_numbers(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """Processor: mask phone, card and ID numbers in every value (last line of defence).

    It runs for every log line (one per decision at least), so the common values skip
    the regex: numbers, booleans, None, and strings shorter than the 7 digits a maskable
    number needs."""
    for key, value in event.items():
        if key in _ID_KEYS or isinstance(value, _PLAIN):
            continue
        if type(value) is str:
            if len(value) >= 7:
                event[key] = mask_text(value)
        else:
            event[key] = mask_deep(value)
    return event


class _Stderr:
    """Resolves sys.stderr at each write (test runners and daemons swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "info", json: bool = True) -> None:
    lvl = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(stream=sys.stderr, level=lvl, format="%(message)s", force=True)
    renderer: Any = structlog.processors.JSONRenderer(ensure_ascii=False) if json else structlog.dev.ConsoleRenderer()
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
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
