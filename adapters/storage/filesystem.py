"""Sealed blobs on the local filesystem, under a data directory (default
``./var/recordings``)::

    <root>/blobs/<id[:2]>/<id>.dgr     published blobs (ciphertext only)
    <root>/tmp/<id>.<random>.part      being written; removed at startup

Writes go to a temporary in the same filesystem, are fsynced, renamed atomically into
place, and the directory is fsynced, so a blob is either absent or whole.
"""

from __future__ import annotations

import os
import re
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Iterator

from recordings.errors import InvalidRequest, VaultError
from recordings.ports import StoredBlob

_KEY = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
SUFFIX = ".dgr"
TMP_SUFFIX = ".part"


class StorageError(VaultError):
    error_id = "storage-error"
    status = 503


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemBlobWriter:
    def __init__(self, store: FilesystemBlobStore, key: str) -> None:
        self._store = store
        self._final = store.path_for(key)
        self.temp_path = store.tmp_dir / f"{key}.{secrets.token_hex(4)}{TMP_SUFFIX}"
        try:
            fd = os.open(self.temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise StorageError(f"无法创建临时文件 / cannot create {self.temp_path}: {exc.strerror}") from exc
        self._file: BinaryIO | None = os.fdopen(fd, "wb", buffering=256 * 1024)
        self._published = False

    def write(self, data: bytes) -> int:
        assert self._file is not None, "writer closed"
        try:
            return self._file.write(data)
        except OSError as exc:
            raise StorageError(f"写入失败 / write failed: {exc.strerror}") from exc

    def sync(self) -> None:
        assert self._file is not None, "writer closed"
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise StorageError(f"同步失败 / fsync failed: {exc.strerror}") from exc

    def publish(self) -> None:
        assert self._file is not None, "writer closed"
        self._file.close()
        self._file = None
        parent = self._final.parent
        try:
            if not parent.exists():
                parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                _fsync_dir(parent.parent)
            os.replace(self.temp_path, self._final)
            self._published = True
            _fsync_dir(parent)
        except OSError as exc:
            raise StorageError(f"发布失败 / publish failed: {exc.strerror}") from exc

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if not self._published:
            try:
                self.temp_path.unlink()
            except FileNotFoundError:
                pass


class FilesystemBlobStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.blob_dir = self.root / "blobs"
        self.tmp_dir = self.root / "tmp"
        for d in (self.root, self.blob_dir, self.tmp_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path_for(self, key: str) -> Path:
        if not _KEY.match(key):
            raise InvalidRequest(f"无效的录音编号 / invalid blob key {key!r}")
        return self.blob_dir / key[:2] / f"{key}{SUFFIX}"

    def begin(self, key: str) -> FilesystemBlobWriter:
        return FilesystemBlobWriter(self, key)

    def open(self, key: str) -> BinaryIO:
        return open(self.path_for(key), "rb")

    def size(self, key: str) -> int:
        return self.path_for(key).stat().st_size

    def delete(self, key: str) -> bool:
        path = self.path_for(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(path.parent)
        return True

    def keys(self) -> Iterator[StoredBlob]:
        for sub in sorted(self.blob_dir.iterdir()):
            if not sub.is_dir():
                continue
            for p in sorted(sub.glob(f"*{SUFFIX}")):
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                yield StoredBlob(
                    key=p.name[: -len(SUFFIX)],
                    size=st.st_size,
                    modified_at=datetime.fromtimestamp(st.st_mtime, timezone.utc),
                )

    def temporaries(self) -> list[Path]:
        return sorted(self.tmp_dir.glob(f"*{TMP_SUFFIX}"))

    def clean_temporaries(self, older_than: datetime | None = None) -> int:
        n = 0
        for p in self.temporaries():
            try:
                if older_than is not None:
                    modified = datetime.fromtimestamp(p.stat().st_mtime, timezone.utc)
                    if modified > older_than:
                        continue  # still being written by a running ingest
                p.unlink()
                n += 1
            except FileNotFoundError:
                pass
        if n:
            _fsync_dir(self.tmp_dir)
        return n
