"""What a start leaves in the log: no Alembic chatter, and policy versions that match decisions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

START = """
import asyncio, sys
from dialer.app import build_app
from dialer.config import build_config
from dialer.logs import configure_logging

configure_logging("info", json=True)
cfg = build_config({"paths": {"data_dir": sys.argv[1]},
                    "policy": {"creditors": {"bank-a": {"window": {"end": "20:30"}}}}})
app = build_app(cfg)

async def main():
    async with app.router.lifespan_context(app):
        pass

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def first_start(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The log of one fresh start (it migrates an empty database), shared by the tests below."""
    done = subprocess.run([sys.executable, "-c", START, str(tmp_path_factory.mktemp("start"))], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=True)
    return (done.stdout + done.stderr).splitlines()


def test_a_fresh_start_migrates_without_alembics_setup_plugin_lines(first_start: list[str]) -> None:
    assert any('"service.started"' in line for line in first_start), first_start
    assert [line for line in first_start if "setup plugin" in line or "alembic" in line.lower()] == []


def test_the_start_line_names_the_policy_version_each_creditors_decisions_carry(first_start: list[str]) -> None:
    started = next(json.loads(line) for line in first_start if '"service.started"' in line)
    versions = started["policy_versions"]
    assert set(versions) == {"default", "bank-a"} and versions["default"] != versions["bank-a"]
    assert started["policy_book_version"] not in versions.values()  # the book's hash covers them all
    assert "policy_version" not in started
