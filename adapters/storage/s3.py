"""Sealed blobs in an S3-compatible object store (``[recordings] store = "s3://bucket/prefix"``)::

    s3://<bucket>/<prefix>/<id[:2]>/<id>.dgr     one object per recording (ciphertext only)
    multipart uploads under <prefix>/             being written; aborted at startup

The client is boto3 (botocore), called on the threads the vault already uses for
blob I/O: `write` on the sealing pipeline's writer thread, `sync`/`publish`/`open`
through ``asyncio.to_thread``. It never runs on the event loop.

Writing: the sealed bytes are cut into parts of `part_size` (8 MiB by default);
each full part is uploaded by a small pool (`concurrency` parts in flight at most,
3 by default), its buffer reused once it is up, so memory stays at
``(concurrency + 1) * part_size`` whatever the recording's length. Nothing is visible under the
key until `publish` completes the multipart upload, which is atomic on S3: a crash
before it leaves an incomplete multipart upload (ciphertext parts, never listed as
an object), which `clean_temporaries` aborts. A blob smaller than one part is sent
by `publish` as a single PUT, equally atomic.

Object Lock: when the bucket has it (`object_lock = "compliance"` or
``"governance"``), every object is created with that retention mode until the day
after `retain_until` (00:00 UTC), in the same request that makes it visible, so no
window exists in which a recording is stored but deletable. The legal hold flag of
an object mirrors the vault's holds. Deleting removes every version of the key (a
plain DELETE in a versioned bucket only adds a delete marker and keeps the data); a
deletion the lock refuses raises `BlobLocked` and the ciphertext stays until it
expires (it is already unreadable: its data key was erased first). In governance
mode an approved destruction bypasses the retention (the credentials then need
``s3:BypassGovernanceRetention``); in compliance mode nothing can, not even the
bucket's owner.

Every read, hold and retention change addresses the version the vault wrote (the
oldest of the key): a later version or a delete marker from anyone else is ignored.

Reading: `open` returns a seekable file that fetches byte ranges (``Range: bytes=``),
with a read-ahead window that grows while reads are sequential, so a seek to the
last second of a two-hour recording costs two small GETs and a full read streams in
large ones.
"""

from __future__ import annotations

import io
import os
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Iterator, Mapping

from recordings.config import SecretRef
from recordings.errors import BlobLocked, ConfigError, InvalidRequest
from recordings.ports import StoredBlob

from adapters.storage.filesystem import StorageError
from adapters.storage.secrets import read_secret

SUFFIX = ".dgr"
_KEY = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_URL = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?$")
MIN_PART = 5 * 1024 * 1024  # S3's smallest part but the last
LOCK_MODES = ("compliance", "governance", "off")


