"""Fixtures for the gate's HTTP API tests (helpers live in gate_api_support.py)."""

from gate_api_support import api, sqlite_api  # noqa: F401 - re-exported fixtures
