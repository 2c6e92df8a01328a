"""Two `dialgate serve` instances on one PostgreSQL: exactly one runs the once-only work
(MQTT bus and outbox relay, expiry, recordings sweep and drop-folder inbox), both say which one in
/readyz, and the role moves to the other when the leader is killed with SIGKILL or frozen
with SIGSTOP (then the first steps down when it wakes: fencing by the lock's lease)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.harness import DIALGATE, REPO, cli, wait_ready, write_config
from tests.support.net import free_port
from recordings.testing import wav_stream
from tests.conftest import require_service


async def _leadership(client: httpx.AsyncClient, url: str, token: str) -> dict[str, Any]:
    r = await client.get(url + "/readyz", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["leadership"]


async def _until(probe: Any, what: str, timeout: float = 30.0) -> Any:
    """Ask `probe()` until it returns something truthy (bounded; the failure names `what`)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await probe()
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.1)


async def _recordings(pg_url: str) -> list[tuple[str, str]]:
    import asyncpg

    from adapters.db.leader import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(pg_url))
    try:
        return [tuple(r) for r in await conn.fetch("SELECT source_kind, source_id FROM recordings ORDER BY source_id")]
    finally:
        await conn.close()


async def _lock_holders(pg_url: str) -> list[str]:
    import asyncpg

    from adapters.db.leader import LOCK_CLASS, LOCK_ID, asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(pg_url))
    try:
        rows = await conn.fetch(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 2 AND l.granted "
            # Advisory locks are per database; other databases of the cluster elect their own.
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            LOCK_CLASS, LOCK_ID)
        return [r[0] for r in rows]
    finally:
        await conn.close()


def _drop(inbox: Path, name: str) -> None:
    """A finished recording, as a PBX leaves it: written elsewhere, renamed in, a
    minute old (the inbox takes files that stopped changing)."""
    part = inbox / f".{name}.part"
    part.write_bytes(b"".join(wav_stream(1.0, tone_hz=440)))
    os.utime(part, (part.stat().st_mtime - 60,) * 2)
    part.rename(inbox / name)


