"""Sealing: the chunk sealer both writers share, and the one-thread `EnvelopeWriter`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from recordings.envelope.ciphers import AES_256_GCM, CIPHERS, TAG_SIZE, aead_for
from recordings.envelope.layout import CHUNK_SIZE, Header, aad, nonce, sealed_size

if TYPE_CHECKING:
    from hashlib import _Hash

BATCH_BYTES = 1024 * 1024  # plaintext sealed per batch: one SHA-256 update, one sink write


class Writable(Protocol):
    """Where sealed bytes go. `write` must consume `data` before returning: the
    writers hand it views of buffers they reuse for the next batch."""

    def write(self, data: bytes | memoryview, /) -> object: ...


@runtime_checkable
class Stager(Protocol):
    """A sink that lends its own buffers: `stage(n)` is a view of the next `n` bytes
    of the output (None: not that many at once), filled in place and then handed back
    with `commit(k)` for its first `k` bytes, so sealed bytes are never copied into
    the sink. The view must be released before the next `stage`."""

    def stage(self, n: int, /) -> memoryview | None: ...

    def commit(self, n: int, /) -> None: ...


@dataclass(frozen=True, slots=True)
class SealSummary:
    """What the writer knows once the last chunk is sealed."""

    size: int  # plaintext bytes
    sha256: str  # hex digest of the plaintext
    chunks: int
    blob_size: int  # bytes written, header included
    head: bytes  # first plaintext bytes (up to 16), for media sniffing


class ChunkSealer:
    """Seals runs of consecutive chunks into a caller's buffer (`encrypt_into`, no
    per-chunk allocation). The one place where nonce, AAD and final marker are set."""

    __slots__ = ("_aead", "_digest", "_chunk", "index")

    def __init__(self, data_key: bytes, header_digest: bytes, chunk_size: int, alg: str = AES_256_GCM) -> None:
        self._aead = aead_for(alg, data_key)
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
            encrypt_into(nonce(index, last), plain[pos:end], aad(digest, index, last), out[o : o + size])
            o += size
            index += 1
            pos = end
            if pos >= n:
                break
        self.index = index
        return o


def sealing(
    data_key: bytes, recording_id: str, key_id: str, chunk_size: int, batch_bytes: int, alg: str = AES_256_GCM
) -> tuple[bytes, ChunkSealer, _Hash, int]:
    """What both writers start from: the encoded header, the chunk sealer bound to it,
    the plaintext's running SHA-256, and the batch capacity (whole chunks)."""
    if alg not in CIPHERS:
        raise ValueError(f"unknown cipher {alg!r}")
    if len(data_key) != CIPHERS[alg][0]:
        raise ValueError(f"{alg} data key must be {CIPHERS[alg][0]} bytes")
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    header = Header(recording_id=recording_id, key_id=key_id, chunk_size=chunk_size, alg=alg).encode()
    sealer = ChunkSealer(data_key, hashlib.sha256(header).digest(), chunk_size, alg)
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
        header, self._sealer, self._sha, self._cap = sealing(
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
        need = sealed_size(self._fill, self._chunk)
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
