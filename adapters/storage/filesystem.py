"""Sealed blobs on the local filesystem, under a data directory (default
``./var/recordings``)::

    <root>/blobs/<id[:2]>/<id>.dgr     published blobs (ciphertext only)
    <root>/tmp/<id>.<random>.part      being written (its writer holds a flock on it);
                                       removed once no writer holds it

Writes go to a temporary in the same filesystem, are fsynced, renamed atomically into
place, and the directory is fsynced, so a blob is either absent or whole.

Blobs are written with direct I/O (Linux ``O_DIRECT``) where the filesystem allows
it: ciphertext lands in page-aligned staging buffers (the sealer writes into them in
place, `stage`/`commit`; other writes are copied there) and goes from there
straight to the disk, with no copy into the page cache and nothing left dirty for
the final fsync (a blob is written once and read rarely: caching it only evicts
something useful). A direct write blocks until the device has the bytes, so full
buffers are written by threads of their own (`pwrite` at the buffer's offset, two
in flight), while the caller fills the next one. The unaligned tail (< 4 KiB) is
written buffered at `sync`, before the fsync.

Where direct I/O is refused (tmpfs, some network filesystems) the writer falls back
to buffered writes and starts writeback while writing (``sync_file_range``): every
`WRITEBACK_STEP` bytes are handed to the disk, and the writer waits for the range
`WRITEBACK_WINDOW` behind to be written, so the fsync does not find a whole
recording dirty. Either way durability comes from the fsync before the rename.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import mmap
import os
import queue
import re
import secrets
import sys
import threading
from collections.abc import Callable
from datetime import date, datetime, timezone
from pathlib import Path
from typing import BinaryIO, Iterator

from recordings.errors import InvalidRequest, VaultError
from recordings.ports import StoredBlob

_KEY = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
SUFFIX = ".dgr"
TMP_SUFFIX = ".part"
_LOCK_GRACE = 2.0  # seconds: a temporary this young may not be locked by its writer yet


class StorageError(VaultError):
    error_id = "storage-error"
    status = 503


DIRECT_ALIGN = 4096  # offsets, lengths and buffer addresses of direct writes
DIRECT_WRITE = 1024 * 1024  # one staging buffer: the bytes of one direct write
# Room past DIRECT_WRITE in each buffer: a sealed batch staged in place (1 MiB of plaintext
# plus its tags) fits whole after the unaligned carry of the previous one.
STAGE_SLACK = 128 * 1024
DIRECT_BUFFERS = 4  # per blob: one being filled, the others in flight or ready
DIRECT_THREADS = 2  # direct writes in flight per blob: the device overlaps them
ABORT_WAIT = 30.0  # seconds `abort` waits for a direct write in progress (a stalled disk)
_O_DIRECT = getattr(os, "O_DIRECT", 0)
WRITEBACK_STEP = 8 * 1024 * 1024
WRITEBACK_WINDOW = 32 * 1024 * 1024
_SFR_WAIT_BEFORE, _SFR_WRITE, _SFR_WAIT_AFTER = 1, 2, 4


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn  # a ctypes foreign call: releases the GIL while the kernel works


_sync_file_range = _load_sync_file_range()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _DirectWrites:
    """Direct writes of one file from page-aligned staging buffers, each full buffer
    written with `pwrite` at its own offset by one of `DIRECT_THREADS` threads, so
    copying into the next buffer overlaps the device's work. `write` blocks only
    when every buffer is in flight. `stage`/`commit` lend the current buffer to a
    producer that writes into it in place (the sealer), which saves the copy; a
    buffer's unaligned end (< 4 KiB) moves to the start of the next one, since only
    whole pages go direct. Should the filesystem refuse direct I/O after
    all (EINVAL: its alignment rules), the file leaves direct mode and the same
    bytes are written through the page cache.

    `on_stopped` is called by the last thread to end, if `stop` gave up waiting for
    it: the file may only be closed once no thread can write to it.
    """

    def __init__(self, fd: int, on_stopped: Callable[[], None]) -> None:
        self._fd = fd
        self._on_stopped = on_stopped
        self._cond = threading.Condition()
        self._free: list[mmap.mmap] = []
        self._buffers: list[mmap.mmap] = []
        self._stage: mmap.mmap | None = None
        self._fill = 0
        self.offset = 0  # file offset of the stage's first byte
        self._queue: queue.SimpleQueue[tuple[mmap.mmap, int, int] | None] = queue.SimpleQueue()
        self._pending = 0
        self._live = 0
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._gave_up = False
        self._error: OSError | None = None
        self.direct = True

    def write(self, view: memoryview) -> None:
        pos, total = 0, len(view)
        while pos < total:
            stage = self._stage
            if stage is None:
                stage = self._stage = self._take_buffer()
            take = min(DIRECT_WRITE - self._fill, total - pos)
            stage[self._fill : self._fill + take] = view[pos : pos + take]
            self._fill += take
            pos += take
            if self._fill == DIRECT_WRITE:
                self._submit(DIRECT_WRITE)

    def stage(self, n: int) -> memoryview | None:
        """A view of the next `n` bytes of the file, in a staging buffer, for the
        caller to fill and then `commit` (and release); None if `n` is more than a
        buffer takes at once. Blocks while every buffer is in flight."""
        if n > DIRECT_WRITE + STAGE_SLACK - DIRECT_ALIGN:
            return None
        stage = self._stage
        if stage is not None and self._fill + n > len(stage):
            self._carry()
            stage = self._stage
        if stage is None:
            stage = self._stage = self._take_buffer()
        with memoryview(stage) as whole:
            return whole[self._fill : self._fill + n]

    def commit(self, n: int) -> None:
        """The first `n` bytes of the last `stage` view are filled: they follow in the file."""
        self._fill += n
        if self._fill >= DIRECT_WRITE:
            self._carry()

    def _carry(self) -> None:
        """Submit the stage's whole pages; its unaligned rest starts the next buffer."""
        stage = self._stage
        assert stage is not None
        aligned = self._fill - self._fill % DIRECT_ALIGN
        if not aligned:
            return
        rest = stage[aligned : self._fill]
        self._submit(aligned)
        if rest:
            nxt = self._stage = self._take_buffer()
            nxt[: len(rest)] = rest
            self._fill = len(rest)

    def _take_buffer(self) -> mmap.mmap:
        with self._cond:
            while True:
                self._raise_error()
                if self._free:
                    return self._free.pop()
                if len(self._buffers) < DIRECT_BUFFERS:
                    buf = mmap.mmap(-1, DIRECT_WRITE + STAGE_SLACK)  # anonymous: page-aligned
                    self._buffers.append(buf)
                    return buf
                self._cond.wait()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise StorageError(f"写入失败 / write failed: {self._error.strerror}") from self._error

    def _submit(self, n: int) -> None:
        stage = self._stage
        assert stage is not None
        if not self._threads:
            self._live = DIRECT_THREADS
            for i in range(DIRECT_THREADS):
                t = threading.Thread(target=self._io, name=f"blob-writer-{i}", daemon=True)
                self._threads.append(t)
                t.start()
        with self._cond:
            self._pending += 1
        self._queue.put((stage, self.offset, n))
        self.offset += n
        self._stage = None
        self._fill = 0

    def finish(self) -> bytes:
        """Write every whole page staged and wait for all writes; the unaligned rest
        (< 4 KiB), for the caller to write buffered, not direct."""
        tail = b""
        if self._stage is not None:
            aligned = self._fill - self._fill % DIRECT_ALIGN
            tail = bytes(self._stage[aligned : self._fill])
            if aligned:
                self._submit(aligned)
            else:
                with self._cond:
                    self._free.append(self._stage)
                self._stage = None
                self._fill = 0
        with self._cond:
            self._cond.wait_for(lambda: self._pending == 0)
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join()  # idle: each takes its end marker at once
        self._threads.clear()
        self._raise_error()
        return tail

    def _io(self) -> None:
        while (item := self._queue.get()) is not None:
            buf, offset, n = item
            try:
                if not self._stopping and self._error is None:
                    with memoryview(buf) as mv:
                        self._pwrite_all(mv[:n], offset)
            except OSError as exc:
                with self._cond:
                    if self._error is None:
                        # A copy without the traceback, whose frames hold views of the buffer.
                        self._error = OSError(exc.errno, exc.strerror)
            finally:
                with self._cond:
                    self._pending -= 1
                    self._free.append(buf)
                    self._cond.notify_all()
        with self._cond:
            self._live -= 1
            last = self._live == 0 and self._gave_up
            self._cond.notify_all()
        if last:
            self._on_stopped()

    def _pwrite_all(self, view: memoryview, offset: int) -> None:
        done = 0
        retried = False
        while done < len(view):
            try:
                done += os.pwrite(self._fd, view[done:], offset + done)
            except OSError as exc:
                if exc.errno != errno.EINVAL or retried or not self._leave_direct():
                    raise
                # Refused after all: retried through the page cache, as are the rest.
                retried = True

    def _leave_direct(self) -> bool:
        """Whether the file is in buffered mode now (left by this or another thread)."""
        with self._cond:
            if self.direct:
                try:
                    flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
                    fcntl.fcntl(self._fd, fcntl.F_SETFL, flags & ~_O_DIRECT)
                except OSError:
                    return False
                self.direct = False
            return True

    def stop(self, timeout: float) -> bool:
        """End the threads, skipping writes still queued, waiting up to `timeout` for
        a write in progress; True once none runs (else `on_stopped` follows when the
        last one ends)."""
        with self._cond:
            self._stopping = True
        for _ in self._threads:
            self._queue.put(None)
        with self._cond:
            idle = self._cond.wait_for(lambda: self._live == 0, timeout)
            self._gave_up = not idle
        return idle

    def release(self) -> None:
        """Unmap the buffers (only once no thread runs)."""
        for buf in self._buffers:
            buf.close()
        self._buffers.clear()
        self._free.clear()
        self._stage = None


