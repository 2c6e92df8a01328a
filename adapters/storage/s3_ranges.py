"""Reading one blob from the S3 store: a seekable file over ranged GETs, reading
ahead while reads are sequential."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from adapters.storage.s3_client import storage_error

if TYPE_CHECKING:
    from adapters.storage.s3 import S3BlobStore


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
            raise storage_error("读取", exc) from exc
        return data
