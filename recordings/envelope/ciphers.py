"""The data ciphers a recording may be sealed with, named in its header: AES-256-GCM,
and SM4-GCM for creditors that require 国密 algorithms."""

from __future__ import annotations

from typing import Callable, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

TAG_SIZE = 16
KEY_SIZE = 32

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


class Aead(Protocol):
    """The two calls the sealer and the reader make on a data cipher."""

    def encrypt_into(self, nonce: bytes, data: bytes | memoryview, aad: bytes, out: memoryview, /) -> int: ...

    def decrypt(self, nonce: bytes, sealed: bytes, aad: bytes, /) -> bytes: ...


# The data cipher of a recording, named in its header: key size and AEAD.
CIPHERS: dict[str, tuple[int, Callable[[bytes], Aead]]] = {
    AES_256_GCM: (32, AESGCM),
    SM4_GCM: (16, Sm4Gcm),
}


def aead_for(alg: str, data_key: bytes) -> Aead:
    size, make = CIPHERS[alg]
    if len(data_key) != size:
        raise ValueError(f"{alg} data key must be {size} bytes")
    return make(data_key)

