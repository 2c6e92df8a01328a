"""Fixtures for the case-store integration tests (helpers in gate_store_support.py)."""

from gate_store_support import pg_url, workdir  # noqa: F401 - re-exported fixtures
