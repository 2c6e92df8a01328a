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
import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterator, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from recordings.errors import IntegrityError

MAGIC = b"DGREC\x00\x01\x00"
FORMAT_VERSION = 1
CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
KEY_SIZE = 32
MAX_HEADER = 4096
_LEN = struct.Struct(">I")
_NONCE = struct.Struct(">IQ")
_AAD_TAIL = struct.Struct(">QB")

WRAP_VERSION = 1
WRAPPED_KEY_SIZE = 1 + 12 + KEY_SIZE + TAG_SIZE


class Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


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


def new_data_key() -> bytes:
    return os.urandom(KEY_SIZE)


def _nonce(index: int, final: bool) -> bytes:
    return _NONCE.pack(1 if final else 0, index)


def _aad(header_digest: bytes, index: int, final: bool) -> bytes:
    return header_digest + _AAD_TAIL.pack(index, 1 if final else 0)


class EnvelopeWriter:
    """Streams plaintext in, sealed chunks out, holding at most two chunks in memory.

    The last full chunk is held back until more data arrives or `finish` is called,
    because only then is it known whether it is the final one.
    """

    def __init__(
        self,
        out: Writable,
        data_key: bytes,
        *,
        recording_id: str,
        key_id: str,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        if len(data_key) != KEY_SIZE:
            raise ValueError("data key must be 32 bytes")
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self._out = out
        self._aead = AESGCM(data_key)
        self._chunk = chunk_size
        header = Header(recording_id=recording_id, key_id=key_id, chunk_size=chunk_size).encode()
        self._digest = hashlib.sha256(header).digest()
        self._sha = hashlib.sha256()
        self._buf = bytearray()
        self._index = 0
        self._size = 0
        self._head = b""
        self._finished = False
        out.write(header)
        self._written = len(header)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._finished:
            raise ValueError("writer already finished")
        if not data:
            return
        self._sha.update(data)
        self._size += len(data)
        if len(self._head) < 16:
            self._head = (self._head + bytes(data[:16]))[:16]
        buf = self._buf
        buf += data
        chunk = self._chunk
        if len(buf) <= chunk:
            return
        # Seal every full chunk except the last one held back.
        view = memoryview(buf)
        offset = 0
        try:
            while len(buf) - offset > chunk:
                self._seal(view[offset : offset + chunk], final=False)
                offset += chunk
        finally:
            view.release()
        del buf[:offset]

    def _seal(self, plaintext: bytes | memoryview, *, final: bool) -> None:
        sealed = self._aead.encrypt(
            _nonce(self._index, final), plaintext, _aad(self._digest, self._index, final)
        )
        self._out.write(sealed)
        self._written += len(sealed)
        self._index += 1

    def finish(self) -> SealSummary:
        if self._finished:
            raise ValueError("writer already finished")
        self._seal(bytes(self._buf), final=True)
        self._buf = bytearray()
        self._finished = True
        return SealSummary(
            size=self._size,
            sha256=self._sha.hexdigest(),
            chunks=self._index,
            blob_size=self._written,
            head=self._head,
        )


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
    if header.version != FORMAT_VERSION or header.alg != "AES-256-GCM" or header.chunk_size < 1:
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
        self._aead = AESGCM(data_key)
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


def _wrap_aad(recording_id: str, key_id: str, kek_id: str) -> bytes:
    return f"dialgate/data-key/v1|{recording_id}|{key_id}|{kek_id}".encode()


def wrap_data_key(kek: bytes, data_key: bytes, *, recording_id: str, key_id: str, kek_id: str) -> bytes:
    """AES-256-GCM key wrap; the AAD binds the wrapped key to its recording and KEK id."""
    nonce = os.urandom(12)
    return bytes([WRAP_VERSION]) + nonce + AESGCM(kek).encrypt(
        nonce, data_key, _wrap_aad(recording_id, key_id, kek_id)
    )


def unwrap_data_key(kek: bytes, wrapped: bytes, *, recording_id: str, key_id: str, kek_id: str) -> bytes:
    if len(wrapped) != WRAPPED_KEY_SIZE or wrapped[0] != WRAP_VERSION:
        raise IntegrityError("封装的数据密钥格式错误 / wrapped data key malformed")
    try:
        return AESGCM(kek).decrypt(wrapped[1:13], wrapped[13:], _wrap_aad(recording_id, key_id, kek_id))
    except InvalidTag as exc:
        raise IntegrityError(
            "数据密钥无法解封（密钥错误或被篡改） / data key does not unwrap: wrong KEK or tampered"
        ) from exc
