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

    s3            `S3BlobStore`: the port, versions, deletion, Object Lock
    s3_upload     `S3BlobWriter`: one blob's multipart upload; `lock_until`
    s3_ranges     `S3RangeReader`: ranged GETs with read-ahead
    s3_settings   `S3Settings` from the configuration, credentials resolved
    s3_client     the boto3 client, and its errors mapped to `StorageError`
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from typing import Any, Iterator

from recordings.errors import BlobLocked, ConfigError, InvalidRequest
from recordings.ports import StoredBlob

from adapters.storage.filesystem import StorageError
from adapters.storage.s3_client import code, make_client, status, storage_error
from adapters.storage.s3_ranges import S3RangeReader
from adapters.storage.s3_settings import S3Settings, parse_store_url, settings_from_config
from adapters.storage.s3_upload import S3BlobWriter, lock_until

__all__ = [
    "LOCK_MODES", "MIN_PART", "SUFFIX", "S3BlobStore", "S3BlobWriter", "S3RangeReader", "S3Settings", "lock_until",
    "make_client", "parse_store_url", "settings_from_config",
]

SUFFIX = ".dgr"
_KEY = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MIN_PART = 5 * 1024 * 1024  # S3's smallest part but the last
LOCK_MODES = ("compliance", "governance", "off")


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
                f"对象存储不可用 / bucket {self.bucket} not reachable: {code(exc) or type(exc).__name__}"
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
            raise storage_error("读取", exc) from exc
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
            raise storage_error("读取", exc) from exc

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
            raise storage_error("列举", exc) from exc
        extra = {"BypassGovernanceRetention": True} if self.object_lock == "governance" else {}
        removed = False
        for v in versions:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=object_key, VersionId=v["VersionId"], **extra)
            except Exception as exc:
                if status(exc) == 403 or code(exc) in ("AccessDenied", "ObjectLocked", "InvalidRequest"):
                    raise BlobLocked(
                        f"对象锁定期内，不能删除 / the object store's lock refuses deleting {key} before its retention ends",
                        recording_id=key,
                    ) from exc
                raise storage_error("删除", exc) from exc
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
            raise storage_error("列举", exc) from exc

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
            raise storage_error("列举", exc) from exc
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
                if status(exc) != 404:
                    raise storage_error("删除", exc) from exc
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
            if status(exc) == 404:
                raise FileNotFoundError(key) from exc
            raise storage_error("锁定", exc) from exc

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
            raise storage_error("锁定", exc) from exc

    def lock_state(self, key: str) -> dict[str, Any]:
        """What the server enforces on the blob: mode, retain-until, legal hold."""
        head = self._head(key)
        return {
            "mode": head.get("ObjectLockMode"),
            "retain_until": head.get("ObjectLockRetainUntilDate"),
            "legal_hold": head.get("ObjectLockLegalHoldStatus") == "ON",
        }