def parse_store_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ("bucket", "some/prefix") (prefix without slashes
    at either end; may be empty)."""
    m = _URL.match(url.strip())
    if not m:
        raise ConfigError(
            f"recordings.store: 应为 s3://存储桶/前缀 / expected s3://bucket/prefix, got {url!r}"
        )
    return m.group(1), (m.group(2) or "").strip("/")


def lock_until(retain_until: date) -> datetime:
    """The lock's expiry for a recording kept through `retain_until`: the next day,
    00:00 UTC (the vault's purge makes it due from that day on)."""
    return datetime.combine(retain_until + timedelta(days=1), time(0), tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class S3Settings:
    """The ``[recordings.s3]`` table with its secrets resolved (never logged)."""

    bucket: str
    prefix: str
    endpoint: str | None
    region: str
    access_key: str
    secret_key: str
    object_lock: str = "compliance"
    part_size: int = 8 * 1024 * 1024
    concurrency: int = 3
    ca_file: str | None = None

    def __repr__(self) -> str:  # the secret never reaches a log line
        return f"S3Settings(bucket={self.bucket!r}, prefix={self.prefix!r}, endpoint={self.endpoint!r}, object_lock={self.object_lock!r})"


def _secret(table: Mapping[str, Any], name: str, default_env: str, environ: Mapping[str, str]) -> str:
    file = table.get(f"{name}_file")
    if file:
        return read_secret(SecretRef(file=str(file)), f"recordings.s3.{name}_file")
    var = table.get(f"{name}_env") or default_env
    return read_secret(
        SecretRef(env=var), f"recordings.s3.{name}", environ=environ, hint=f" (or give recordings.s3.{name}_file)"
    )


def settings_from_config(url: str, table: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> S3Settings:
    """Resolve ``[recordings] store`` and ``[recordings.s3]`` (validated by
    `recordings.config`) into settings; credentials from the environment or files."""
    env = os.environ if environ is None else environ
    bucket, prefix = parse_store_url(url)
    return S3Settings(
        bucket=bucket,
        prefix=prefix,
        endpoint=table.get("endpoint") or None,
        region=table.get("region") or "us-east-1",
        access_key=_secret(table, "access_key", "DIALGATE_S3_ACCESS_KEY", env),
        secret_key=_secret(table, "secret_key", "DIALGATE_S3_SECRET_KEY", env),
        object_lock=table.get("object_lock", "compliance"),
        part_size=int(table.get("part_size_mb", 8)) * 1024 * 1024,
        concurrency=int(table.get("concurrency", 3)),
        ca_file=table.get("ca_file") or None,
    )


def make_client(settings: S3Settings) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        s3={
            "addressing_style": "path",
            # The payload is already authenticated end to end (AES-GCM tags, the
            # SHA-256 kept at ingest); signing it would hash every byte once more.
            "payload_signing_enabled": False,
        },
        # CRC32 per request still guards the transfer itself.
        request_checksum_calculation="when_supported",
        response_checksum_validation="when_required",
        max_pool_connections=settings.concurrency + 4,
        retries={"max_attempts": 4, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.endpoint,
        region_name=settings.region,
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
        verify=settings.ca_file if settings.ca_file else None,
        config=config,
    )


def _code(exc: Exception) -> str:
    resp = getattr(exc, "response", None) or {}
    return str(resp.get("Error", {}).get("Code", ""))


def _status(exc: Exception) -> int:
    resp = getattr(exc, "response", None) or {}
    return int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _storage_error(what: str, exc: Exception) -> StorageError:
    return StorageError(f"对象存储{what}失败 / object store {what_en(what)} failed: {_code(exc) or type(exc).__name__}")


_WHAT = {"上传": "upload", "读取": "read", "删除": "delete", "列举": "list", "锁定": "lock"}


def what_en(what: str) -> str:
    return _WHAT.get(what, what)


class S3BlobWriter:
    """One blob being written as a multipart upload. `write` is called from one
    thread at a time (the sealing pipeline's writer); parts upload on the store's
    pool. Nothing is visible until `publish`."""

    def __init__(self, store: S3BlobStore, key: str, retain_until: date | None) -> None:
        self._store = store
        self._key = key
        self._object = store.object_key(key)
        self._retain_until = retain_until
        # Part buffers are reused: one being filled, at most `concurrency` uploading.
        self._free: list[bytearray] = []
        self._buf = bytearray(store.part_size)
        self._fill = 0
        self._upload_id: str | None = None
        self._parts: list[Future[dict[str, Any]]] = []
        self._slots = threading.BoundedSemaphore(store.concurrency)
        self._error: BaseException | None = None
        self._published = False
        self._aborted = False

    # -- lock parameters, the same on a single PUT and a multipart upload ------------

    def _lock_args(self) -> dict[str, Any]:
        if self._store.object_lock == "off" or self._retain_until is None:
            return {}
        return {
            "ObjectLockMode": self._store.object_lock.upper(),
            "ObjectLockRetainUntilDate": lock_until(self._retain_until),
        }

    def write(self, data: bytes | memoryview) -> int:
        if self._error is not None:
            raise self._error
        view = memoryview(data)
        if view.itemsize != 1:
            view = view.cast("B")
        n = len(view)
        part = self._store.part_size
        pos = 0
        while pos < n:
            if self._fill == part:
                # A full part and more to come, so it is not the last: send it.
                self._send(self._buf, part)
                self._buf = self._free.pop() if self._free else bytearray(part)
                self._fill = 0
            take = min(part - self._fill, n - pos)
            self._buf[self._fill : self._fill + take] = view[pos : pos + take]
            self._fill += take
            pos += take
        return n

    def _send(self, buf: bytearray, fill: int) -> None:
        client = self._store.client
        if self._upload_id is None:
            try:
                resp = client.create_multipart_upload(
                    Bucket=self._store.bucket,
                    Key=self._object,
                    ContentType="application/octet-stream",
                    **self._lock_args(),
                )
            except Exception as exc:  # botocore's errors: mapped at this boundary
                raise _storage_error("上传", exc) from exc
            self._upload_id = resp["UploadId"]
        number = len(self._parts) + 1
        self._slots.acquire()  # back-pressure: at most `concurrency` parts in memory
        if self._error is not None:
            self._slots.release()
            raise self._error
        self._parts.append(self._store.pool.submit(self._upload_part, number, buf, fill))

    def _upload_part(self, number: int, buf: bytearray, fill: int) -> dict[str, Any]:
        try:
            body = buf if fill == len(buf) else bytes(memoryview(buf)[:fill])  # a short last part only
            resp = self._store.client.upload_part(
                Bucket=self._store.bucket, Key=self._object, UploadId=self._upload_id, PartNumber=number, Body=body
            )
            return {"PartNumber": number, "ETag": resp["ETag"]}
        except BaseException as exc:
            if self._error is None:
                self._error = _storage_error("上传", exc) if isinstance(exc, Exception) else exc
            raise
        finally:
            self._free.append(buf)
            self._slots.release()

    def sync(self) -> None:
        """Upload the last part and wait for every part (a blob smaller than one part
        waits for `publish`, which sends it in one request)."""
        if self._upload_id is not None:
            if self._fill:
                self._send(self._buf, self._fill)
                self._fill = 0
            self._wait_parts()

    def _wait_parts(self) -> list[dict[str, Any]]:
        done = []
        for f in self._parts:
            try:
                done.append(f.result())
            except Exception:
                pass
        if self._error is not None:
            raise self._error
        return done

    def publish(self) -> None:
        client = self._store.client
        try:
            if self._upload_id is None:
                client.put_object(
                    Bucket=self._store.bucket,
                    Key=self._object,
                    Body=bytes(memoryview(self._buf)[: self._fill]),
                    ContentType="application/octet-stream",
                    **self._lock_args(),
                )
                self._fill = 0
            else:
                parts = self._wait_parts()
                client.complete_multipart_upload(
                    Bucket=self._store.bucket,
                    Key=self._object,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except StorageError:
            raise
        except Exception as exc:
            raise _storage_error("上传", exc) from exc
        self._published = True

    def abort(self) -> None:
        """Abort the multipart upload (idempotent; nothing to do after publish)."""
        if self._published or self._aborted:
            return
        self._aborted = True
        self._free.clear()
        self._fill = 0
        for f in self._parts:
            f.cancel()
        for f in self._parts:
            try:
                f.result()
            except BaseException:
                pass
        if self._upload_id is not None:
            try:
                self._store.client.abort_multipart_upload(
                    Bucket=self._store.bucket, Key=self._object, UploadId=self._upload_id
                )
            except Exception:
                pass  # left for clean_temporaries at the next start


class S3RangeReader(io.RawIOBase):
    """A seekable, read-only view of one object through ranged GETs."""

    def __init__(self, store: S3BlobStore, object_key: str, size: int, version: str | None) -> None:
        super().__init__()
        self._store = store
        self._object = object_key
        self.size = size
        self._version = version
        self._pos = 0
        self._buf = b""
        self._buf_start = 0
        self._ahead = 64 * 1024 + 64  # grows x4 per sequential fetch, up to 8 MiB

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self._pos
        n = min(n, self.size - self._pos)
        if n <= 0:
            return b""
        end = self._pos + n
        buf_end = self._buf_start + len(self._buf)
        if not (self._buf_start <= self._pos and end <= buf_end):
            sequential = self._pos == buf_end and self._buf
            self._ahead = min(self._ahead * 4, 8 * 1024 * 1024) if sequential else 64 * 1024 + 64
            want = min(max(n, self._ahead), self.size - self._pos)
            self._buf = self._get(self._pos, self._pos + want)
            self._buf_start = self._pos
        lo = self._pos - self._buf_start
        out = self._buf[lo : lo + n]
        self._pos += len(out)
        return out

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def _get(self, start: int, end: int) -> bytes:
        args: dict[str, Any] = {"Bucket": self._store.bucket, "Key": self._object, "Range": f"bytes={start}-{end - 1}"}
        if self._version:
            args["VersionId"] = self._version
        try:
            body = self._store.client.get_object(**args)["Body"]
            try:
                data: bytes = body.read()
            finally:
                body.close()
        except Exception as exc:
            raise _storage_error("读取", exc) from exc
        return data


class S3BlobStore:
    """`recordings.ports.BlobStore` on an S3-compatible server (see the module text)."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        object_lock: str = "compliance",
        part_size: int = 8 * 1024 * 1024,
        concurrency: int = 3,
    ) -> None:
        if object_lock not in LOCK_MODES:
            raise ConfigError(f"recordings.s3.object_lock: 应为 {'|'.join(LOCK_MODES)} / expected one of {LOCK_MODES}")
        if part_size < MIN_PART:
            raise ConfigError("recordings.s3.part_size_mb: 至少 5 / at least 5 (S3's smallest part)")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.object_lock = object_lock
        self.part_size = part_size
        self.concurrency = max(1, concurrency)
        self.pool = ThreadPoolExecutor(max_workers=self.concurrency * 2, thread_name_prefix="s3-part")

    @classmethod
    def from_settings(cls, settings: S3Settings) -> S3BlobStore:
        return cls(
            make_client(settings),
            settings.bucket,
            settings.prefix,
            object_lock=settings.object_lock,
            part_size=settings.part_size,
            concurrency=settings.concurrency,
        )

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    @property
    def enforces_retention(self) -> bool:
        """The vault mirrors holds and retention here (see `recordings.ports.BlobStore`)."""
        return self.object_lock != "off"

    remote = True

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def check(self) -> None:
        """At start: the bucket answers, and has Object Lock when a mode is asked for
        (fail closed: recordings must not go where they could be deleted early)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise StorageError(
                f"对象存储不可用 / bucket {self.bucket} not reachable: {_code(exc) or type(exc).__name__}"
            ) from exc
        if self.object_lock == "off":
            return
        try:
            conf = self.client.get_object_lock_configuration(Bucket=self.bucket)["ObjectLockConfiguration"]
            enabled = conf.get("ObjectLockEnabled") == "Enabled"
        except Exception:
            enabled = False
        if not enabled:
            raise StorageError(
                f"存储桶 {self.bucket} 未启用对象锁定 / bucket {self.bucket} has no Object Lock; create it with "
                "Object Lock enabled, or set recordings.s3.object_lock = \"off\" and rely on crypto-shredding"
            )

    def object_key(self, key: str) -> str:
        if not _KEY.match(key):
            raise InvalidRequest(f"无效的录音编号 / invalid blob key {key!r}")
        name = f"{key[:2]}/{key}{SUFFIX}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def _key_of(self, object_key: str) -> str | None:
        name = object_key.rsplit("/", 1)[-1]
        return name[: -len(SUFFIX)] if name.endswith(SUFFIX) else None

    def _list_prefix(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    # -- the port ------------------------------------------------------------------

    def begin(self, key: str, *, retain_until: date | None = None) -> S3BlobWriter:
        return S3BlobWriter(self, key, retain_until)

    def _original(self, key: str) -> dict[str, Any]:
        """The version the vault wrote: the oldest one that is not a delete marker.

        The vault writes each key once, so any later version came from someone else:
        an overwrite with write access only adds a version on top (the vault keeps
        reading, holding and locking the original, which Object Lock keeps), and a
        plain DELETE only adds a delete marker. One LIST costs what a HEAD would."""
        object_key = self.object_key(key)
        try:
            versions = [v for v in self._versions(object_key) if "Size" in v]
        except Exception as exc:
            raise _storage_error("读取", exc) from exc
        if not versions:
            raise FileNotFoundError(key)
        # S3 lists a key's versions newest first; LastModified is no guide (one-second
        # resolution, and some servers move it when a hold or retention is set).
        return versions[-1]

    @staticmethod
    def _version_arg(version: dict[str, Any]) -> dict[str, Any]:
        vid = version.get("VersionId")
        return {"VersionId": vid} if vid and vid != "null" else {}  # "null": an unversioned bucket

    def _head(self, key: str) -> dict[str, Any]:
        version = self._original(key)
        try:
            head: dict[str, Any] = self.client.head_object(
                Bucket=self.bucket, Key=self.object_key(key), **self._version_arg(version)
            )
            return head
        except Exception as exc:
            raise _storage_error("读取", exc) from exc

    def open(self, key: str) -> S3RangeReader:
        version = self._original(key)
        return S3RangeReader(self, self.object_key(key), int(version["Size"]), self._version_arg(version).get("VersionId"))

    def size(self, key: str) -> int:
        return int(self._original(key)["Size"])

    def _versions(self, object_key: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": object_key}
        while True:
            resp = self.client.list_object_versions(**kwargs)
            for v in resp.get("Versions", []) + resp.get("DeleteMarkers", []):
                if v["Key"] == object_key:
                    out.append(v)
            if not resp.get("IsTruncated"):
                return out
            kwargs["KeyMarker"] = resp.get("NextKeyMarker")
            kwargs["VersionIdMarker"] = resp.get("NextVersionIdMarker")

    def delete(self, key: str) -> bool:
        """Delete every version of the blob; True when data was removed. Raises
        `BlobLocked` when a retention or legal hold refuses (nothing is hidden then:
        no delete marker is ever written)."""
        object_key = self.object_key(key)
        try:
            versions = self._versions(object_key)
        except Exception as exc:
            raise _storage_error("列举", exc) from exc
        extra = {"BypassGovernanceRetention": True} if self.object_lock == "governance" else {}
        removed = False
        for v in versions:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=object_key, VersionId=v["VersionId"], **extra)
            except Exception as exc:
                if _status(exc) == 403 or _code(exc) in ("AccessDenied", "ObjectLocked", "InvalidRequest"):
                    raise BlobLocked(
                        f"对象锁定期内，不能删除 / the object store's lock refuses deleting {key} before its retention ends",
                        recording_id=key,
                    ) from exc
                raise _storage_error("删除", exc) from exc
            removed = removed or "Size" in v
        return removed

    def keys(self) -> Iterator[StoredBlob]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._list_prefix()):
                for obj in page.get("Contents", []):
                    key = self._key_of(obj["Key"])
                    if key is None:
                        continue
                    yield StoredBlob(key=key, size=int(obj["Size"]), modified_at=obj["LastModified"])
        except Exception as exc:
            raise _storage_error("列举", exc) from exc

    def temporaries(self) -> list[dict[str, Any]]:
        """Incomplete multipart uploads under the prefix: {"key", "upload_id", "initiated"}."""
        out = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._list_prefix()}
        try:
            while True:
                resp = self.client.list_multipart_uploads(**kwargs)
                for u in resp.get("Uploads", []):
                    out.append({"key": u["Key"], "upload_id": u["UploadId"], "initiated": u["Initiated"]})
                if not resp.get("IsTruncated"):
                    break
                kwargs["KeyMarker"] = resp.get("NextKeyMarker")
                kwargs["UploadIdMarker"] = resp.get("NextUploadIdMarker")
        except Exception as exc:
            raise _storage_error("列举", exc) from exc
        return sorted(out, key=lambda u: (u["key"], u["upload_id"]))

    def clean_temporaries(self, older_than: datetime | None = None) -> int:
        n = 0
        for u in self.temporaries():
            if older_than is not None and u["initiated"] > older_than:
                continue  # a running ingest's upload
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=u["key"], UploadId=u["upload_id"])
                n += 1
            except Exception as exc:
                if _status(exc) != 404:
                    raise _storage_error("删除", exc) from exc
        return n

    # -- Object Lock -----------------------------------------------------------------

    def set_legal_hold(self, key: str, on: bool) -> None:
        if self.object_lock == "off":
            return
        version = self._version_arg(self._original(key))
        try:
            self.client.put_object_legal_hold(
                Bucket=self.bucket, Key=self.object_key(key), LegalHold={"Status": "ON" if on else "OFF"}, **version
            )
        except Exception as exc:
            if _status(exc) == 404:
                raise FileNotFoundError(key) from exc
            raise _storage_error("锁定", exc) from exc

    def extend_retention(self, key: str, retain_until: date) -> None:
        """Move the lock's expiry later (never earlier: S3 refuses that in compliance
        mode, and the vault never shortens a retention)."""
        if self.object_lock == "off":
            return
        until = lock_until(retain_until)
        current = self.lock_state(key)["retain_until"]
        if current is not None and current >= until:
            return
        try:
            self.client.put_object_retention(
                Bucket=self.bucket,
                Key=self.object_key(key),
                Retention={"Mode": self.object_lock.upper(), "RetainUntilDate": until},
                **self._version_arg(self._original(key)),
            )
        except Exception as exc:
            raise _storage_error("锁定", exc) from exc

    def lock_state(self, key: str) -> dict[str, Any]:
        """What the server enforces on the blob: mode, retain-until, legal hold."""
        head = self._head(key)
        return {
            "mode": head.get("ObjectLockMode"),
            "retain_until": head.get("ObjectLockRetainUntilDate"),
            "legal_hold": head.get("ObjectLockLegalHoldStatus") == "ON",
        }
