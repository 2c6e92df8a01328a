"""The vault on the real filesystem with a real key file: long recordings streamed,
crash injection during ingest, startup cleanup, key file handling."""

from __future__ import annotations

import hashlib
import io
import json
import os
import selectors
import signal
import stat
import subprocess
import sys
import wave
from datetime import datetime, timezone
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import pytest

from adapters.storage.filesystem import FilesystemBlobStore
from adapters.storage.jsonrepo import JsonFileRecordingRepository
from adapters.storage.keys import EnvKeyProvider, KeyFileKeyProvider, env_var
from recordings.errors import ConfigError, KeyDestroyed
from recordings.testing import ADMIN, PBX, QA_A, request, wav_size, wav_stream
from recordings.vault import Vault

ROOT = Path(__file__).resolve().parents[3]
CHILD = Path(__file__).with_name("crash_child.py")
MARKER = b"PLAINTEXT-MARKER-\x8f\x13\xa7\x42-DIALGATE"
STEPS = ["opened", "writing", "sealed", "synced", "published", "committed"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def make_vault(tmp_path: Path, **kw) -> Vault:
    keys = KeyFileKeyProvider(tmp_path / "keys" / "recordings.keys")
    for scope in ("bank-a", "_unmatched"):
        keys.create(scope)
    return Vault(
        JsonFileRecordingRepository(tmp_path / "meta" / "recordings.json"),
        FilesystemBlobStore(tmp_path / "data"),
        keys,
        clock=utcnow,
        **kw,
    )


def files_under(*roots: Path) -> list[Path]:
    return [p for r in roots if r.exists() for p in r.rglob("*") if p.is_file()]


def assert_no_plaintext(*roots: Path) -> None:
    for p in files_under(*roots):
        assert MARKER not in p.read_bytes(), f"plaintext found in {p}"


@pytest.mark.slow
async def test_a_three_hour_silent_wav_streams_through_the_vault_and_back(tmp_path) -> None:
    vault = make_vault(tmp_path, max_size=4 * 1024**3)
    seconds = 3 * 3600
    expected = hashlib.sha256()
    for piece in wav_stream(seconds):
        expected.update(piece)
    rec = (await vault.ingest(request("long-1"), wav_stream(seconds), PBX)).recording
    assert rec.size == wav_size(seconds) and rec.sha256 == expected.hexdigest()
    stream = await vault.open_audio(rec.recording_id, QA_A, reason="long call review")
    got = hashlib.sha256()
    head = b""
    n = 0
    for chunk in stream.chunks:  # the whole read verifies the stored SHA-256 at the end
        if len(head) < 44:
            head += chunk[:44]
        got.update(chunk)
        n += len(chunk)
    assert n == rec.size and got.hexdigest() == rec.sha256
    with wave.open(io.BytesIO(head[:44])) as w:
        assert w.getnframes() == seconds * 8000 and w.getnchannels() == 2
    last = await vault.open_audio(rec.recording_id, QA_A, reason="seek to end", byte_range="bytes=-32000")
    assert last.read_all() == bytes(32000)


@asynccontextmanager
async def service_vault(root: Path) -> AsyncIterator[Vault]:
    """The vault as the service builds it: SQLite service database, migrated."""
    from adapters.db.migrate import upgrade
    from adapters.db.recordings_repo import SqlAlchemyRecordingRepository
    from adapters.db.store import SqlAlchemyCaseStore
    from dialer.config import build_config

    cfg = build_config({"paths": {"data_dir": str(root)}})
    async with SqlAlchemyCaseStore(cfg.store) as store:
        await upgrade(store)
        keys = KeyFileKeyProvider(root / "keys" / "recordings.keys")
        keys.create("bank-a")
        yield Vault(SqlAlchemyRecordingRepository(store), FilesystemBlobStore(root / "recordings"), keys, clock=utcnow)


def run_child_until(root: Path, step: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(root), step, MARKER.hex()],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env,
    )
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    ready = sel.select(timeout=60)  # an upper bound against hanging, not a pacing sleep
    sel.close()
    if not ready:
        proc.kill()
        pytest.fail(f"child never reached {step}: {proc.stderr.read().decode()}")
    line = proc.stdout.readline().decode().strip()
    if line != f"PAUSED {step}":
        proc.kill()
        pytest.fail(f"child said {line!r} instead of pausing at {step}: {proc.stderr.read().decode()}")
    return proc


@pytest.mark.parametrize("step", STEPS)
async def test_killing_the_ingest_at_any_step_leaves_no_plaintext_and_no_half_recording(tmp_path, step) -> None:
    async with service_vault(tmp_path):
        pass  # database migrated, key file created
    proc = run_child_until(tmp_path, step)
    with proc:  # closes its pipes
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    assert_no_plaintext(tmp_path)  # blobs, temporaries, the database, the key file

    async with service_vault(tmp_path) as vault:  # "the next start"
        rows = await vault.list(ADMIN)
        report = await vault.recover()
        blobs = list(vault.blobs.keys())
        assert vault.blobs.temporaries() == []
        if step == "committed":
            [rec] = rows
            assert [b.key for b in blobs] == [rec.recording_id]
            assert [r.ok for r in await vault.verify(ADMIN)] == [True]
        else:
            assert rows == []  # no metadata without its blob ...
            assert blobs == []  # ... and no blob without its metadata
            if step == "published":  # renamed into place, metadata never committed
                assert (report["temporaries"], report["orphans"]) == (0, 1)
            else:
                assert (report["temporaries"], report["orphans"]) == (1, 0)
            # the PBX retries and the recording is stored whole
            rec = (await vault.ingest(request("crash-attempt-1"), wav_stream(60.0, tone_hz=440), PBX)).recording
            assert [r.ok for r in await vault.verify(ADMIN, [rec.recording_id])] == [True]
    assert_no_plaintext(tmp_path)


