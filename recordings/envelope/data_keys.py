"""A recording's data key: made fresh for each recording, stored only wrapped under the
creditor's key-encryption key, outside the blob."""

from __future__ import annotations

import os

from recordings import keywrap
from recordings.envelope.ciphers import AES_256_GCM, CIPHERS

WRAP_VERSION = keywrap.WRAP_VERSION
WRAPPED_KEY_SIZE = keywrap.WRAPPED_KEY_SIZE


def new_data_key(alg: str = AES_256_GCM) -> bytes:
    return os.urandom(CIPHERS[alg][0])


def wrap_context(recording_id: str, key_id: str) -> bytes:
    """What a wrapped data key is bound to: its recording and its own id (the key
    backend adds the KEK's id, see `recordings.keywrap`)."""
    return f"dialgate/data-key/v1|{recording_id}|{key_id}".encode()


def wrap_data_key(kek: bytes, data_key: bytes, *, recording_id: str, key_id: str, kek_id: str) -> bytes:
    """AES-256-GCM key wrap under raw KEK bytes; the AAD binds it to its recording and KEK id."""
    return keywrap.aes_gcm_wrap(kek, kek_id, data_key, wrap_context(recording_id, key_id))


def unwrap_data_key(kek: bytes, wrapped: bytes, *, recording_id: str, key_id: str, kek_id: str) -> bytes:
    return keywrap.aes_gcm_unwrap(kek, kek_id, wrapped, wrap_context(recording_id, key_id))

