"""Child process for the crash-injection tests: ingests one WAV into a filesystem
vault and, at the named step, announces ``PAUSED <step>`` on stdout and blocks until
the parent kills it with SIGKILL.

usage: crash_child.py <data dir> <key file> <metadata file> <step> <marker hex>
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timezone

from adapters.storage.filesystem import FilesystemBlobStore
from adapters.storage.jsonrepo import JsonFileRecordingRepository
from adapters.storage.keys import KeyFileKeyProvider
from recordings.testing import PBX, request, wav_stream
from recordings.vault import Vault


def main() -> None:
    data_dir, key_file, meta_file, step, marker_hex = sys.argv[1:6]

    def checkpoint(name: str) -> None:
        if name == step:
            sys.stdout.write(f"PAUSED {name}\n")
            sys.stdout.flush()
            sys.stdin.read()  # the parent never writes: we wait here for SIGKILL

    vault = Vault(
        JsonFileRecordingRepository(meta_file),
        FilesystemBlobStore(data_dir),
        KeyFileKeyProvider(key_file),
        clock=lambda: datetime.now(timezone.utc),
        checkpoint=checkpoint,
    )
    body = wav_stream(60.0, tone_hz=440, marker=bytes.fromhex(marker_hex))
    result = asyncio.run(vault.ingest(request("crash-attempt-1"), body, PBX))
    sys.stdout.write(f"DONE {result.recording.recording_id}\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
