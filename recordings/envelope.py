"""The sealed blob format: chunked AES-256-GCM under a per-recording data key.

See ``recordings/FORMAT.md`` for the byte layout and the reasoning. In short::

    blob   = MAGIC(8) | header_len(u32 BE) | header (canonical JSON) | chunk_0 | ... | chunk_n-1
    chunk  = AES-256-GCM(data_key, nonce_i, plaintext_i, aad_i)   (ciphertext || 16-byte tag)
    nonce_i = final(u32 BE, 0|1) || i (u64 BE)
    aad_i   = SHA-256(MAGIC | header_len | header) || i (u64 BE) || final (u8)

Every chunk holds exactly ``chunk_size`` plaintext bytes except the last, which is
marked final and holds 1..chunk_size bytes (0 only for an empty recording). Binding the
index and the final marker into nonce and AAD makes a dropped, duplicated, reordered
or swapped chunk, and a truncation at any byte, fail authentication; binding the
header digest ties every chunk to its recording id and data key id.

The data key never leaves memory in clear: it is stored wrapped (AES-256-GCM) under the
creditor's key-encryption key, outside the blob, so rotating the KEK rewraps 61 bytes
per recording and never touches audio.

This module is pure: it reads and writes file-like objects handed to it and never
opens files itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import struct
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from recordings import keywrap
from recordings.errors import IntegrityError

if TYPE_CHECKING:
    from hashlib import _Hash

MAGIC = b"DGREC\x00\x01\x00"
FORMAT_VERSION = 1
CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
KEY_SIZE = 32
MAX_HEADER = 4096
_LEN = struct.Struct(">I")
_NONCE = struct.Struct(">IQ")
_AAD_TAIL = struct.Struct(">QB")

WRAP_VERSION = keywrap.WRAP_VERSION
WRAPPED_KEY_SIZE = keywrap.WRAPPED_KEY_SIZE

AES_256_GCM = "AES-256-GCM"
SM4_GCM = "SM4-GCM"


class Sm4Gcm:
    """SM4-GCM (GB/T 32907 block cipher in GCM, RFC 8998) with the two calls the
    sealer and the reader use on `AESGCM`; `cryptography` has no SM4 AEAD class."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != 16:
            raise ValueError("SM4 key must be 16 bytes")
        self._key = algorithms.SM4(key)

    def encrypt_into(self, nonce: bytes, data: bytes | memoryview, aad: bytes, out: memoryview) -> int:
        enc = Cipher(self._key, modes.GCM(nonce)).encryptor()
        enc.authenticate_additional_data(aad)
        n = enc.update_into(data, out) if len(data) else 0
        enc.finalize()
        out[n : n + TAG_SIZE] = enc.tag
        return n + TAG_SIZE

    def decrypt(self, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
        if len(sealed) < TAG_SIZE:
            raise InvalidTag()
        dec = Cipher(self._key, modes.GCM(nonce, sealed[-TAG_SIZE:])).decryptor()
        dec.authenticate_additional_data(aad)
        return dec.update(sealed[:-TAG_SIZE]) + dec.finalize()


class _Aead(Protocol):
    """The two calls the sealer and the reader make on a data cipher."""

    def encrypt_into(self, nonce: bytes, data: bytes | memoryview, aad: bytes, out: memoryview, /) -> int: ...

    def decrypt(self, nonce: bytes, sealed: bytes, aad: bytes, /) -> bytes: ...


# The data cipher of a recording, named in its header: key size and AEAD.
CIPHERS: dict[str, tuple[int, Callable[[bytes], _Aead]]] = {
    AES_256_GCM: (32, AESGCM),
    SM4_GCM: (16, Sm4Gcm),
}


def _aead_for(alg: str, data_key: bytes) -> _Aead:
    size, make = CIPHERS[alg]
    if len(data_key) != size:
        raise ValueError(f"{alg} data key must be {size} bytes")
    return make(data_key)


class Writable(Protocol):
    """Where sealed bytes go. `write` must consume `data` before returning: the
    writers hand it views of buffers they reuse for the next batch."""

    def write(self, data: bytes | memoryview, /) -> object: ...


@dataclass(frozen=True, slots=True)
class Header:
    recording_id: str
    key_id: str  # the data key's id: constant for the life of the recording
    chunk_size: int = CHUNK_SIZE
    alg: str = "AES-256-GCM"
    version: int = FORMAT_VERSION

    def encode(self) -> bytes:
        body = json.dumps(
            {
                "alg": self.alg,
                "chunk_size": self.chunk_size,
                "key_id": self.key_id,
                "recording_id": self.recording_id,
                "v": self.version,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode("utf-8")
        return MAGIC + _LEN.pack(len(body)) + body


@dataclass(frozen=True, slots=True)
class SealSummary:
    """What the writer knows once the last chunk is sealed."""

    size: int  # plaintext bytes
    sha256: str  # hex digest of the plaintext
    chunks: int
    blob_size: int  # bytes written, header included
    head: bytes  # first plaintext bytes (up to 16), for media sniffing


def new_data_key(alg: str = AES_256_GCM) -> bytes:
    return os.urandom(CIPHERS[alg][0])


def _nonce(index: int, final: bool) -> bytes:
    return _NONCE.pack(1 if final else 0, index)


def _aad(header_digest: bytes, index: int, final: bool) -> bytes:
    return header_digest + _AAD_TAIL.pack(index, 1 if final else 0)


BATCH_BYTES = 1024 * 1024  # plaintext sealed per batch: one SHA-256 update, one sink write


def _sealed_size(plain: int, chunk: int) -> int:
    """Bytes that `plain` plaintext bytes take once sealed (an empty run: one tag)."""
    return plain + TAG_SIZE * max(1, -(-plain // chunk))


class _ChunkSealer:
    """Seals runs of consecutive chunks into a caller's buffer (`encrypt_into`, no
    per-chunk allocation). The one place where nonce, AAD and final marker are set."""

    __slots__ = ("_aead", "_digest", "_chunk", "index")

    def __init__(self, data_key: bytes, header_digest: bytes, chunk_size: int, alg: str = AES_256_GCM) -> None:
        self._aead = _aead_for(alg, data_key)
        self._digest = header_digest
        self._chunk = chunk_size
        self.index = 0

    def seal_run(self, plain: memoryview, out: memoryview, *, final: bool) -> int:
        """Seal `plain` chunk by chunk into `out`; the bytes written.

        A non-final run is a positive multiple of the chunk size. A final run holds
        any number of bytes, 0 included (an empty recording is one empty final chunk);
        its last chunk carries the final marker.
        """
        n = len(plain)
        chunk = self._chunk
        encrypt_into = self._aead.encrypt_into
        digest = self._digest
        index = self.index
        pos = 0
        o = 0
        while True:
            end = pos + chunk if pos + chunk < n else n
            last = final and end == n
            size = end - pos + TAG_SIZE
            encrypt_into(_nonce(index, last), plain[pos:end], _aad(digest, index, last), out[o : o + size])
            o += size
            index += 1
            pos = end
            if pos >= n:
                break
        self.index = index
        return o


def _sealing(
    data_key: bytes, recording_id: str, key_id: str, chunk_size: int, batch_bytes: int, alg: str = AES_256_GCM
) -> tuple[bytes, _ChunkSealer, _Hash, int]:
    """What both writers start from: the encoded header, the chunk sealer bound to it,
    the plaintext's running SHA-256, and the batch capacity (whole chunks)."""
    if alg not in CIPHERS:
        raise ValueError(f"unknown cipher {alg!r}")
    if len(data_key) != CIPHERS[alg][0]:
        raise ValueError(f"{alg} data key must be {CIPHERS[alg][0]} bytes")
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    header = Header(recording_id=recording_id, key_id=key_id, chunk_size=chunk_size, alg=alg).encode()
    sealer = _ChunkSealer(data_key, hashlib.sha256(header).digest(), chunk_size, alg)
    return header, sealer, hashlib.sha256(), max(1, batch_bytes // chunk_size) * chunk_size


class EnvelopeWriter:
    """Streams plaintext in, sealed chunks out, in batches of whole chunks, on the
    caller's thread; memory is two fixed buffers (one batch in, one sealed out).
    Each piece is hashed as it arrives (still in cache), then copied into the batch;
    a batch is sealed with one `encrypt_into` per chunk and written in one call.

    A full batch is held back until more data arrives or `finish` is called, because
    only then is it known whether its last chunk is the final one.
    """

    def __init__(
        self,
        out: Writable,
        data_key: bytes,
        *,
        recording_id: str,
        key_id: str,
        chunk_size: int = CHUNK_SIZE,
        batch_bytes: int = BATCH_BYTES,
        alg: str = AES_256_GCM,
    ) -> None:
        header, self._sealer, self._sha, self._cap = _sealing(
            data_key, recording_id, key_id, chunk_size, batch_bytes, alg
        )
        self._out = out
        self._chunk = chunk_size
        self._batch = bytearray(self._cap)
        self._fill = 0
        self._sealed = bytearray(0)  # grown to one sealed batch when first needed
        self._size = 0
        self._head = b""
        self._finished = False
        out.write(header)
        self._written = len(header)

    @property
    def buffered(self) -> int:
        """Plaintext bytes held, not yet sealed (at most one batch)."""
        return self._fill

    def _take(self, data: bytes | bytearray | memoryview) -> memoryview:
        if self._finished:
            raise ValueError("writer already finished")
        view = memoryview(data).cast("B")
        if view and len(self._head) < 16:
            self._head = (self._head + bytes(view[:16]))[:16]
        return view

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = self._take(data)
        pos = 0
        n = len(view)
        self._size += n
        cap = self._cap
        while pos < n:
            if self._fill == cap:
                self._seal_batch(final=False)  # more data follows: not the final chunk
            take = min(cap - self._fill, n - pos)
            part = view[pos : pos + take]
            self._sha.update(part)  # while the piece is in cache, before the copy
            self._batch[self._fill : self._fill + take] = part
            self._fill += take
            pos += take

    def _seal_batch(self, *, final: bool) -> None:
        need = _sealed_size(self._fill, self._chunk)
        if len(self._sealed) < need:
            self._sealed = bytearray(need)
        with memoryview(self._batch) as batch, memoryview(self._sealed) as sealed:
            n = self._sealer.seal_run(batch[: self._fill], sealed, final=final)
            self._out.write(sealed[:n])
        self._written += n
        self._fill = 0

    def finish(self) -> SealSummary:
        if self._finished:
            raise ValueError("writer already finished")
        self._seal_batch(final=True)
        self._finished = True
        return SealSummary(
            size=self._size,
            sha256=self._sha.hexdigest(),
            chunks=self._sealer.index,
            blob_size=self._written,
            head=self._head,
        )


class _Slot:
    """One batch in flight: its plaintext, its sealed form, and how many of the
    threads (hasher, writer) still use it."""

    __slots__ = ("plain", "sealed", "users")

    def __init__(self, cap: int) -> None:
        self.plain = bytearray(cap)
        self.sealed = bytearray(0)  # grown to one sealed batch when first sealed
        self.users = 0


class PipelinedEnvelopeWriter:
    """The same bytes as `EnvelopeWriter`, with the writes on a thread of its own, so
    the caller (an event loop) never waits on the disk.

    The caller copies each piece into a batch buffer; once a batch is full and more
    data follows, it seals it with AES-GCM into the slot's sealed buffer and the
    writer thread writes that to `out` (one call per batch). SHA-256 runs either on
    the caller as each piece arrives (still in cache), or, with `hash_on_worker=True`,
    on a hasher thread of its own that takes each batch as soon as it is full, so
    hashing, encrypting and a blocking write (direct I/O waits for the device) all
    overlap: the way to keep two cores busy. The hasher is not the writer because a
    hash followed by a write on one thread leaves a core idle during every write.
    AES-GCM stays on the caller: it takes one call per chunk, and each call on
    another thread would be a GIL hand-over.

    Memory is bounded: at most `depth` batch slots (a plaintext and a sealed buffer
    each), made on demand, so an upload slower than the threads uses two. A slot is
    free again once written and hashed. When every slot is in flight, `write_some`
    takes what fits and returns short, and `on_room` (called from a thread once half
    the slots are back) says when to offer the rest, so an event loop never blocks
    on it. The threads start with the first full batch: a recording of one batch or
    less is sealed and written by `finish` on the calling thread.

    An error on a thread (a failed `out.write`, say) is raised as is by the next
    `write_some`/`write`/`wait_room`/`finish`; `abort` stops the threads.
    """

    def __init__(
        self,
        out: Writable,
        data_key: bytes,
        *,
        recording_id: str,
        key_id: str,
        chunk_size: int = CHUNK_SIZE,
        batch_bytes: int = BATCH_BYTES,
        depth: int = 4,
        hash_on_worker: bool = False,
        on_room: Callable[[], object] | None = None,
        alg: str = AES_256_GCM,
    ) -> None:
        if depth < 2:
            raise ValueError("depth must be at least 2")
        header, self._sealer, self._sha, self._cap = _sealing(
            data_key, recording_id, key_id, chunk_size, batch_bytes, alg
        )
        self._out = out
        self._chunk = chunk_size
        self._hash_on_worker = hash_on_worker
        self._depth = depth
        self._low_water = depth // 2  # <= depth - 1: reached whenever the caller waits
        self._allocated = 1
        self._free: list[_Slot] = []
        self._cond = threading.Condition()
        self._on_room = on_room
        self._slot: _Slot | None = _Slot(self._cap)
        self._fill = 0
        self._size = 0
        self._head = b""
        self._error: BaseException | None = None
        self._stop = False
        self._writes: queue.SimpleQueue[tuple[_Slot, int] | None] = queue.SimpleQueue()
        self._hashes: queue.SimpleQueue[tuple[_Slot, int] | None] = queue.SimpleQueue()
        self._in_flight = 0
        self._threads: list[threading.Thread] = []
        self._ended = 0  # threads past their loop
        self._finish_lock = threading.Lock()
        self._finished = False
        out.write(header)
        self._written = len(header)

    # -- caller side ---------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Batches handed to the threads and not yet written and hashed."""
        with self._cond:
            return self._in_flight

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self._finished:
            raise ValueError("writer already finished")

    def write_some(self, data: bytes | bytearray | memoryview) -> int:
        """Take as much of `data` as fits without waiting; the count taken.

        Short only when every batch slot is in flight: wait for `on_room` (or call
        `wait_room`) and offer the rest again.
        """
        self._check()
        view = memoryview(data)
        if view.itemsize != 1:
            view = view.cast("B")
        n = len(view)
        pos = 0
        cap = self._cap
        hash_here = not self._hash_on_worker
        while pos < n:
            if self._fill == cap:
                # More data follows, so the held batch is not the final one: hand it off.
                with self._cond:
                    if self._free:
                        nxt = self._free.pop()
                    elif self._allocated < self._depth:
                        self._allocated += 1
                        nxt = _Slot(cap)
                    else:
                        break
                self._dispatch(final=False)
                self._slot = nxt
            slot = self._slot
            assert slot is not None
            take = min(cap - self._fill, n - pos)
            part = view[pos : pos + take]
            if hash_here:
                self._sha.update(part)  # while the piece is in cache, before the copy
            slot.plain[self._fill : self._fill + take] = part
            self._fill += take
            pos += take
        if pos and len(self._head) < 16:
            self._head = (self._head + bytes(view[: min(16, pos)]))[:16]
        self._size += pos
        return pos

    def wait_room(self, timeout: float | None = None) -> bool:
        """Block until a batch slot is free; False on timeout. Raises a thread's error."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: bool(self._free) or self._allocated < self._depth or self._error is not None, timeout
            )
        if self._error is not None:
            raise self._error
        return ok

    def write(self, data: bytes | bytearray | memoryview, timeout: float | None = None) -> None:
        """Blocking form of `write_some`, for callers not on an event loop."""
        view = memoryview(data).cast("B")
        while view:
            view = view[self.write_some(view) :]
            if view and not self.wait_room(timeout):
                raise TimeoutError("sealing worker made no room in time")

    def _seal_slot(self, slot: _Slot, final: bool) -> int:
        """AES-GCM of the held batch into the slot's sealed buffer; the bytes sealed."""
        need = _sealed_size(self._fill, self._chunk)
        if len(slot.sealed) < need:
            slot.sealed = bytearray(need)  # once per slot: a full batch needs the most
        with memoryview(slot.plain) as p, memoryview(slot.sealed) as s:
            return self._sealer.seal_run(p[: self._fill], s, final=final)

    def _start(self) -> None:
        self._threads.append(threading.Thread(target=self._write_worker, name="envelope-writer", daemon=True))
        if self._hash_on_worker:
            self._threads.append(threading.Thread(target=self._hash_worker, name="envelope-hasher", daemon=True))
        for t in self._threads:
            t.start()

    def _dispatch(self, *, final: bool) -> None:
        slot, fill = self._slot, self._fill
        assert slot is not None
        if not self._threads:
            self._start()
        with self._cond:
            self._in_flight += 1
            slot.users = 2 if self._hash_on_worker else 1
        if self._hash_on_worker:
            self._hashes.put((slot, fill))  # hashed while this thread encrypts it
        n = self._seal_slot(slot, final)
        self._slot = None
        self._fill = 0
        self._writes.put((slot, n))

    def _join(self, timeout: float | None) -> bool:
        """Wait for every thread, `timeout` in all; whether they all ended."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._ended == len(self._threads), timeout):
                return False
        for t in self._threads:
            t.join()  # past its last statement: returns at once
        return True

    def _end_queues(self) -> None:
        self._writes.put(None)
        self._hashes.put(None)

    def finish(self, timeout: float | None = None) -> SealSummary:
        """Seal the held batch as the final one, wait for the threads, summarise."""
        with self._finish_lock:
            self._check()
            if not self._threads:
                # Never left the caller's thread: the only batch is done right here.
                slot = self._slot
                assert slot is not None
                n = self._seal_slot(slot, True)
                with memoryview(slot.plain) as p, memoryview(slot.sealed) as s:
                    if self._hash_on_worker:
                        self._sha.update(p[: self._fill])
                    self._out.write(s[:n])
                self._written += n
                self._slot = None
            else:
                self._dispatch(final=True)
                self._end_queues()
                if not self._join(timeout):
                    raise TimeoutError("sealing worker did not finish in time")
                if self._error is not None:
                    raise self._error
            self._finished = True
            return SealSummary(
                size=self._size,
                sha256=self._sha.hexdigest(),
                chunks=self._sealer.index,
                blob_size=self._written,
                head=self._head,
            )

    def abort(self, timeout: float | None = 30.0) -> None:
        """Stop the threads (the writer finishes at most the batch in hand) and wait
        up to `timeout` for them; once `stopped`, nothing writes to `out` any more.
        Idempotent; call again to wait longer."""
        self._stop = True
        if timeout is not None and timeout <= 0:
            got = self._finish_lock.acquire(blocking=False)
        else:
            got = self._finish_lock.acquire(timeout=-1 if timeout is None else timeout)
        if not got:
            return  # `finish` is running on another thread; it ends soon: stop is set
        try:
            if self._threads and not self._finished:
                self._end_queues()
            self._finished = True
            if self._threads:
                self._join(timeout)
        finally:
            self._finish_lock.release()

    @property
    def stopped(self) -> bool:
        """Nothing of this writer is running: no `finish` under way on some thread,
        and its threads never started or ended."""
        return not self._finish_lock.locked() and not any(t.is_alive() for t in self._threads)

    # -- threads -------------------------------------------------------------------

    def _signal_room(self) -> None:
        if self._on_room is not None:
            try:
                self._on_room()
            except Exception:  # a closed event loop: nobody is waiting any more
                pass

    def _fail(self, exc: BaseException) -> None:
        with self._cond:
            if self._error is None:
                self._error = exc

    def _release(self, slot: _Slot) -> None:
        with self._cond:
            slot.users -= 1
            if slot.users:
                return
            self._in_flight -= 1
            self._free.append(slot)
            self._cond.notify_all()
            # Wake the caller once half the slots are back, not for each one:
            # every wake-up of an event loop costs more than the batch's hash.
            wake = self._error is not None or len(self._free) == self._low_water
        if wake:
            self._signal_room()

    def _write_worker(self) -> None:
        write = self._out.write
        while (item := self._writes.get()) is not None:
            slot, n = item
            try:
                if not self._stop and self._error is None:
                    with memoryview(slot.sealed) as s:
                        write(s[:n])
                    self._written += n
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                self._fail(exc)
            finally:
                self._release(slot)
        self._exit()

    def _hash_worker(self) -> None:
        update = self._sha.update
        while (item := self._hashes.get()) is not None:
            slot, fill = item
            try:
                if not self._stop and self._error is None:
                    with memoryview(slot.plain) as p:
                        update(p[:fill])
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                self._fail(exc)
            finally:
                self._release(slot)
        self._exit()

    def _exit(self) -> None:
        with self._cond:
            self._ended += 1
            self._cond.notify_all()


def read_header(f: BinaryIO) -> tuple[Header, bytes, int]:
    """Parse the header at the start of `f`: (header, header digest, header length)."""
    f.seek(0)
    prefix = f.read(len(MAGIC) + _LEN.size)
    if len(prefix) < len(MAGIC) + _LEN.size or prefix[: len(MAGIC)] != MAGIC:
        raise IntegrityError(
            "不是录音密文文件或文件头已损坏 / not a sealed recording: bad magic or truncated header"
        )
    (length,) = _LEN.unpack(prefix[len(MAGIC) :])
    if length > MAX_HEADER:
        raise IntegrityError(f"文件头过长 / header length {length} exceeds {MAX_HEADER}")
    body = f.read(length)
    if len(body) != length:
        raise IntegrityError("文件头被截断 / header truncated")
    try:
        obj = json.loads(body)
        header = Header(
            recording_id=str(obj["recording_id"]),
            key_id=str(obj["key_id"]),
            chunk_size=int(obj["chunk_size"]),
            alg=str(obj["alg"]),
            version=int(obj["v"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"文件头无法解析 / header unreadable: {exc}") from exc
    if header.version != FORMAT_VERSION or header.alg not in CIPHERS or header.chunk_size < 1:
        raise IntegrityError(
            f"不支持的格式 / unsupported format v{header.version} {header.alg} chunk {header.chunk_size}"
        )
    raw = prefix + body
    if header.encode() != raw:
        # Only the canonical form is ever written; anything else was edited.
        raise IntegrityError("文件头非规范形式 / header is not in canonical form (edited)")
    return header, hashlib.sha256(raw).digest(), len(raw)


class EnvelopeReader:
    """Random access to a sealed blob: decrypts only the chunks a range touches.

    Every chunk is authenticated before any of its bytes are returned.
    """

    def __init__(
        self,
        f: BinaryIO,
        data_key: bytes,
        blob_size: int,
        *,
        recording_id: str | None = None,
        key_id: str | None = None,
    ) -> None:
        self._f = f
        header, digest, header_len = read_header(f)
        if recording_id is not None and header.recording_id != recording_id:
            raise IntegrityError(
                "密文属于另一条录音 / blob belongs to another recording",
                expected=recording_id,
                found=header.recording_id,
            )
        if key_id is not None and header.key_id != key_id:
            raise IntegrityError("数据密钥编号不符 / blob sealed under another data key id")
        self.header = header
        self._digest = digest
        self._base = header_len
        try:
            self._aead = _aead_for(header.alg, data_key)
        except ValueError as exc:
            raise IntegrityError(f"数据密钥与算法不符 / data key does not fit {header.alg}") from exc
        chunk = header.chunk_size
        stride = chunk + TAG_SIZE
        body = blob_size - header_len
        if body < TAG_SIZE:
            raise IntegrityError("密文被截断 / blob truncated: no chunk after the header")
        full, rest = divmod(body, stride)
        if rest == 0:
            self.chunks = full
            last = chunk
        elif rest >= TAG_SIZE:
            self.chunks = full + 1
            last = rest - TAG_SIZE
        else:
            raise IntegrityError("密文被截断 / blob truncated inside a chunk tag")
        self._stride = stride
        self._chunk = chunk
        self.size = (self.chunks - 1) * chunk + last

    def read_chunk(self, index: int) -> bytes:
        if not 0 <= index < self.chunks:
            raise IndexError(index)
        final = index == self.chunks - 1
        self._f.seek(self._base + index * self._stride)
        length = (self.size - index * self._chunk if final else self._chunk) + TAG_SIZE
        sealed = self._f.read(length)
        if len(sealed) != length:
            raise IntegrityError(f"第 {index} 块被截断 / chunk {index} truncated")
        try:
            return self._aead.decrypt(
                _nonce(index, final), sealed, _aad(self._digest, index, final)
            )
        except InvalidTag as exc:
            raise IntegrityError(
                f"第 {index} 块校验失败（篡改、截断、乱序或密钥错误） / chunk {index} failed "
                "authentication: tampered, truncated, reordered, or wrong key",
                chunk=index,
            ) from exc

    def iter_range(self, start: int, end: int) -> Iterator[bytes]:
        """Plaintext bytes [start, end) — end exclusive — chunk by chunk."""
        if not 0 <= start <= end <= self.size:
            raise ValueError(f"range [{start}, {end}) outside 0..{self.size}")
        if start == end:
            return
        first = start // self._chunk
        last = (end - 1) // self._chunk
        for index in range(first, last + 1):
            data = self.read_chunk(index)
            base = index * self._chunk
            lo = max(start - base, 0)
            hi = min(end - base, len(data))
            yield data if (lo == 0 and hi == len(data)) else data[lo:hi]

    def iter_all(self) -> Iterator[bytes]:
        """Every chunk in order, including the (possibly empty) final one."""
        for index in range(self.chunks):
            yield self.read_chunk(index)


def wrap_context(recording_id: str, key_id: str) -> bytes:
    """What a wrapped data key is bound to: its recording and its own id (the key
    backend adds the KEK's id, see `recordings.keywrap`)."""
    return f"dialgate/data-key/v1|{recording_id}|{key_id}".encode()


def wrap_data_key(kek: bytes, data_key: bytes, *, recording_id: str, key_id: str, kek_id: str) -> bytes:
    """AES-256-GCM key wrap under raw KEK bytes; the AAD binds it to its recording and KEK id."""
    return keywrap.aes_gcm_wrap(kek, kek_id, data_key, wrap_context(recording_id, key_id))


def unwrap_data_key(kek: bytes, wrapped: bytes, *, recording_id: str, key_id: str, kek_id: str) -> bytes:
    return keywrap.aes_gcm_unwrap(kek, kek_id, wrapped, wrap_context(recording_id, key_id))
