"""Recordings vault throughput, memory and seek latency, side by side in one run.

Printed:

* anchor  — raw AES-256-GCM of `cryptography` on 64 KiB chunks (one core), and, for
            context, raw SHA-256 (the vault must also hash every plaintext byte);
* ingest  — vault ingest of a 1 GiB WAV into the filesystem store (header, chunking,
            AES-GCM, SHA-256, buffered writes, fsync, atomic rename, metadata commit),
            run in a child process that also reports
* memory  — peak RSS growth during that ingest (VmHWM after − VmRSS before, /proc);
* seek    — time to read the last second (32,000 bytes) of a 2-hour 8 kHz stereo
            16-bit WAV: metadata read, key unwrap, header check, one chunk decrypted,
            access-log row committed to SQLite (synchronous=FULL) — median and worst of
            20 warm reads.

Metadata lives in the SQLite service database, as under `dialgate serve`.

Goals: ingest >= 70 % of raw AES-GCM; RSS growth < 64 MiB; last second < 50 ms.
Run: `.venv/bin/python bench/vault_bench.py [--gib 1]`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from adapters.db.migrate import upgrade  # noqa: E402
from adapters.db.recordings_repo import SqlAlchemyRecordingRepository  # noqa: E402
from adapters.db.store import SqlAlchemyCaseStore  # noqa: E402
from adapters.storage.filesystem import FilesystemBlobStore  # noqa: E402
from adapters.storage.keys import KeyFileKeyProvider  # noqa: E402
from dialer.config import build_config  # noqa: E402
from recordings.envelope import CHUNK_SIZE  # noqa: E402
from recordings.testing import PBX, QA_A, request, wav_stream  # noqa: E402
from recordings.vault import Vault  # noqa: E402

MiB = 1024 * 1024


def raw_gcm(total: int) -> float:
    aead = AESGCM(os.urandom(32))
    data = os.urandom(CHUNK_SIZE)
    aad = os.urandom(41)
    n = total // CHUNK_SIZE
    t = time.perf_counter()
    for i in range(n):
        aead.encrypt(i.to_bytes(12, "big"), data, aad)
    return n * CHUNK_SIZE / (time.perf_counter() - t)


def raw_sha(total: int) -> float:
    data = os.urandom(CHUNK_SIZE)
    h = hashlib.sha256()
    n = total // CHUNK_SIZE
    t = time.perf_counter()
    for _ in range(n):
        h.update(data)
    return n * CHUNK_SIZE / (time.perf_counter() - t)


@asynccontextmanager
async def service_vault(root: Path) -> AsyncIterator[Vault]:
    """The vault as the service runs it: blobs on disk, key file, SQLite service database."""
    cfg = build_config({"paths": {"data_dir": str(root)}})
    async with SqlAlchemyCaseStore(cfg.store) as store:
        await upgrade(store)
        keys = KeyFileKeyProvider(root / "keys")
        keys.create("bank-a")
        yield Vault(
            SqlAlchemyRecordingRepository(store),
            FilesystemBlobStore(root / "data"),
            keys,
            clock=lambda: datetime.now(timezone.utc),
            max_size=5 * 1024**3,
        )


class NullSink:
    def write(self, data: bytes) -> int:
        return len(data)


def cpu_path(total: int) -> float:
    """The vault's sealing path alone (chunking, AES-GCM, SHA-256) into a null sink."""
    from recordings.envelope import EnvelopeWriter

    seconds = int(total / 32000)
    w = EnvelopeWriter(NullSink(), os.urandom(32), recording_id="bench", key_id="k")
    t = time.perf_counter()
    for piece in wav_stream(seconds, tone_hz=440):
        w.write(piece)
    size = w.finish().size
    return size / (time.perf_counter() - t)


def vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def child_ingest(root: str, seconds: float) -> None:
    """In a fresh process: ingest a WAV of `seconds` and print the figures as JSON."""

    async def go() -> dict[str, float]:
        async with service_vault(Path(root)) as vault:
            pieces = wav_stream(seconds, tone_hz=440)  # a generator: never the whole file
            first = next(pieces)

            def body():
                yield first
                yield from pieces

            rss_before = vm("VmRSS")
            t = time.perf_counter()
            rec = (await vault.ingest(request("bench-1gib"), body(), PBX)).recording
            elapsed = time.perf_counter() - t
            return {"bytes": rec.size, "seconds": elapsed, "rss_before": rss_before, "hwm_after": vm("VmHWM")}

    print(json.dumps(asyncio.run(go())))


async def seek_last_second(root: Path) -> tuple[float, float, int]:
    async with service_vault(root) as vault:
        two_hours = 2 * 3600
        rec = (await vault.ingest(request("bench-2h"), wav_stream(two_hours, tone_hz=300), PBX)).recording
        second = 8000 * 2 * 2
        times = []
        for _ in range(20):
            t = time.perf_counter()
            stream = await vault.open_audio(rec.recording_id, QA_A, reason="bench seek", byte_range=f"bytes=-{second}")
            data = stream.read_all()
            times.append(time.perf_counter() - t)
            assert len(data) == second
        return statistics.median(times), max(times), rec.size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0, help="size of the ingested recording in GiB")
    ap.add_argument("--child", nargs=2, metavar=("ROOT", "SECONDS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_ingest(args.child[0], float(args.child[1]))
        return

    gcm = raw_gcm(512 * MiB)
    sha = raw_sha(512 * MiB)
    sealing = cpu_path(512 * MiB)
    seconds = int(args.gib * 1024**3 / 32000)
    with tempfile.TemporaryDirectory(prefix="vault-bench-", dir=ROOT / "var" if (ROOT / "var").exists() else None) as d:
        out = subprocess.run(
            [sys.executable, __file__, "--child", d, str(seconds)],
            check=True, capture_output=True, text=True, timeout=600,
        )
        fig = json.loads(out.stdout)
    ingest = fig["bytes"] / fig["seconds"]
    growth = fig["hwm_after"] - fig["rss_before"]
    with tempfile.TemporaryDirectory(prefix="vault-bench-") as d:
        median, worst, size2h = asyncio.run(seek_last_second(Path(d)))

    def mbps(x: float) -> str:
        return f"{x / MiB:8.0f} MiB/s"

    print(f"recordings vault bench (python {sys.version.split()[0]}, {os.cpu_count()} cpu)")
    print(f"  anchor  raw AES-256-GCM, 64 KiB chunks      {mbps(gcm)}")
    print(f"          raw SHA-256 (context)                {mbps(sha)}")
    print(f"          ceiling with both on one core        {mbps(1 / (1 / gcm + 1 / sha))}")
    print(f"  sealing vault writer alone (no disk)          {mbps(sealing)}"
          f"   = {sealing / gcm:6.1%} of raw AES-GCM"
          f"   = {sealing / (1 / (1 / gcm + 1 / sha)):6.1%} of the AES+SHA ceiling")
    print(f"  ingest  vault, {fig['bytes'] / 1024**3:.2f} GiB WAV to disk + fsync  {mbps(ingest)}"
          f"   = {ingest / gcm:6.1%} of raw AES-GCM (goal >= 70%)"
          f"   = {ingest / (1 / (1 / gcm + 1 / sha)):6.1%} of the AES+SHA ceiling")
    print(f"  memory  peak RSS growth during that ingest   {growth / MiB:8.1f} MiB     (goal < 64 MiB)")
    print(f"  seek    last second of a 2 h WAV ({size2h / MiB:.0f} MiB): median {median * 1000:.2f} ms,"
          f" worst {worst * 1000:.2f} ms (goal < 50 ms)")


if __name__ == "__main__":
    main()
