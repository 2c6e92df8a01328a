"""`dialgate serve` with `[recordings] store = "s3://…"` against the real SeaweedFS: the
PBX's upload lands as one locked object, QA seeks into it, a legal hold placed over
HTTP is the object's legal hold; a bucket without Object Lock is refused at start."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from recordings.testing import wav_stream
from tests.support.builders import ALL_DAY_POLICY, one_case, users
from tests.support.harness import DIALGATE, REPO, add_users, cli, serve, stop, wait_ready
from tests.support.net import free_port


def s3_config(tmp_path: Path, seaweed, bucket: str, prefix: str) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[paths]\ndata_dir = "{tmp_path / "var"}"\n[log]\nlevel = "warning"\n'
        f'[recordings]\nstore = "s3://{bucket}/{prefix}"\n'
        f'[recordings.s3]\nendpoint = "{seaweed.endpoint}"\naccess_key_env = "T_S3_AK"\nsecret_key_env = "T_S3_SK"\n'
        f'{ALL_DAY_POLICY}', encoding="utf-8")
    return config


def service_env(seaweed) -> dict[str, str]:
    # credentials by environment only: never in the config file
    return {**os.environ, "PYTHONPATH": str(REPO), "T_S3_AK": seaweed.access_key, "T_S3_SK": seaweed.secret_key}


@pytest.mark.slow
async def test_an_upload_through_the_service_is_a_locked_object_that_qa_can_seek_and_holds_mirror(seaweed, tmp_path) -> None:
    store = seaweed.store()
    config = s3_config(tmp_path, seaweed, store.bucket, store.prefix)
    cli(config, "db", "upgrade")
    tokens = add_users(config, users("data-a", "col-a", "pbx", "qa-a", "comp-a"))
    port = free_port()
    proc = serve(config, port, env=service_env(seaweed))
    url = f"http://127.0.0.1:{port}"
    auth = lambda who: {"Authorization": f"Bearer {tokens[who]}"}  # noqa: E731
    try:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            await wait_ready(client, url, tokens["pbx"], proc)
            case = one_case("S3-1", "bank-a", "col-a", "13800000002") | {"debtor_name": "赵六"}
            assert (await client.post("/v1/cases:import", json={"cases": [case]}, headers=auth("data-a"))).status_code == 200
            r = await client.post("/v1/dials", json={"case_id": "S3-1", "number": "13800000002", "agent_id": "col-a"},
                                  headers=auth("col-a"))
            assert r.status_code == 201, r.text
            audio = b"".join(wav_stream(300.0, tone_hz=450))  # 9.6 MB: a multipart upload
            r = await client.post("/v1/recordings", params={"attempt_id": r.json()["attempt_id"]}, content=audio,
                                  headers={**auth("pbx"), "Content-Type": "audio/wav"})
            assert r.status_code == 201, r.text
            rid = r.json()["recording_id"]
            assert store.lock_state(rid)["mode"] == "COMPLIANCE"
            tail = await client.get(f"/v1/recordings/{rid}/audio", params={"reason": "seek"},
                                    headers={**auth("qa-a"), "Range": "bytes=-32000"})
            assert tail.status_code == 206 and tail.content == audio[-32000:]
            held = await client.post(f"/v1/recordings/{rid}/legal-hold", json={"reason": "投诉 complaint"}, headers=auth("comp-a"))
            assert held.status_code == 200, held.text
            assert store.lock_state(rid)["legal_hold"] is True
            released = await client.delete(f"/v1/recordings/{rid}/legal-hold", params={"reason": "结案 case closed"},
                                           headers=auth("comp-a"))
            assert released.status_code == 200 and store.lock_state(rid)["legal_hold"] is False
    finally:
        stop(proc)
    assert seaweed.access_key not in config.read_text()


def test_the_service_refuses_to_start_on_a_bucket_without_object_lock(seaweed, tmp_path) -> None:
    config = s3_config(tmp_path, seaweed, seaweed.shared_bucket(object_lock=False), "refused")
    cli(config, "db", "upgrade")
    done = subprocess.run([*DIALGATE, "serve", "--config", str(config), "--port", str(free_port())], cwd=tmp_path,
                          env=service_env(seaweed), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "Object Lock" in done.stderr + done.stdout