class FilesystemBlobWriter:
    """One temporary blob. `write` may be called from a worker thread (the sealing
    pipeline's), the other methods from the vault afterwards; never concurrently."""

    def __init__(self, store: FilesystemBlobStore, key: str, *, direct_io: bool = True) -> None:
        self._store = store
        self._final = store.path_for(key)
        self.temp_path = store.tmp_dir / f"{key}.{secrets.token_hex(4)}{TMP_SUFFIX}"
        try:
            self._fd: int | None = os.open(self.temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise StorageError(f"无法创建临时文件 / cannot create {self.temp_path}: {exc.strerror}") from exc
        # Held until the file is closed, by this process or by its death: a temporary
        # nobody holds is an interrupted upload, whatever its age (clean_temporaries).
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._published = False
        self._offset = 0  # bytes written to the file (buffered mode)
        self._kicked = 0  # bytes handed to writeback (buffered mode)
        direct = direct_io and bool(_O_DIRECT) and self._set_direct(True)
        self._direct: _DirectWrites | None = _DirectWrites(self._fd, self._abandoned) if direct else None

    def _set_direct(self, on: bool) -> bool:
        assert self._fd is not None
        try:
            flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
            fcntl.fcntl(self._fd, fcntl.F_SETFL, flags | _O_DIRECT if on else flags & ~_O_DIRECT)
        except OSError:
            return False
        return True

    def write(self, data: bytes | memoryview) -> int:
        fd = self._fd
        assert fd is not None, "writer closed"
        view = memoryview(data)
        if view.itemsize != 1:
            view = view.cast("B")
        total = len(view)
        if self._direct is not None:
            self._direct.write(view)
            return total
        self._write_all(view)
        if _sync_file_range is not None and self._offset - self._kicked >= WRITEBACK_STEP:
            self._writeback(fd)
        return total

    def stage(self, n: int) -> memoryview | None:
        """Where the next `n` bytes go, to be filled in place and then `commit`ted; None
        when writing through the page cache (nothing to save: `write` copies once)."""
        assert self._fd is not None, "writer closed"
        return self._direct.stage(n) if self._direct is not None else None

    def commit(self, n: int) -> None:
        assert self._direct is not None, "commit without a staged view"
        self._direct.commit(n)

    def _write_all(self, view: memoryview) -> None:
        assert self._fd is not None
        try:
            while view:
                n = os.pwrite(self._fd, view, self._offset)
                self._offset += n
                view = view[n:]
        except OSError as exc:
            raise StorageError(f"写入失败 / write failed: {exc.strerror}") from exc

    def _writeback(self, fd: int) -> None:
        sfr = _sync_file_range
        assert sfr is not None
        start, end = self._kicked, self._offset
        sfr(fd, start, end - start, _SFR_WRITE)  # start writing, don't wait
        if start >= WRITEBACK_WINDOW:
            # Bound what is in flight: wait for the range a window behind to be written.
            sfr(
                fd, start - WRITEBACK_WINDOW, end - start, _SFR_WAIT_BEFORE | _SFR_WRITE | _SFR_WAIT_AFTER
            )
        self._kicked = end  # errors surface in the fsync of `sync`, not here

    def sync(self) -> None:
        assert self._fd is not None, "writer closed"
        direct = self._direct
        if direct is not None:
            tail = direct.finish()  # on error its threads have ended too: abort cleans up
            direct.release()
            self._direct = None
            self._offset = direct.offset
            if tail:
                # The unaligned tail cannot go direct: write it through the page cache.
                if not self._set_direct(False):
                    raise StorageError("同步失败 / cannot leave direct I/O for the last bytes")
                self._write_all(memoryview(tail))
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise StorageError(f"同步失败 / fsync failed: {exc.strerror}") from exc

    def publish(self) -> None:
        assert self._fd is not None, "writer closed"
        assert self._direct is None, "publish before sync"
        os.close(self._fd)
        self._fd = None
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
        direct = self._direct
        if direct is not None and not direct.stop(ABORT_WAIT):
            return  # a write to a stalled disk: the last thread to end closes the file
        self._close_and_remove()

    def _abandoned(self) -> None:
        """The direct writes' last thread ended after `abort`: now the file may close."""
        self._close_and_remove()

    def _close_and_remove(self) -> None:
        if self._direct is not None:
            self._direct.release()
            self._direct = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if not self._published:
            try:
                self.temp_path.unlink()
            except FileNotFoundError:
                pass

class FilesystemBlobStore:
    def __init__(self, root: str | os.PathLike[str], *, direct_io: bool = True) -> None:
        self.root = Path(root)
        self.direct_io = direct_io
        self.blob_dir = self.root / "blobs"
        self.tmp_dir = self.root / "tmp"
        for d in (self.root, self.blob_dir, self.tmp_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path_for(self, key: str) -> Path:
        if not _KEY.match(key):
            raise InvalidRequest(f"无效的录音编号 / invalid blob key {key!r}")
        return self.blob_dir / key[:2] / f"{key}{SUFFIX}"

    enforces_retention = False  # a local filesystem cannot stop its administrator
    remote = False

    @property
    def location(self) -> str:
        return str(self.root)

    def check(self) -> None:
        return None  # the vault's caller checks the disk: room and write permission

    def begin(self, key: str, *, retain_until: date | None = None) -> FilesystemBlobWriter:
        # A local filesystem cannot stop its administrator: retention is the vault's.
        return FilesystemBlobWriter(self, key, direct_io=self.direct_io)

    def set_legal_hold(self, key: str, on: bool) -> None:
        return None

    def extend_retention(self, key: str, retain_until: date) -> None:
        return None

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
        """Remove interrupted uploads: temporaries no writer holds (its process ended:
        the kernel dropped its flock), at any age, so a restart right after a crash
        frees their space at once. One still held is being written and stays. With
        `older_than` (the port's grace, for stores without locks; a sweep while ingests
        run) the lock decides instead of the age, except that a temporary younger than
        `_LOCK_GRACE` stays: its writer may be between creating and locking it."""
        n = 0
        young = datetime.now(timezone.utc).timestamp() - _LOCK_GRACE
        for p in self.temporaries():
            try:
                fd = os.open(p, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a running ingest holds it
                if older_than is not None and os.fstat(fd).st_mtime > young:
                    continue  # made this very moment: its writer may not have locked it yet
                p.unlink()
                n += 1
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)
        if n:
            _fsync_dir(self.tmp_dir)
        return n
