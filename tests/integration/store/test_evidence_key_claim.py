"""Every instance on one store keeps the evidence chains under one key: the first to
start records its key's id, an instance with another key refuses to start (it would
write links that the others' `audit verify` reports as edited)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from dialer.bootstrap import open_services
from dialer.config import build_config
from dialer.errors import ConfigError
from tests.support.pg import private_pg_database


def _config(data_dir: Path, store_url: str, key_file: Path) -> Any:
    return build_config({
        "paths": {"data_dir": str(data_dir)},
        "store": {"url": store_url},
        "audit": {"key_file": str(key_file)},
    })


def _key(path: Path) -> Path:
    path.write_text(secrets.token_hex(32) + "\n")
    path.chmod(0o600)
    return path


async def _claims(tmp_path: Path, store_url: str) -> None:
    first, same, other = _key(tmp_path / "a.key"), tmp_path / "b.key", _key(tmp_path / "c.key")
    same.write_text(first.read_text())
    same.chmod(0o600)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    async with open_services(_config(tmp_path / "a", store_url, first)):
        # A second instance with the same key (another file, another host) starts.
        async with open_services(_config(tmp_path / "b", store_url, same)):
            pass
        with pytest.raises(ConfigError) as refused:
            async with open_services(_config(tmp_path / "c", store_url, other)):
                pass
    message = str(refused.value)
    assert "not the key this store's evidence chains are kept under" in message
    assert other.read_text().strip() not in message and first.read_text().strip() not in message


async def test_an_instance_with_another_evidence_key_refuses_to_start_on_a_shared_sqlite_file(tmp_path: Path) -> None:
    await _claims(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}")


async def test_an_instance_with_another_evidence_key_refuses_to_start_on_shared_postgresql(tmp_path: Path) -> None:
    async with private_pg_database("evkey") as url:
        await _claims(tmp_path, url)
