"""Revocable access: `dialgate users list | disable | enable | rotate-token | grant |
revoke-creditor`, audited, and effective at the next request of a running service —
whose token cache was warm — in every worker."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from adapters.db import tables
from dialer.auth import USERS_REVISION_FILE, Authenticator, UsersRevision
from dialer.cli import app as cli_app
from gate_api_support import Api

runner = CliRunner()


async def cli(api: Api, *args: str) -> str:
    """`dialgate …` as an operator runs it beside the service: its own store, engine and
    event loop (a thread) over the same data directory and database."""
    directory = data_dir(api)
    config = directory / "cli.toml"
    config.write_text(f'[paths]\ndata_dir = "{directory}"\n[store]\nurl = "{api.svc.config.store.url}"\n'
                      '[log]\nlevel = "warning"\n')
    r = await asyncio.to_thread(runner.invoke, cli_app, [*args, "--config", str(config)])
    assert r.exit_code == 0, (args, r.output, r.exception)
    return r.output


def data_dir(api: Api) -> Path:
    return api.svc.config.paths.data_dir


async def audit_actions(api: Api) -> list[tuple[str, str]]:
    async with api.svc.store.read() as uow:
        rows = (await uow.conn.execute(select(tables.audit_log.c.action, tables.audit_log.c.details))).all()
    return [(a, json.loads(d).get("name", "")) for a, d in rows if a.startswith("user.")]


async def test_a_disabled_users_warm_token_stops_at_the_next_request_and_enable_lets_it_back(api: Api) -> None:
    assert (await api.get("/v1/cases/C-1", "col-a")).status_code == 200  # the token is now cached
    out = await cli(api, "users", "disable", "col-a")
    assert "disabled" in out
    r = await api.get("/v1/cases/C-1", "col-a")
    assert r.status_code == 401
    r = await api.dial("col-a", "C-1", "13800000001")  # the hot path too
    assert r.status_code == 401
    await cli(api, "users", "enable", "col-a")
    assert (await api.get("/v1/cases/C-1", "col-a")).status_code == 200
    assert ("user.disabled", "col-a") in await audit_actions(api)
    assert ("user.enabled", "col-a") in await audit_actions(api)


async def test_a_rotated_token_replaces_the_old_one_at_once(api: Api) -> None:
    assert (await api.get("/v1/cases/C-1", "col-a")).status_code == 200
    new = (await cli(api, "users", "rotate-token", "col-a")).strip().splitlines()[-1]
    assert new.startswith("dg_") and new != api.tokens["col-a"]
    assert (await api.get("/v1/cases/C-1", "col-a")).status_code == 401
    r = await api.client.get("/v1/cases/C-1", headers={"Authorization": f"Bearer {new}"})
    assert r.status_code == 200
    assert ("user.token_rotated", "col-a") in await audit_actions(api)


async def test_revoking_a_creditor_hides_its_cases_at_once_and_granting_shows_them(api: Api) -> None:
    assert (await api.get("/v1/cases/C-1", "qa-a")).status_code == 200
    await cli(api, "users", "revoke-creditor", "qa-a", "--creditor", "bank-a")
    assert (await api.get("/v1/cases/C-1", "qa-a")).status_code == 404
    await cli(api, "users", "grant", "qa-a", "--creditor", "bank-a")
    assert (await api.get("/v1/cases/C-1", "qa-a")).status_code == 200
    actions = await audit_actions(api)
    assert ("user.creditor_revoked", "qa-a") in actions and ("user.creditor_granted", "qa-a") in actions


async def test_users_list_shows_roles_creditors_and_state_and_never_a_token(api: Api) -> None:
    await cli(api, "users", "disable", "col-b")
    out = await cli(api, "users", "list", "--json")
    users = {u["name"]: u for u in json.loads(out)}
    assert users["col-b"]["disabled"] is True and users["col-a"]["disabled"] is False
    assert users["comp-a"]["role"] == "compliance" and users["comp-a"]["creditors"] == ["bank-a"]
    assert users["admin"]["creditors"] == []
    assert not any(t in out for t in api.tokens.values())
    assert "token_hash" not in out


async def test_a_change_clears_the_token_cache_of_every_worker_on_the_same_data_dir(api: Api) -> None:
    # Two more authenticators over the same store and data dir stand for two other workers.
    rev = data_dir(api) / USERS_REVISION_FILE
    workers = [Authenticator(api.svc.store, cache_s=3600, revision=UsersRevision(rev)) for _ in range(2)]
    header = f"Bearer {api.tokens['sup-a']}"
    for w in workers:
        assert (await w.authenticate(header)).name == "sup-a"
    await cli(api, "users", "disable", "sup-a")
    from dialer.errors import Unauthenticated

    for w in workers:
        with pytest.raises(Unauthenticated):
            await w.authenticate(header)


def test_disabling_an_unknown_user_is_refused_with_the_name(tmp_path: Path) -> None:
    config = tmp_path / "cli.toml"
    config.write_text(f'[paths]\ndata_dir = "{tmp_path}"\n[log]\nlevel = "warning"\n')
    r = runner.invoke(cli_app, ["users", "disable", "nobody", "--config", str(config)])
    assert r.exit_code == 2
    assert "nobody" in r.output
