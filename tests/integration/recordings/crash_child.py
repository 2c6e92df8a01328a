"""Child process for the crash-injection tests: ingests one WAV into the vault as the
service runs it (filesystem blobs, key file, metadata in the SQLite service database)
and, at the named step, announces ``PAUSED <step>`` on stdout and blocks until the
parent kills it with SIGKILL.

usage: crash_child.py <root dir> <step> <marker hex> [<seconds of audio>]

With ``DIALGATE_CRASH_S3`` set (JSON: endpoint, bucket, prefix, access_key,
secret_key, object_lock) the blobs go to that S3 bucket instead, 5 MiB parts.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from adapters.db.recordings_repo import SqlAlchemyRecordingRepository
from adapters.db.store import SqlAlchemyCaseStore
from adapters.storage.filesystem import FilesystemBlobStore
from adapters.storage.keys import KeyFileKeyProvider
from dialer.config import build_config
from recordings.testing import PBX, request, wav_stream
from recordings.vault import Vault


async def main() -> None:
    root, step, marker_hex = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 60.0

    def checkpoint(name: str) -> None:
        if name == step:
            sys.stdout.write(f"PAUSED {name}\n")
            sys.stdout.flush()
            sys.stdin.read()  # the parent never writes: we wait here for SIGKILL

    cfg = build_config({"paths": {"data_dir": str(root)}})
    s3 = os.environ.get("DIALGATE_CRASH_S3")
    if s3:
        from adapters.storage.s3 import S3BlobStore, S3Settings

        blobs = S3BlobStore.from_settings(S3Settings(region="us-east-1", part_size=5 * 1024 * 1024, **json.loads(s3)))
    else:
        blobs = FilesystemBlobStore(root / "recordings")
    async with SqlAlchemyCaseStore(cfg.store) as store:
        vault = Vault(
            SqlAlchemyRecordingRepository(store),
            blobs,
            KeyFileKeyProvider(root / "keys" / "recordings.keys"),
            clock=lambda: datetime.now(timezone.utc),
            checkpoint=checkpoint,
        )
        body = wav_stream(seconds, tone_hz=440, marker=bytes.fromhex(marker_hex))
        result = await vault.ingest(request("crash-attempt-1"), body, PBX)
    sys.stdout.write(f"DONE {result.recording.recording_id}\n")
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
