"""`dialgate serve --demo` seeding: the demo users keep their tokens across restarts."""

from __future__ import annotations

import json
import stat
from datetime import datetime, timezone
from pathlib import Path

from dialer.bootstrap import open_services
from dialer.auth import hash_token, new_token
from dialer.clock import FixedClock
from dialer.config import build_config
from dialer.demo import DEMO_USERS, demo_tokens_file, seed_demo

CLOCK = FixedClock(datetime(2027, 3, 16, 2, 0, tzinfo=timezone.utc))


async def seed(data_dir: Path) -> dict[str, str]:
    cfg = build_config({"paths": {"data_dir": str(data_dir)}})
    async with open_services(cfg, CLOCK, migrate=True) as svc:
        return {name: token for name, _, _, token in await seed_demo(svc)}


async def owner(data_dir: Path, token: str) -> str | None:
    cfg = build_config({"paths": {"data_dir": str(data_dir)}})
    async with open_services(cfg, CLOCK, migrate=True) as svc:
        async with svc.store.read() as uow:
            who = await uow.users.by_token_hash(hash_token(token))
    return who.name if who else None


async def test_a_restarted_demo_prints_the_same_tokens_and_they_still_open_their_accounts(tmp_path: Path) -> None:
    first = await seed(tmp_path)
    again = await seed(tmp_path)
    assert again == first and set(first) == {name for name, _, _ in DEMO_USERS}
    assert await owner(tmp_path, again["comp-a"]) == "comp-a"


async def test_the_kept_tokens_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    tokens = await seed(tmp_path)
    path = demo_tokens_file(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == tokens


async def test_a_rotated_demo_token_is_not_brought_back_by_a_restart(tmp_path: Path) -> None:
    first = await seed(tmp_path)
    cfg = build_config({"paths": {"data_dir": str(tmp_path)}})
    async with open_services(cfg, CLOCK, migrate=True) as svc:
        async with svc.store.write() as uow:
            await uow.users.set_token("agent-a1", hash_token(new_token()))
    again = await seed(tmp_path)
    assert again["agent-a1"] != first["agent-a1"] and again["comp-a"] == first["comp-a"]
    assert await owner(tmp_path, first["agent-a1"]) is None
    assert await owner(tmp_path, again["agent-a1"]) == "agent-a1"



async def test_demo_token_prints_a_kept_token_and_names_the_file_when_there_is_none(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from dialer.cli import app

    monkeypatch.setenv("DIALGATE_PATHS_DATA_DIR", str(tmp_path))
    missing = CliRunner().invoke(app, ["demo-token", "comp-a"])
    assert missing.exit_code == 2 and "demo-tokens.json" in missing.output
    tokens = await seed(tmp_path)
    found = CliRunner().invoke(app, ["demo-token", "comp-a"])
    assert found.exit_code == 0 and found.output == tokens["comp-a"] + "\n"
