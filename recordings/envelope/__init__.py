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

This package is pure: it reads and writes file-like objects handed to it and never
opens files itself.

    layout      the magic, the canonical header, each chunk's nonce and AAD; `read_header`
    ciphers     the data ciphers (AES-256-GCM, SM4-GCM) behind one two-call protocol
    data_keys   a recording's data key: made fresh, wrapped under the creditor's KEK
    writer      the chunk sealer both writers share, and `EnvelopeWriter` (one thread)
    pipeline    `PipelinedEnvelopeWriter`: the same bytes, hashed and written on threads
    reader      `EnvelopeReader`: random access, every chunk authenticated
"""

from recordings.envelope.ciphers import AES_256_GCM, CIPHERS, KEY_SIZE, SM4_GCM, TAG_SIZE, Sm4Gcm
from recordings.envelope.data_keys import (
    WRAP_VERSION,
    WRAPPED_KEY_SIZE,
    new_data_key,
    unwrap_data_key,
    wrap_context,
    wrap_data_key,
)
from recordings.envelope.layout import CHUNK_SIZE, FORMAT_VERSION, MAGIC, MAX_HEADER, Header, read_header
from recordings.envelope.pipeline import PipelinedEnvelopeWriter
from recordings.envelope.reader import EnvelopeReader
from recordings.envelope.writer import BATCH_BYTES, EnvelopeWriter, SealSummary, Writable

__all__ = [
    "AES_256_GCM", "BATCH_BYTES", "CHUNK_SIZE", "CIPHERS", "FORMAT_VERSION", "KEY_SIZE", "MAGIC", "MAX_HEADER",
    "SM4_GCM", "TAG_SIZE", "WRAPPED_KEY_SIZE", "WRAP_VERSION", "EnvelopeReader", "EnvelopeWriter", "Header",
    "PipelinedEnvelopeWriter", "SealSummary", "Sm4Gcm", "Writable", "new_data_key", "read_header",
    "unwrap_data_key", "wrap_context", "wrap_data_key",
]
