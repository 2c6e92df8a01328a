"""The byte layout of a sealed blob: the magic, the canonical header, and the nonce
and AAD that bind each chunk to its place and its recording."""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from typing import BinaryIO

from recordings.envelope.ciphers import CIPHERS, TAG_SIZE
from recordings.errors import IntegrityError

MAGIC = b"DGREC\x00\x01\x00"
FORMAT_VERSION = 1
CHUNK_SIZE = 64 * 1024
MAX_HEADER = 4096
LEN = struct.Struct(">I")
_NONCE = struct.Struct(">IQ")
_AAD_TAIL = struct.Struct(">QB")


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
        return MAGIC + LEN.pack(len(body)) + body


def nonce(index: int, final: bool) -> bytes:
    return _NONCE.pack(1 if final else 0, index)


def aad(header_digest: bytes, index: int, final: bool) -> bytes:
    return header_digest + _AAD_TAIL.pack(index, 1 if final else 0)


def sealed_size(plain: int, chunk: int) -> int:
    """Bytes that `plain` plaintext bytes take once sealed (an empty run: one tag)."""
    return plain + TAG_SIZE * max(1, -(-plain // chunk))


def read_header(f: BinaryIO) -> tuple[Header, bytes, int]:
    """Parse the header at the start of `f`: (header, header digest, header length)."""
    f.seek(0)
    prefix = f.read(len(MAGIC) + LEN.size)
    if len(prefix) < len(MAGIC) + LEN.size or prefix[: len(MAGIC)] != MAGIC:
        raise IntegrityError(
            "不是录音密文文件或文件头已损坏 / not a sealed recording: bad magic or truncated header"
        )
    (length,) = LEN.unpack(prefix[len(MAGIC) :])
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
