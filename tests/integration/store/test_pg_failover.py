"""PostgreSQL primary lost under a steady click-to-dial load, synchronous standby
promoted: the gate answers 503 `store-unavailable` during the gap (never an allow it
could not log; or a block by rule system.store_unavailable), no acknowledged decision is lost, the decision log verifies, and the
same `dialgate serve` process decides again without a restart (the store URL names both
servers with target_session_attrs=read-write)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gate_store_support import DIALGATE, REPO, _wait_ready, cli, free_port, one_case, write_config
from pg_ha import PgPair

CLIENTS = 4


@pytest.fixture
def pair() -> Any:
    pg = PgPair(free_port(), free_port())
    try:
        pg.start()
        pg.psql(pg.primary_port, "CREATE DATABASE dialgate")
        yield pg
    finally:
        pg.close()


@pytest.mark.slow
async def test_a_promoted_standby_takes_over_and_no_acknowledged_decision_is_lost(pair: PgPair, workdir: Path) -> None:
    url = (f"postgresql+asyncpg://postgres@/dialgate?host=127.0.0.1:{pair.primary_port}"
           f"&host=127.0.0.1:{pair.standby_port}&target_session_attrs=read-write")
    config = write_config(workdir, url)
    cli(config, "db", "upgrade")
    tokens = {name: cli(config, "users", "add", "--name", name, "--role", role, "--creditor", "bank-f").strip().splitlines()[-1]
              for name, role in (("data-f", "data"), ("col-f", "collector"))}
    port = free_port()
    log = open(workdir / "serve.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([*DIALGATE, "serve", "--config", str(config), "--port", str(port)], cwd=workdir,
                            env={**os.environ, "PYTHONPATH": str(REPO), "DIALGATE_STORE_TIMEOUT_S": "2"},
                            stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    answers: list[tuple[float, float, int, dict[str, Any]]] = []  # sent, answered, status, body
    marks: dict[str, float] = {}
    changed = asyncio.Event()
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            try:
                await _wait_ready(client, base, tokens["data-f"], proc)
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {(workdir / 'serve.log').read_text(errors='replace')[-3000:]}") from None
            cases = [one_case(f"F-{i}", "bank-f", "col-f", f"1390000{i:04d}") for i in range(3000)]
            for k in range(0, len(cases), 500):
                r = await client.post("/v1/cases:import", json={"cases": cases[k:k + 500]},
                                      headers={"Authorization": f"Bearer {tokens['data-f']}"})
                assert r.status_code == 200, r.text
            following = iter(range(len(cases)))
            stop = asyncio.Event()

            async def dialer() -> None:
                i = next(following)
                while not stop.is_set():
                    sent = time.monotonic()
                    r = await client.post("/v1/dials", json={"case_id": f"F-{i}", "number": f"1390000{i:04d}",
                                                             "agent_id": "col-f"},
                                          headers={"Authorization": f"Bearer {tokens['col-f']}"})
                    # Any answer is kept, JSON or not: a 500's plain body must fail the test below,
                    # not end this client unseen.
                    json_body = r.headers.get("content-type", "").startswith(("application/json", "application/problem+json"))
                    answers.append((sent, time.monotonic(), r.status_code, r.json() if json_body else {"text": r.text}))
                    changed.set()
                    if r.status_code == 201:  # a refused dial is tried again, as an agent would
                        i = next(following)

            def allowed_since(t: float) -> int:
                return sum(1 for s, _, code, _ in answers if code == 201 and s >= t)

            async def until(pred: Any, what: str, timeout: float = 60) -> None:
                async with asyncio.timeout(timeout):
                    while not pred():
                        changed.clear()
                        await changed.wait()

            workers = [asyncio.create_task(dialer()) for _ in range(CLIENTS)]
            try:
                await until(lambda: allowed_since(0) >= 50, "steady load")
                marks["killed"] = time.monotonic()
                pair.kill_primary()
                await until(lambda: any(a for a in answers if a[0] >= marks["killed"] and a[2] != 201),
                            "a dial refused while no primary is there")
                marks["promoting"] = time.monotonic()
                await asyncio.to_thread(pair.promote)
                marks["promoted"] = time.monotonic()
                await until(lambda: allowed_since(marks["promoted"]) >= 50, "decisions flow again", timeout=90)
            finally:
                stop.set()
                await asyncio.gather(*workers, return_exceptions=True)
            assert proc.poll() is None  # the same process, never restarted
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    server_log = (workdir / "serve.log").read_text(errors="replace")[-3000:]
    def refused(code: int, body: dict[str, Any]) -> bool:
        """Fail closed: 503 store-unavailable, or a block by rule system.store_unavailable
        (the gate could not read or log, so it refused: an unlogged decision is a block)."""
        if code == 503:
            return body.get("type", "").rsplit("/", 1)[-1] == "store-unavailable"
        return code == 403 and body.get("decision", {}).get("rule_id") == "system.store_unavailable"

    assert all(code == 201 or refused(code, body) for *_, code, body in answers), server_log
    gap = [a for a in answers if a[0] >= marks["killed"] and a[1] <= marks["promoting"]]
    assert gap and all(refused(code, body) for *_, code, body in gap), server_log
    acknowledged = {body["attempt_id"] for *_, code, body in answers if code == 201}
    stored = set(pair.psql(pair.standby_port, "SELECT id FROM attempts", db="dialgate").split())
    assert acknowledged <= stored, f"lost: {sorted(acknowledged - stored)[:5]}"
    verified = subprocess.run([*DIALGATE, "audit", "verify", "--config", str(config)], cwd=workdir,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0, verified.stdout[-2000:] + verified.stderr[-2000:]
    print(f"failover: {len([a for a in answers if a[2] != 201])} dials refused (503 or 403 system.store_unavailable); decisions again "
          f"{min(a[1] for a in answers if a[2] == 201 and a[0] >= marks['promoted']) - marks['killed']:.2f} s "
          f"after the kill (promotion {marks['promoted'] - marks['promoting']:.2f} s)")
