"""Reading a sealed blob back: its header checked, then any plaintext range, chunk by chunk."""

from __future__ import annotations

from typing import BinaryIO, Iterator

from cryptography.exceptions import InvalidTag

from recordings.envelope.ciphers import TAG_SIZE, aead_for
from recordings.envelope.layout import aad, nonce, read_header
from recordings.errors import IntegrityError


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
            self._aead = aead_for(header.alg, data_key)
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
                nonce(index, final), sealed, aad(self._digest, index, final)
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
