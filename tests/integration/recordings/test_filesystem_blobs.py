"""The filesystem blob writer on a real disk: large unaligned writes, with direct I/O
(an unaligned tail written at sync) or buffered with writeback started while writing
(sync_file_range), then fsync, rename, and nothing else left behind."""

from __future__ import annotations

import hashlib
import os
import resource
import stat
import threading

import pytest

from adapters.storage import filesystem
from adapters.storage.filesystem import FilesystemBlobStore, StorageError


@pytest.mark.parametrize("direct_io", [True, False], ids=["direct-io", "buffered-writeback"])
def test_a_blob_larger_than_the_writeback_window_lands_byte_for_byte(tmp_path, direct_io: bool) -> None:
    store = FilesystemBlobStore(tmp_path / "data", direct_io=direct_io)
    total = filesystem.WRITEBACK_WINDOW + 3 * filesystem.WRITEBACK_STEP + 12_345
    expected = hashlib.sha256()
    w = store.begin("blob-writeback-1")
    written = 0
    piece = 1024 * 1024 + 17  # not aligned to pages or to the writeback step
    seed = os.urandom(piece)
    while written < total:
        n = min(piece, total - written)
        data = memoryview(seed)[:n]
        expected.update(data)
        assert w.write(data) == n
        written += n
    w.sync()
    w.publish()
    path = store.path_for("blob-writeback-1")
    assert path.stat().st_size == total
    assert hashlib.sha256(path.read_bytes()).hexdigest() == expected.hexdigest()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert store.temporaries() == []


def test_bytes_staged_in_place_and_bytes_written_interleave_byte_for_byte_with_direct_io(tmp_path) -> None:
    store = FilesystemBlobStore(tmp_path / "data", direct_io=True)
    w = store.begin("blob-staged-1")
    expected = hashlib.sha256()
    total = 0
    # Sealed-batch-like runs (never page multiples) between small plain writes: each
    # buffer's unaligned end must start the next one, in order.
    for i in range(40):
        head = os.urandom(97 + i)
        w.write(head)
        expected.update(head)
        run = os.urandom(1024 * 1024 + 256 + 13 * i)
        view = w.stage(len(run))
        assert view is not None
        with view:
            view[:] = run
        w.commit(len(run))
        expected.update(run)
        total += len(head) + len(run)
    assert w.stage(filesystem.DIRECT_WRITE + filesystem.STAGE_SLACK) is None  # more than a buffer: write it
    w.sync()
    w.publish()
    path = store.path_for("blob-staged-1")
    assert path.stat().st_size == total
    assert hashlib.sha256(path.read_bytes()).hexdigest() == expected.hexdigest()


def test_a_buffered_blob_lends_no_buffer(tmp_path) -> None:
    w = FilesystemBlobStore(tmp_path / "data", direct_io=False).begin("blob-staged-2")
    assert w.stage(4096) is None
    w.abort()


@pytest.mark.parametrize("direct_io", [True, False], ids=["direct-io", "buffered-writeback"])
def test_an_aborted_blob_leaves_no_temporary_and_no_blob(tmp_path, direct_io: bool) -> None:
    store = FilesystemBlobStore(tmp_path / "data", direct_io=direct_io)
    w = store.begin("blob-aborted-1")
    w.write(os.urandom(filesystem.WRITEBACK_STEP + 1))
    assert len(store.temporaries()) == 1
    w.abort()
    assert store.temporaries() == [] and list(store.keys()) == []


@pytest.mark.parametrize("direct_io", [True, False], ids=["direct-io", "buffered-writeback"])
def test_a_write_the_disk_refuses_is_a_storage_error_and_abort_leaves_nothing(tmp_path, direct_io: bool) -> None:
    store = FilesystemBlobStore(tmp_path / "data", direct_io=direct_io)
    w = store.begin("blob-refused-1")
    piece = os.urandom(filesystem.DIRECT_WRITE + 7)
    # A file size limit makes the kernel refuse writes past it (EFBIG; Python
    # ignores SIGXFSZ): a real failing write, on the blob writer's threads too.
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (3 * filesystem.DIRECT_WRITE, hard))
    try:
        with pytest.raises(StorageError, match="write failed"):
            for _ in range(2 * filesystem.DIRECT_BUFFERS + 4):
                w.write(piece)
            w.sync()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    w.abort()
    assert store.temporaries() == [] and list(store.keys()) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("blob-writer")]
