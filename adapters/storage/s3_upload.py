"""Writing one blob to the S3 store: a multipart upload of reused part buffers,
created with its Object Lock retention, visible only once published."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from datetime import date, datetime, time, timedelta, timezone
from typing import TYPE_CHECKING, Any

from adapters.storage.filesystem import StorageError
from adapters.storage.s3_client import storage_error

if TYPE_CHECKING:
    from adapters.storage.s3 import S3BlobStore


def lock_until(retain_until: date) -> datetime:
    """The lock's expiry for a recording kept through `retain_until`: the next day,
    00:00 UTC (the vault's purge makes it due from that day on)."""
    return datetime.combine(retain_until + timedelta(days=1), time(0), tzinfo=timezone.utc)


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
                raise storage_error("上传", exc) from exc
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
                self._error = storage_error("上传", exc) if isinstance(exc, Exception) else exc
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
            raise storage_error("上传", exc) from exc
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
