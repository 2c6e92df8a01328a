"""Revocation reaches instances on other hosts at once: two `dialgate serve` processes on
one PostgreSQL, each with its own data directory (nothing shared but the database) and
a token cache kept 300 s; a user changed with `dialgate users …` beside one instance is
refused (or narrowed) by the other within a few seconds, not at the cache's expiry.
And an instance whose listening connection is lost stops trusting its cache until it
listens again: a change whose notice it could not hear still stops the token."""

from __future__ import annotations

import asyncio
import os
import secrets
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import httpx
import pytest

from adapters.db.leader import asyncpg_dsn
from gate_store_support import _wait_ready, cli, free_port, one_case, write_config
from tests.support.builders import users
from tests.support.harness import add_users, in_process, serve, stop

LONG_CACHE = "[gate]\nauth_cache_s = 300\n"
PROMPTLY_S = 5.0  # far below the cache's 300 s; the notice takes milliseconds


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = PROMPTLY_S) -> None:
    """Poll `check` until it holds; fail naming `what` after `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {within:.0f} s: {what}")
        await asyncio.sleep(0.05)


def status_is(client: httpx.AsyncClient, url: str, token: str, status: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        r = await client.get(url, headers={"Authorization": f"Bearer {token}"})
        return r.status_code == status

    return check


@pytest.mark.slow
async def test_a_user_changed_beside_one_instance_is_refused_by_another_host_at_once(pg_url: str, workdir: Path) -> None:
    a_dir, b_dir = workdir / "host-a", workdir / "host-b"
    a_dir.mkdir()
    b_dir.mkdir()
    # One evidence key for both (each chains into the same log), and nothing else shared.
    key = workdir / "evidence.key"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    extra = f'{LONG_CACHE}[audit]\nkey_file = "{key}"\n'
    config_a, config_b = write_config(a_dir, pg_url, extra), write_config(b_dir, pg_url, extra)
    cli(config_a, "db", "upgrade")
    tokens = add_users(config_a, [("data-r", "data", ("bank-r",)), ("col-r", "collector", ("bank-r",)),
                                  ("col-t", "collector", ("bank-r",)), ("qa-r", "qa", ("bank-r",))])
    ports = [free_port(), free_port()]
    procs = [serve(config_a, ports[0]), serve(config_b, ports[1])]
    b = f"http://127.0.0.1:{ports[1]}"
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            for proc, port in zip(procs, ports):
                await _wait_ready(client, f"http://127.0.0.1:{port}", tokens["data-r"], proc)
            cases = [one_case("R-1", "bank-r", "col-r", "13900000001"), one_case("R-2", "bank-r", "col-t", "13900000002")]
            r = await client.post(b + "/v1/cases:import", json={"cases": cases},
                                  headers={"Authorization": f"Bearer {tokens['data-r']}"})
            assert r.status_code == 200, r.text
            case, case_t = b + "/v1/cases/R-1", b + "/v1/cases/R-2"
            for who, url in (("col-r", case), ("col-t", case_t), ("qa-r", case)):  # each token now in B's cache
                r = await client.get(url, headers={"Authorization": f"Bearer {tokens[who]}"})
                assert r.status_code == 200, (who, r.text)

            await asyncio.to_thread(cli, config_a, "users", "disable", "col-r")
            await until(status_is(client, case, tokens["col-r"], 401), "B refuses the disabled user")

            new = (await asyncio.to_thread(cli, config_a, "users", "rotate-token", "col-t")).strip().splitlines()[-1]
            await until(status_is(client, case_t, tokens["col-t"], 401), "B refuses the rotated token")
            assert await status_is(client, case_t, new, 200)()

            await asyncio.to_thread(cli, config_a, "users", "revoke-creditor", "qa-r", "--creditor", "bank-r")
            await until(status_is(client, case, tokens["qa-r"], 404), "B hides the revoked creditor's case")

            await asyncio.to_thread(cli, config_a, "users", "enable", "col-r")
            await until(status_is(client, case, tokens["col-r"], 200), "B lets the enabled user back")
    finally:
        for p in procs:
            stop(p)


async def _kill_listener(dsn: str) -> int:
    import asyncpg

    admin = await asyncpg.connect(dsn)
    try:
        killed: int = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'dialgate listen dialgate_auth'")
        return killed
    finally:
        await admin.close()


async def _disable_unheard(dsn: str, name: str) -> None:
    """A change whose notice the instance cannot hear (sent while it did not listen)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("UPDATE users SET disabled = true WHERE name = $1", name)
    finally:
        await conn.close()


@asynccontextmanager
async def _instance(pg_url: str, tmp: Path) -> AsyncIterator[Any]:
    config = {"paths": {"data_dir": str(tmp)}, "store": {"url": pg_url}, "gate": {"auth_cache_s": 300},
              "log": {"json": True}}
    async with in_process(config, users=users("col-a", "col-a2", "col-b")) as service:
        yield service


async def test_an_instance_that_lost_its_listening_connection_stops_trusting_its_cache(
        pg_url: str, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from adapters.db import pg_listen

    dsn = asyncpg_dsn(pg_url)
    async with _instance(pg_url, workdir) as b:
        assert (await b.get("/v1/worklist", "col-a")).status_code == 200  # cached
        await _disable_unheard(dsn, "col-a")
        assert (await b.get("/v1/worklist", "col-a")).status_code == 200  # the cache serves: no query per request

        monkeypatch.setattr(pg_listen, "RETRY_S", 60.0)  # once lost, it stays lost for the test
        assert await _kill_listener(dsn) == 1
        await until(_status(b, "col-a", 401), "B stops serving col-a from its cache once it cannot hear")
        assert (await b.get("/v1/worklist", "col-a2")).status_code == 200  # read, and not kept:
        await _disable_unheard(dsn, "col-a2")
        assert (await b.get("/v1/worklist", "col-a2")).status_code == 401  # the next request reads again


async def test_an_instance_listens_again_after_losing_its_connection(pg_url: str, workdir: Path) -> None:
    from dialer.auth import UserAdmin, UsersRevision

    dsn = asyncpg_dsn(pg_url)
    async with _instance(pg_url, workdir) as b:
        notices = b.svc.auth.notices
        heard = notices.heard
        assert await _kill_listener(dsn) == 1
        await until(lambda: _true(notices.listening and notices.heard >= heard + 2), "B listens again")
        assert (await b.get("/v1/worklist", "col-b")).status_code == 200
        await _disable_unheard(dsn, "col-b")
        assert (await b.get("/v1/worklist", "col-b")).status_code == 200  # trusted again: served from the cache
        # A change made elsewhere (no users.rev in B's data directory): heard on the new connection.
        assert (await b.get("/v1/worklist", "col-a")).status_code == 200
        await UserAdmin(b.svc.store, b.clock, UsersRevision(None)).set_disabled("col-a", True)
        await until(_status(b, "col-a", 401), "B hears the change on its new connection")


def _status(service: Any, who: str, status: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool((await service.get("/v1/worklist", who)).status_code == status)

    return check


async def _true(value: bool) -> bool:
    return value
