"""The vault behind a real `dialgate serve` process: a 256 MiB call streamed over a
real socket (chunked, never buffered whole by the service), read back whole and by
range, with the service's memory measured from /proc."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from recordings.testing import wav_size, wav_stream
from tests.support.builders import ALL_DAY_POLICY, one_case, users
from tests.support.harness import add_users, cli, serve, stop, wait_ready
from tests.support.net import free_port


def vm(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


@pytest.mark.slow
async def test_a_long_call_streams_through_the_real_service_in_constant_memory(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[paths]\ndata_dir = "{tmp_path / "var"}"\n[log]\nlevel = "warning"\n'
        f'[recordings]\nmax_size_mb = 1024\n{ALL_DAY_POLICY}', encoding="utf-8")
    cli(config, "db", "upgrade")
    tokens = add_users(config, users("data-a", "col-a", "pbx", "qa-a"))
    port = free_port()
    proc = serve(config, port)
    url = f"http://127.0.0.1:{port}"
    auth = lambda who: {"Authorization": f"Bearer {tokens[who]}"}  # noqa: E731
    try:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            await wait_ready(client, url, tokens["pbx"], proc)
            case = one_case("L-1", "bank-a", "col-a", "13800000001") | {"debtor_name": "王五"}
            assert (await client.post("/v1/cases:import", json={"cases": [case]}, headers=auth("data-a"))).status_code == 200
            r = await client.post("/v1/dials", json={"case_id": "L-1", "number": "13800000001", "agent_id": "col-a"},
                                  headers=auth("col-a"))
            assert r.status_code == 201, r.text
            attempt = r.json()["attempt_id"]

            # 70 min, 134,400,044 bytes: twice the RSS bound below, so a service that
            # buffered the call would fail, at half the time a longer call takes.
            seconds = 4200
            expected = hashlib.sha256()
            for piece in wav_stream(seconds):
                expected.update(piece)

            async def body():
                for piece in wav_stream(seconds, piece=256 * 1024):
                    yield piece

            rss_before = vm(proc.pid, "VmRSS")
            r = await client.post("/v1/recordings", params={"attempt_id": attempt}, content=body(),
                                  headers={**auth("pbx"), "Content-Type": "audio/wav"})
            assert r.status_code == 201, r.text
            assert r.json()["sha256"] == expected.hexdigest()
            growth = vm(proc.pid, "VmHWM") - rss_before
            assert growth < 64 * 1024 * 1024, f"service RSS grew by {growth / 2**20:.1f} MiB"
            rid = r.json()["recording_id"]

            tail = await client.get(f"/v1/recordings/{rid}/audio", params={"reason": "seek"},
                                    headers={**auth("qa-a"), "Range": "bytes=-32000"})
            assert tail.status_code == 206 and tail.content == bytes(32000)
            got = hashlib.sha256()
            async with client.stream("GET", f"/v1/recordings/{rid}/audio", params={"reason": "whole"}, headers=auth("qa-a")) as resp:
                assert resp.status_code == 200 and int(resp.headers["content-length"]) == wav_size(seconds)
                async for chunk in resp.aiter_bytes():
                    got.update(chunk)
            assert got.hexdigest() == expected.hexdigest()
            log = (await client.get(f"/v1/recordings/{rid}/access-log", headers=auth("qa-a"))).json()["entries"]
            assert [(e["reason"], e["client"]) for e in log] == [("seek", "127.0.0.1"), ("whole", "127.0.0.1")]
        # the CLI, beside the running service, sees the same vault
        assert f'"recording_id": "{rid}"' in cli(config, "recordings", "list", "--json", "--case", "L-1")
        assert "1 checked, 0 failed" in cli(config, "recordings", "verify")
    finally:
        stop(proc)
