"""KEKs inside a PKCS#11 token (an HSM; SoftHSM2 in the tests): they never leave it.

Each creditor's KEK is an AES-256 secret-key object on the token, generated there with
``CKA_SENSITIVE`` true and ``CKA_EXTRACTABLE`` false, labelled
``dialgate/<scope>/<kek id>``. Data keys are wrapped with ``CKM_AES_GCM`` by the token
(a random 96-bit nonce, the vault's context and the KEK id as AAD); the wrapped form is
``0x02 | nonce (12) | ciphertext || tag (16)``, the same 61 bytes as the key file's but
marked as made by a token.

The KEK id starts with its creation time (UTC, to the microsecond), so the newest key
of a scope is the active one and a key was superseded when the next one was made: the
token holds the whole state, nothing beside it can disagree. Destroying a scope deletes
its key objects (every recording of the creditor becomes unreadable: crypto-shredding)
and leaves a data object ``dialgate-destroyed/<scope>`` so the scope is never
silently recreated.

The token's user PIN comes from a file or an environment variable, never the config.
One session is shared by the provider's callers under a lock: PKCS#11 sessions are not
to be used from two threads at once.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
from datetime import datetime, timezone
from typing import Any, Callable

from recordings.errors import ConfigError, IntegrityError, KeyDestroyed, NoSuchKey
from recordings.keywrap import bound_aad

WRAP_VERSION = 2
_PREFIX = "dialgate/"
_TOMBSTONE = "dialgate-destroyed/"
_SCOPE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_STAMP = "%Y%m%dT%H%M%S%fZ"


class Pkcs11KeyProvider:
    def __init__(
        self,
        module: str,
        token_label: str,
        pin: str,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        try:
            import pkcs11
        except ImportError as exc:  # an optional extra: say how to get it
            raise ConfigError("PKCS#11 需要 python-pkcs11 / keys = \"pkcs11\" needs python-pkcs11 (pip install 'dialgate[hsm]')") from exc
        self._p = pkcs11
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        try:
            lib = pkcs11.lib(module)
            token = lib.get_token(token_label=token_label)
            self._session = token.open(user_pin=pin, rw=True)
        except (pkcs11.PKCS11Error, RuntimeError, OSError) as exc:
            # The PIN is never part of the message.
            raise ConfigError(
                f"无法打开 PKCS#11 令牌 / cannot open PKCS#11 token {token_label!r} with {module}: {type(exc).__name__}"
            ) from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._session.close()

    # -- token objects -------------------------------------------------------------

    def _keys(self, scope: str) -> dict[str, Any]:
        p = self._p
        found: dict[str, Any] = {}
        for obj in self._session.get_objects({p.Attribute.CLASS: p.ObjectClass.SECRET_KEY}):
            # python-pkcs11 types get_objects as yielding Object; this template yields SecretKeys.
            label = obj.label or ""  # type: ignore[attr-defined]
            if label.startswith(f"{_PREFIX}{scope}/"):
                found[label[len(_PREFIX) + len(scope) + 1 :]] = obj
        return found

    def _destroyed(self, scope: str) -> bool:
        p = self._p
        return any(
            True
            for _ in self._session.get_objects(
                {p.Attribute.CLASS: p.ObjectClass.DATA, p.Attribute.LABEL: _TOMBSTONE + scope}
            )
        )

    def _live(self, scope: str) -> dict[str, Any]:
        if self._destroyed(scope):
            raise KeyDestroyed(f"委托方 {scope} 的密钥已销毁 / keys of {scope} were destroyed", scope=scope)
        keys = self._keys(scope)
        if not keys:
            raise NoSuchKey(f"委托方 {scope} 在令牌中没有密钥 / no key for {scope} on the token", scope=scope)
        return keys

    def _generate(self, scope: str) -> str:
        p = self._p
        key_id = f"{self._clock().astimezone(timezone.utc):{_STAMP}}-{secrets.token_hex(3)}"
        self._session.generate_key(
            p.KeyType.AES,
            256,
            label=f"{_PREFIX}{scope}/{key_id}",
            id=key_id.encode(),
            store=True,
            template={
                p.Attribute.SENSITIVE: True,
                p.Attribute.EXTRACTABLE: False,
                p.Attribute.ENCRYPT: True,
                p.Attribute.DECRYPT: True,
                p.Attribute.WRAP: False,
                p.Attribute.UNWRAP: False,
                p.Attribute.TOKEN: True,
                p.Attribute.PRIVATE: True,
            },
        )
        return key_id

    # -- KeyProvider ---------------------------------------------------------------

    def active_id(self, scope: str) -> str:
        with self._lock:
            return max(self._live(scope))

    def has(self, scope: str, key_id: str) -> bool:
        with self._lock:
            return not self._destroyed(scope) and key_id in self._keys(scope)

    def _key(self, scope: str, key_id: str) -> Any:
        key = self._live(scope).get(key_id)
        if key is None:
            raise NoSuchKey(f"密钥 {scope}/{key_id} 不在令牌中 / no key {scope}/{key_id} on the token", scope=scope)
        return key

    def _encrypt(self, key: Any, key_id: str, data_key: bytes, context: bytes) -> bytes:
        p = self._p
        nonce = os.urandom(12)
        sealed = key.encrypt(
            data_key, mechanism=p.Mechanism.AES_GCM, mechanism_param=p.GCMParams(nonce, bound_aad(context, key_id), 128)
        )
        return bytes([WRAP_VERSION]) + nonce + bytes(sealed)

    def wrap(self, scope: str, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        with self._lock:
            keys = self._live(scope)
            key_id = max(keys)
            return key_id, self._encrypt(keys[key_id], key_id, data_key, context)

    def _decrypt(self, scope: str, key_id: str, wrapped: bytes, context: bytes) -> bytes:
        p = self._p
        if len(wrapped) < 1 + 12 + 16 or wrapped[0] != WRAP_VERSION:
            raise IntegrityError("封装的数据密钥格式错误 / wrapped data key malformed (not made by a PKCS#11 token)")
        key = self._key(scope, key_id)
        try:
            return bytes(
                key.decrypt(
                    wrapped[13:],
                    mechanism=p.Mechanism.AES_GCM,
                    mechanism_param=p.GCMParams(wrapped[1:13], bound_aad(context, key_id), 128),
                )
            )
        except p.PKCS11Error as exc:
            raise IntegrityError(
                "数据密钥无法解封（密钥错误或被篡改） / data key does not unwrap: wrong KEK or tampered"
            ) from exc

    def unwrap(self, scope: str, key_id: str, wrapped: bytes, context: bytes) -> bytes:
        with self._lock:
            return self._decrypt(scope, key_id, wrapped, context)

    def rewrap(self, scope: str, key_id: str, wrapped: bytes, context: bytes) -> tuple[str, bytes]:
        with self._lock:
            data_key = self._decrypt(scope, key_id, wrapped, context)
            keys = self._live(scope)
            active = max(keys)
            return active, self._encrypt(keys[active], active, data_key, context)

    def create(self, scope: str) -> str:
        if not _SCOPE.match(scope):
            raise ConfigError(f"无效的委托方编号 / invalid creditor id {scope!r} for a key")
        with self._lock:
            if self._destroyed(scope):
                raise KeyDestroyed(
                    f"委托方 {scope} 的密钥已销毁，不会重建 / keys of {scope} were destroyed; not recreating", scope=scope
                )
            keys = self._keys(scope)
            return max(keys) if keys else self._generate(scope)

    def rotate(self, scope: str) -> str:
        with self._lock:
            self._live(scope)
            return self._generate(scope)

    def retire(self, scope: str, key_id: str) -> None:
        with self._lock:
            keys = self._live(scope)
            if key_id == max(keys):
                raise ConfigError(f"不能退役当前密钥 / cannot retire the active key {scope}/{key_id}")
            if key_id in keys:
                keys[key_id].destroy()

    def superseded(self, scope: str) -> dict[str, datetime]:
        with self._lock:
            ids = sorted(self._live(scope))
        return {
            old: datetime.strptime(new.split("-", 1)[0], _STAMP).replace(tzinfo=timezone.utc)
            for old, new in zip(ids, ids[1:])
        }

    def destroy(self, scope: str) -> None:
        p = self._p
        with self._lock:
            if not self._destroyed(scope):
                # The tombstone first: a crash halfway leaves a scope that refuses
                # use, never one that is recreated with its old keys still there.
                self._session.create_object(
                    {
                        p.Attribute.CLASS: p.ObjectClass.DATA,
                        p.Attribute.LABEL: _TOMBSTONE + scope,
                        p.Attribute.TOKEN: True,
                        p.Attribute.VALUE: self._clock().astimezone(timezone.utc).isoformat().encode(),
                    }
                )
            for key in self._keys(scope).values():
                key.destroy()

    def scopes(self) -> list[str]:
        with self._lock:
            p = self._p
            # python-pkcs11 types get_objects as yielding Object; this template yields SecretKeys.
            names = {
                (obj.label or "")[len(_PREFIX) :].rsplit("/", 1)[0]  # type: ignore[attr-defined]
                for obj in self._session.get_objects({p.Attribute.CLASS: p.ObjectClass.SECRET_KEY})
                if (obj.label or "").startswith(_PREFIX)  # type: ignore[attr-defined]
            }
            return sorted(s for s in names if not self._destroyed(s))
