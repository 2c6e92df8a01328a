"""Shared test helpers.

Integration tests need real services (PostgreSQL, Mosquitto, Kamailio, Chromium). The
README's test command (`scripts/test.sh`) installs and starts them. When one is missing:
under CI (`CI=true`) the test FAILS; on a developer machine it is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_service(name: str, available: bool, how: str = "") -> None:
    """Fail (CI) or skip (elsewhere) the calling test when `name` is not available."""
    if available:
        return
    msg = f"{name} is not available{': ' + how if how else ''}"
    if IN_CI:
        pytest.fail(f"{msg} (CI=true: integration tests never skip)", pytrace=False)
    pytest.skip(msg)


DATA_DIR = Path(__file__).resolve().parent / "data"


def data_dir() -> Path:
    """Test material kept in the repository (RFC 4475 torture messages, PROTOS cases);
    provenance and checksums in its README, so no test reads outside the checkout."""
    return DATA_DIR


@contextlib.contextmanager
def captured_logs(*modules: Any) -> Iterator[list[dict[str, Any]]]:
    """`structlog.testing.capture_logs` that also sees the module-level `log` of each
    given module. dialer.logs configures `cache_logger_on_first_use`, so a module logger
    that an earlier test already used keeps its processors and bypasses a later capture
    (a test then passes alone and fails in the suite, or an assertion that an event is
    absent passes whatever happened); each module's `log` (or `_log`) is a fresh logger
    for the duration."""
    import structlog
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        saved = [(m, name, getattr(m, name)) for m in modules for name in ("log", "_log") if hasattr(m, name)]
        for m, name, old in saved:
            setattr(m, name, structlog.get_logger(*(getattr(old, "_logger_factory_args", None) or ())))
        try:
            yield logs
        finally:
            for m, name, old in saved:
                setattr(m, name, old)