@contextlib.asynccontextmanager
async def _two_instances(pg_url: str, workdir: Path, extra: str = "") -> AsyncIterator[tuple[list[Any], list[str], str]]:
    """Two `dialgate serve` on one database, both ready: (processes, base URLs, an admin
    token). Their logs go to serve-<i>.log in `workdir`; both are stopped on the way out."""
    config = write_config(workdir, pg_url, extra=extra)
    cli(config, "db", "upgrade")
    token = cli(config, "users", "add", "--name", "probe-l", "--role", "admin").strip().splitlines()[-1]
    ports = [free_port(), free_port()]
    logs = [open(workdir / f"serve-{i}.log", "wb") for i in range(2)]  # noqa: SIM115 - closed below
    env = {**os.environ, "PYTHONPATH": str(REPO), "DIALGATE_LOG_LEVEL": "info"}
    procs = [subprocess.Popen([*DIALGATE, "serve", "--config", str(config), "--port", str(p)],
                              cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=log)
             for p, log in zip(ports, logs)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        async with httpx.AsyncClient() as client:
            await asyncio.gather(*(wait_ready(client, u, token, p) for u, p in zip(urls, procs)))
        yield procs, urls, token
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        for log in logs:
            log.close()


async def _one_leader(client: httpx.AsyncClient, urls: list[str], token: str) -> list[dict[str, Any]]:
    async def probe() -> Any:
        views = [await _leadership(client, u, token) for u in urls]
        leaders = [i for i, v in enumerate(views) if v["is_leader"]]
        return views if len(leaders) == 1 and views[0]["leader"] == views[1]["leader"] else None

    return await _until(probe, "exactly one instance leads and both name it")


@pytest.fixture
def broker(workdir: Path) -> Any:
    from tests.integration.mqtt.broker import MOSQUITTO, MosquittoBroker

    require_service("mosquitto", MOSQUITTO.exists(), "apt-get install mosquitto (scripts/setup.sh --services)")
    (workdir / "mosquitto").mkdir()
    mq = MosquittoBroker(workdir / "mosquitto", free_port())
    mq.start()
    yield mq
    mq.stop()


async def _readyz(client: httpx.AsyncClient, url: str, token: str) -> dict[str, Any]:
    r = await client.get(url + "/readyz", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.mark.slow
async def test_one_of_two_instances_leads_and_the_other_takes_over_when_it_is_killed(pg_url: str, workdir: Path,
                                                                                    broker: Any) -> None:
    inbox = workdir / "inbox"
    inbox.mkdir()
    extra = f'[recordings]\ninbox = "{inbox}"\n[mqtt]\nurl = "{broker.url}"\nclient_id = "dialgate-leader-test"\n'
    async with _two_instances(pg_url, workdir, extra) as (procs, urls, token):
        async with httpx.AsyncClient() as client:
            views = await _one_leader(client, urls, token)
            first = next(i for i, v in enumerate(views) if v["is_leader"])
            assert views[first]["leader"] == views[first]["instance"] != views[1 - first]["instance"]
            assert all(v["store_primary"] is True for v in views)
            assert await _lock_holders(pg_url) == [views[first]["instance"]]
            # The MQTT bus (relay and subscriptions) runs in the leader only.
            assert ["mqtt" in await _readyz(client, u, token) for u in urls] == [i == first for i in range(2)]

            # The inbox runs once: a recording dropped into the folder both share is
            # stored once (two scanners would race for it).
            _drop(inbox, "call-first-call@pbx.wav")

            async def stored() -> Any:
                rows = await _recordings(pg_url)
                return rows if rows and not (inbox / "call-first-call@pbx.wav").exists() else None

            assert await _until(stored, "the first recording is taken from the inbox") == [("call", "first-call@pbx")]

            procs[first].send_signal(signal.SIGKILL)
            procs[first].wait(timeout=10)
            other = 1 - first

            async def took_over() -> Any:
                view = await _leadership(client, urls[other], token)
                return view if view["is_leader"] else None

            view = await _until(took_over, "the surviving instance leads", timeout=20)
            assert view["leader"] == views[other]["instance"]
            assert "mqtt" in await _readyz(client, urls[other], token)  # the bus moved with the role
            assert await _lock_holders(pg_url) == [views[other]["instance"]]

            _drop(inbox, "call-second-call@pbx.wav")

            async def both_stored() -> Any:
                rows = await _recordings(pg_url)
                return rows if len(rows) == 2 else None

            assert await _until(both_stored, "the second recording is taken by the new leader") == [
                ("call", "first-call@pbx"), ("call", "second-call@pbx")]
    texts = [(workdir / f"serve-{i}.log").read_text(errors="replace") for i in range(2)]
    assert texts[first].count('"leader.elected"') == 1, texts[first][-3000:]
    assert texts[other].count('"leader.elected"') == 1, texts[other][-3000:]
    assert '"service.stopped"' in texts[other], texts[other][-3000:]  # left its term cleanly


@pytest.mark.slow
async def test_a_frozen_leader_loses_its_term_and_steps_down_when_it_wakes(pg_url: str, workdir: Path) -> None:
    async with _two_instances(pg_url, workdir) as (procs, urls, token):
        async with httpx.AsyncClient() as client:
            views = await _one_leader(client, urls, token)
            first = next(i for i, v in enumerate(views) if v["is_leader"])
            other = 1 - first
            procs[first].send_signal(signal.SIGSTOP)  # alive, connected, silent: the lease runs out

            async def took_over() -> Any:
                view = await _leadership(client, urls[other], token)
                return view if view["is_leader"] else None

            await _until(took_over, "the other instance leads while the first is frozen", timeout=30)
            assert await _lock_holders(pg_url) == [views[other]["instance"]]
            procs[first].send_signal(signal.SIGCONT)
            after = await _one_leader(client, urls, token)
            assert [v["is_leader"] for v in (after[first], after[other])] == [False, True]
            assert after[first]["leader"] == views[other]["instance"]
    text = (workdir / f"serve-{first}.log").read_text(errors="replace")
    assert text.count('"leader.elected"') == 1 and '"leader.stepped_down"' in text, text[-3000:]



@pytest.mark.slow
async def test_the_periodic_singleton_jobs_run_in_the_leader_only_and_move_with_the_role(pg_url: str, workdir: Path) -> None:
    # The evidence-heads export leaves a line in the log of the instance that ran it, so
    # it shows where the leader's periodic jobs run; the expiry of stale click-to-dial
    # authorisations (every 15 s) shows that they carry on after the leader dies.
    extra = '[audit]\nexport_interval_s = 0.5\n[gate]\nattempt_validity_s = 1\n'
    async with _two_instances(pg_url, workdir, extra) as (procs, urls, token):
        async with httpx.AsyncClient() as client:
            views = await _one_leader(client, urls, token)
            first = next(i for i, v in enumerate(views) if v["is_leader"])
            other = 1 - first
            logs = [workdir / f"serve-{i}.log" for i in range(2)]

            def exports(i: int) -> int:
                return logs[i].read_text(errors="replace").count('"evidence.heads"')

            async def exported_by_leader() -> Any:
                return exports(first) >= 3

            await _until(exported_by_leader, "the leader exports the heads")
            assert exports(other) == 0  # one runner: the other instance never ran the job

            # an authorisation nobody places, made through the instance that will survive
            data = cli(workdir / "config.toml", "users", "add", "--name", "data-e", "--role", "data",
                       "--creditor", "bank-e").strip().splitlines()[-1]
            agent = cli(workdir / "config.toml", "users", "add", "--name", "col-e", "--role", "collector",
                        "--creditor", "bank-e").strip().splitlines()[-1]
            from gate_store_support import one_case

            r = await client.post(urls[other] + "/v1/cases:import", headers={"Authorization": f"Bearer {data}"},
                                  json={"cases": [one_case("E-1", "bank-e", "col-e", "13200000001")]}, timeout=30)
            assert r.status_code == 200, r.text
            r = await client.post(urls[other] + "/v1/dials", headers={"Authorization": f"Bearer {agent}"},
                                  json={"case_id": "E-1", "number": "13200000001", "agent_id": "col-e"}, timeout=30)
            assert r.status_code == 201, r.text
            attempt = r.json()["attempt_id"]

            procs[first].send_signal(signal.SIGKILL)
            procs[first].wait(timeout=10)
            killed_with = exports(first)

            async def exported_by_successor() -> Any:
                return exports(other) >= 2

            await _until(exported_by_successor, "the surviving instance exports the heads", timeout=30)

            async def expired() -> Any:
                import asyncpg

                from adapters.db.leader import asyncpg_dsn

                conn = await asyncpg.connect(asyncpg_dsn(pg_url))
                try:
                    return await conn.fetchval("SELECT state FROM attempts WHERE id = $1", attempt) == "expired"
                finally:
                    await conn.close()

            await _until(expired, "the stale authorisation is expired by the new leader", timeout=45)
            assert exports(first) == killed_with  # the dead one ran nothing more
