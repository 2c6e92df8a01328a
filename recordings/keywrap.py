"""Key wrapping as operations: the half of every key backend that holds raw KEK bytes.

The vault never sees a key-encryption key. It asks its `KeyProvider` to wrap a data
key under the scope's active KEK, to unwrap one, or to rewrap one under the active KEK
after a rotation. Backends that hold raw bytes in this process (the key file, the
environment, the in-memory fake) share `LocalWrapping`, which keeps the wrapped-key
format of FORMAT.md byte for byte; a PKCS#11 token or a transit engine does the same
operations inside the module, and the KEK never leaves it.

`context` is what the vault binds a wrapped key to (its recording and data key,
`envelope.wrap_context`); each backend adds the KEK's id where it can, so a wrapped
key moved to another recording or relabelled with another KEK id does not unwrap.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from recordings.errors import IntegrityError, NoSuchKey

WRAP_VERSION = 1
WRAPPED_KEY_SIZE = 1 + 12 + 32 + 16  # an AES-256 data key; an SM4 one is 16 bytes shorter


def bound_aad(context: bytes, kek_id: str) -> bytes:
    """The wrap's associated data: the vault's context and the KEK id."""
    return context + b"|" + kek_id.encode()


def aes_gcm_wrap(kek: bytes, kek_id: str, data_key: bytes, context: bytes) -> bytes:
    nonce = os.urandom(12)
    return bytes([WRAP_VERSION]) + nonce + AESGCM(kek).encrypt(nonce, data_key, bound_aad(context, kek_id))


def aes_gcm_unwrap(kek: bytes, kek_id: str, wrapped: bytes, context: bytes) -> bytes:
    if len(wrapped) not in (WRAPPED_KEY_SIZE, WRAPPED_KEY_SIZE - 16) or wrapped[0] != WRAP_VERSION:
        raise IntegrityError("封装的数据密钥格式错误 / wrapped data key malformed")
    try:
        return AESGCM(kek).decrypt(wrapped[1:13], wrapped[13:], bound_aad(context, kek_id))
    except InvalidTag as exc:
        raise IntegrityError(
            "数据密钥无法解封（密钥错误或被篡改） / data key does not unwrap: wrong KEK or tampered"
        ) from exc


class LocalWrapping:
    """`wrap`/`unwrap`/`rewrap`/`has`/`active_id` over a backend's `active()` and
    `get()`, which return raw KEK bytes (key file, environment, in-memory)."""

    def active(self, scope: str) -> tuple[str, bytes]:  # pragma: no cover - provided by the backend
        raise NotImplementedError

    def get(self, scope: str, key_id: str) -> bytes:  # pragma: no cover - provided by the backend
        raise NotImplementedError

    def active_id(self, scope: str) -> str:
        return self.active(scope)[0]

    def has(self, scope: str, key_id: str) -> bool:
        try:
            self.get(scope, key_id)
        except NoSuchKey:
            return False
        return True

    def wrap(self, scope: str, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        kek_id, kek = self.active(scope)
        return kek_id, aes_gcm_wrap(kek, kek_id, data_key, context)

    def unwrap(self, scope: str, kek_id: str, wrapped: bytes, context: bytes) -> bytes:
        return aes_gcm_unwrap(self.get(scope, kek_id), kek_id, wrapped, context)

    def rewrap(self, scope: str, kek_id: str, wrapped: bytes, context: bytes) -> tuple[str, bytes]:
        return self.wrap(scope, self.unwrap(scope, kek_id, wrapped, context), context)