def test_the_key_file_is_created_private_and_a_loose_one_is_refused(tmp_path) -> None:
    path = tmp_path / "keys" / "recordings.keys"
    keys = KeyFileKeyProvider(path)
    kid = keys.create("bank-a")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.create("bank-a") == kid  # idempotent
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        KeyFileKeyProvider(path).active("bank-a")


def test_a_key_rotated_by_another_process_is_seen_without_restart(tmp_path) -> None:
    path = tmp_path / "k.keys"
    server = KeyFileKeyProvider(path)
    first = server.create("bank-a")
    assert server.active("bank-a")[0] == first
    cli = KeyFileKeyProvider(path)
    second = cli.rotate("bank-a")
    assert server.active("bank-a")[0] == second
    assert server.get("bank-a", first) != server.get("bank-a", second)


def test_a_destroyed_key_is_never_recreated_silently(tmp_path) -> None:
    keys = KeyFileKeyProvider(tmp_path / "k.keys")
    keys.create("bank-a")
    keys.destroy("bank-a")
    with pytest.raises(KeyDestroyed):
        keys.active("bank-a")
    with pytest.raises(KeyDestroyed):
        keys.create("bank-a")
    raw = json.loads((tmp_path / "k.keys").read_text())
    assert raw["scopes"]["bank-a"]["keys"] == {}


async def test_keys_from_the_environment_seal_and_open_recordings(tmp_path) -> None:
    import base64

    env = {env_var("bank-a"): "env-1:" + base64.b64encode(os.urandom(32)).decode()}
    vault = Vault(JsonFileRecordingRepository(tmp_path / "m.json"), FilesystemBlobStore(tmp_path / "d"),
                  EnvKeyProvider(env), clock=utcnow)
    audio = b"".join(wav_stream(2.0, tone_hz=350))
    rec = (await vault.ingest(request("env-att"), [audio], PBX)).recording
    assert rec.kek_id == "env-1"
    assert (await vault.open_audio(rec.recording_id, QA_A, reason="env keys")).read_all() == audio
    with pytest.raises(ConfigError):
        EnvKeyProvider(env).rotate("bank-a")
    with pytest.raises(ConfigError, match="DIALGATE_KEK_BANK_A"):
        EnvKeyProvider({env_var("bank-a"): "no-colon"}).active("bank-a")


async def test_metadata_and_blobs_survive_a_restart(tmp_path) -> None:
    vault = make_vault(tmp_path)
    audio = b"".join(wav_stream(3.0, tone_hz=600))
    rec = (await vault.ingest(request("restart-1"), [audio], PBX)).recording
    await vault.place_hold(rec.recording_id, ADMIN, "lawsuit 诉讼")
    again = make_vault(tmp_path)
    assert (await again.get(rec.recording_id, ADMIN)).hold.reason == "lawsuit 诉讼"
    assert (await again.open_audio(rec.recording_id, QA_A, reason="after restart")).read_all() == audio
    assert len(await again.access_log(rec.recording_id, ADMIN)) == 1


async def test_cleanup_removes_an_interrupted_upload_at_any_age_and_spares_one_still_writing(tmp_path) -> None:
    from datetime import timedelta

    vault = make_vault(tmp_path)
    live = vault.blobs.begin("live0000recording")
    live.write(b"ciphertext so far")
    hour_ago = (utcnow() - timedelta(hours=1)).timestamp()
    os.utime(live.temp_path, (hour_ago, hour_ago))  # a long upload: old, but its writer holds it
    stale = vault.blobs.begin("stale000recording")
    stale.write(b"left by a crash")
    os.close(stale._fd)  # its writer died: the kernel dropped the lock
    ten_s_ago = (utcnow() - timedelta(seconds=10)).timestamp()
    os.utime(stale.temp_path, (ten_s_ago, ten_s_ago))  # well inside the grace: removed all the same
    report = await vault.recover(orphan_grace=timedelta(minutes=5))
    assert report["temporaries"] == 1
    assert vault.blobs.temporaries() == [live.temp_path]
    live.sync()
    live.publish()  # the running ingest finishes unharmed
    assert [b.key for b in vault.blobs.keys()] == ["live0000recording"]


@pytest.mark.slow
def test_ingesting_half_a_gibibyte_grows_memory_by_less_than_64_mib(tmp_path) -> None:
    code = f"""
import asyncio, json, sys
from pathlib import Path
sys.path.insert(0, {str(ROOT)!r})
from datetime import datetime, timezone
from adapters.storage.filesystem import FilesystemBlobStore
from adapters.storage.jsonrepo import JsonFileRecordingRepository
from adapters.storage.keys import KeyFileKeyProvider
from recordings.testing import PBX, request, wav_stream
from recordings.vault import Vault

def vm(field):
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1]) * 1024

root = Path({str(tmp_path)!r})
keys = KeyFileKeyProvider(root / 'k.keys'); keys.create('bank-a')
vault = Vault(JsonFileRecordingRepository(root / 'm.json'), FilesystemBlobStore(root / 'd'), keys,
              clock=lambda: datetime.now(timezone.utc), max_size=2**31)
pieces = wav_stream(16800.0)  # 537,600,044 bytes, generated piece by piece
first = next(pieces)
def body():
    yield first
    yield from pieces
before = vm('VmRSS')
rec = asyncio.run(vault.ingest(request('big-1'), body(), PBX)).recording
print(json.dumps({{'size': rec.size, 'growth': vm('VmHWM') - before}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    fig = json.loads(out.stdout)
    assert fig["size"] == 537_600_044
    assert fig["growth"] < 64 * 1024 * 1024, fig
