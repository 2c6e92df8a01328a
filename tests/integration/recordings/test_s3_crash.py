"""Killing an ingest into S3 (real SeaweedFS) at each step: no visible recording, the
interrupted multipart upload aborted at the next start, no plaintext in anything the
server keeps or in the service's database."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import AsyncIterator

import pytest

from adapters.storage.keys import KeyFileKeyProvider
from adapters.storage.s3 import S3BlobStore
from recordings.testing import ADMIN, PBX, request, wav_stream
from recordings.vault import Vault

ROOT = Path(__file__).resolve().parents[3]
CHILD = Path(__file__).with_name("crash_child.py")
MARKER = b"S3-CRASH-MARKER-\x5a\xc3\x10-DIALGATE"
SECONDS = 10 * 60.0  # 19 MB: three 5 MiB parts go up while writing, the last at sync


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@asynccontextmanager
async def service_vault(root: Path, blobs: S3BlobStore) -> AsyncIterator[Vault]:
    from adapters.db.migrate import upgrade
    from adapters.db.recordings_repo import SqlAlchemyRecordingRepository
    from adapters.db.store import SqlAlchemyCaseStore
    from dialer.config import build_config

    cfg = build_config({"paths": {"data_dir": str(root)}})
    async with SqlAlchemyCaseStore(cfg.store) as store:
        await upgrade(store)
        keys = KeyFileKeyProvider(root / "keys" / "recordings.keys")
        keys.create("bank-a")
        yield Vault(SqlAlchemyRecordingRepository(store), blobs, keys, clock=utcnow)


def run_child_until(root: Path, step: str, blobs: S3BlobStore, seaweed) -> subprocess.Popen:
    s3 = {
        "endpoint": seaweed.endpoint,
        "bucket": blobs.bucket,
        "prefix": blobs.prefix,
        "access_key": seaweed.access_key,
        "secret_key": seaweed.secret_key,
        "object_lock": blobs.object_lock,
    }
    env = dict(os.environ, PYTHONPATH=str(ROOT), DIALGATE_CRASH_S3=json.dumps(s3))
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(root), step, MARKER.hex(), str(SECONDS)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env,
    )
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    ready = sel.select(timeout=120)  # an upper bound against hanging, not a pacing sleep
    sel.close()
    if not ready:
        proc.kill()
        pytest.fail(f"child never reached {step}: {proc.stderr.read().decode()}")
    line = proc.stdout.readline().decode().strip()
    if line != f"PAUSED {step}":
        proc.kill()
        pytest.fail(f"child said {line!r} instead of pausing at {step}: {proc.stderr.read().decode()}")
    return proc


def assert_no_plaintext(seaweed, root: Path) -> None:
    files = seaweed.stored_files() + [p for p in root.rglob("*") if p.is_file()]
    assert files
    for p in files:
        assert MARKER not in p.read_bytes(), f"plaintext found in {p}"


def visible(blobs: S3BlobStore) -> list[str]:
    resp = blobs.client.list_objects_v2(Bucket=blobs.bucket, Prefix=blobs.prefix + "/")
    return [o["Key"] for o in resp.get("Contents", [])]


@pytest.mark.slow
@pytest.mark.parametrize("step", ["writing", "sealed", "synced", "published", "committed"])
async def test_killing_an_s3_ingest_at_any_step_leaves_no_recording_no_open_upload_and_no_plaintext(
    seaweed, tmp_path, step
) -> None:
    blobs = seaweed.store()
    async with service_vault(tmp_path, blobs):
        pass  # database migrated, key file created
    proc = run_child_until(tmp_path, step, blobs, seaweed)
    with proc:  # closes its pipes
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    open_uploads = blobs.temporaries()
    if step in ("sealed", "synced"):
        # parts went up (ciphertext), the object was never completed: not visible
        assert len(open_uploads) == 1 and visible(blobs) == []
        parts = blobs.client.list_parts(
            Bucket=blobs.bucket, Key=open_uploads[0]["key"], UploadId=open_uploads[0]["upload_id"]
        ).get("Parts", [])
        if step == "synced":  # every part is up, the last one included
            assert len(parts) == 4
    else:
        assert open_uploads == []
    assert_no_plaintext(seaweed, tmp_path)

    async with service_vault(tmp_path, blobs) as vault:  # "the next start"
        rows = await vault.list(ADMIN)
        report = await vault.recover()
        assert blobs.temporaries() == []  # every interrupted upload aborted
        if step == "committed":
            [rec] = rows
            assert visible(blobs) == [blobs.object_key(rec.recording_id)]
            assert [r.ok for r in await vault.verify(ADMIN)] == [True]
            return
        assert rows == []
        assert report["temporaries"] == (1 if step in ("sealed", "synced") else 0)
        if step == "published":
            # Completed but never committed: locked in compliance mode, so it stays as
            # ciphertext whose data key was only ever in the dead process's memory.
            assert report.get("locked") == 1 and len(visible(blobs)) == 1
        else:
            assert visible(blobs) == []
        # the PBX retries and the recording is stored whole
        rec = (await vault.ingest(request("crash-attempt-1"), wav_stream(SECONDS, tone_hz=440), PBX)).recording
        assert [r.ok for r in await vault.verify(ADMIN, [rec.recording_id])] == [True]
    assert_no_plaintext(seaweed, tmp_path)
