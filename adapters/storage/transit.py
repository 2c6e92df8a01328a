"""KEKs in a Vault-compatible transit engine (OpenBao, HashiCorp Vault): they never
leave the KMS.

Each creditor's KEK is a transit key ``<prefix><scope>`` of type ``aes256-gcm96``,
not exportable; its versions are the KEK ids (``v1``, ``v2``…). Wrapping a data key is
``POST <mount>/encrypt/<name>`` with the vault's context as ``associated_data``; the
wrapped key is the engine's ciphertext (``vault:v2:…``), whose version prefix must match
the KEK id it is stored with. Rotation is the engine's ``rotate``; a version is retired
by raising ``min_decryption_version`` and trimming; destroying a scope deletes the key
(crypto-shredding) and creates an unused marker key ``<prefix>destroyed-<scope>`` so the
scope is never silently recreated.

The engine's ``rewrap`` endpoint does not take associated data, so a rewrap decrypts
and encrypts again: the data key is in this process's memory for that moment, as it is
whenever the vault reads a recording.

Calls are blocking HTTP with short time-outs; the vault makes them off the event loop.
The token comes from a file or an environment variable and never appears in logs or
errors.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime, timezone
from typing import Any

import httpx

from recordings.errors import ConfigError, IntegrityError, KeyDestroyed, NoSuchKey, VaultError

_SCOPE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_VERSION = re.compile(r"^vault:(v[0-9]+):")


class KmsUnavailable(VaultError):
    """The transit engine did not answer usably (network, auth, server error)."""


class TransitKeyProvider:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        mount: str = "transit",
        prefix: str = "dialgate-",
        timeout_s: float = 5.0,
    ) -> None:
        self._http = httpx.Client(
            base_url=url.rstrip("/") + "/v1/" + mount.strip("/") + "/",
            headers={"X-Vault-Token": token},
            timeout=timeout_s,
        )
        self._prefix = prefix

    def close(self) -> None:
        self._http.close()

    # -- HTTP ----------------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            return self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise KmsUnavailable(f"密钥管理服务不可用 / transit engine unreachable: {type(exc).__name__}") from exc

    def _ok(self, resp: httpx.Response, what: str) -> dict[str, Any]:
        if resp.status_code in (200, 204):
            return (resp.json().get("data") or {}) if resp.content else {}
        raise KmsUnavailable(f"密钥管理服务拒绝 / transit engine refused {what}: HTTP {resp.status_code}")

    def _name(self, scope: str) -> str:
        if not _SCOPE.match(scope):
            raise ConfigError(f"无效的委托方编号 / invalid creditor id {scope!r} for a key")
        return self._prefix + scope

    def _marker(self, scope: str) -> str:
        return self._prefix + "destroyed-" + scope

    def _exists(self, name: str) -> dict[str, Any] | None:
        resp = self._call("GET", f"keys/{name}")
        if resp.status_code == 404:
            return None
        return self._ok(resp, f"reading key {name}")

    def _destroyed(self, scope: str) -> bool:
        return self._exists(self._marker(scope)) is not None

    def _info(self, scope: str) -> dict[str, Any]:
        info = self._exists(self._name(scope))
        if info is None:
            if self._destroyed(scope):
                raise KeyDestroyed(f"委托方 {scope} 的密钥已销毁 / keys of {scope} were destroyed", scope=scope)
            raise NoSuchKey(f"委托方 {scope} 在密钥管理服务中没有密钥 / no transit key for {scope}", scope=scope)
        return info

    @staticmethod
    def _b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    # -- KeyProvider ---------------------------------------------------------------

    def active_id(self, scope: str) -> str:
        return f"v{self._info(scope)['latest_version']}"

    def has(self, scope: str, key_id: str) -> bool:
        try:
            info = self._info(scope)
        except (NoSuchKey, KeyDestroyed):
            return False
        n = int(key_id[1:]) if re.fullmatch(r"v[0-9]+", key_id) else 0
        return int(info["min_decryption_version"]) <= n <= int(info["latest_version"])

    def wrap(self, scope: str, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        # The engine's encrypt creates a missing key on the fly (a destroyed scope
        # would come back): look first. The service's token should also lack the
        # "create" capability on <mount>/encrypt/*, see the README.
        self._info(scope)
        resp = self._call(
            "POST", f"encrypt/{self._name(scope)}", {"plaintext": self._b64(data_key), "associated_data": self._b64(context)}
        )
        data = self._ok(resp, "encrypt")
        ciphertext = str(data["ciphertext"])
        m = _VERSION.match(ciphertext)
        if m is None:
            raise KmsUnavailable("密钥管理服务返回格式错误 / transit engine returned an unexpected ciphertext")
        return m.group(1), ciphertext.encode()

    def unwrap(self, scope: str, key_id: str, wrapped: bytes, context: bytes) -> bytes:
        text = wrapped.decode("ascii", "replace")
        m = _VERSION.match(text)
        if m is None or m.group(1) != key_id:
            raise IntegrityError("封装的数据密钥与密钥版本不符 / wrapped data key does not belong to KEK " + key_id)
        resp = self._call(
            "POST", f"decrypt/{self._name(scope)}", {"ciphertext": text, "associated_data": self._b64(context)}
        )
        if resp.status_code == 400:
            if not self.has(scope, key_id):
                self._info(scope)
                raise NoSuchKey(f"密钥 {scope}/{key_id} 已退役 / key {scope}/{key_id} was retired", scope=scope)
            raise IntegrityError(
                "数据密钥无法解封（密钥错误或被篡改） / data key does not unwrap: wrong KEK or tampered"
            )
        if resp.status_code == 404:
            self._info(scope)
        return base64.b64decode(self._ok(resp, "decrypt")["plaintext"])

    def rewrap(self, scope: str, key_id: str, wrapped: bytes, context: bytes) -> tuple[str, bytes]:
        return self.wrap(scope, self.unwrap(scope, key_id, wrapped, context), context)

    def create(self, scope: str) -> str:
        name = self._name(scope)
        if self._destroyed(scope):
            raise KeyDestroyed(
                f"委托方 {scope} 的密钥已销毁，不会重建 / keys of {scope} were destroyed; not recreating", scope=scope
            )
        if self._exists(name) is None:
            self._ok(self._call("POST", f"keys/{name}", {"type": "aes256-gcm96", "exportable": False}), "create")
        return self.active_id(scope)

    def rotate(self, scope: str) -> str:
        self._info(scope)
        self._ok(self._call("POST", f"keys/{self._name(scope)}/rotate"), "rotate")
        return self.active_id(scope)

    def retire(self, scope: str, key_id: str) -> None:
        info = self._info(scope)
        n = int(key_id[1:])
        if n >= int(info["latest_version"]):
            raise ConfigError(f"不能退役当前密钥 / cannot retire the active key {scope}/{key_id}")
        # Transit retires from the oldest up: every version up to n goes.
        floor = max(int(info["min_decryption_version"]), n + 1)
        name = self._name(scope)
        self._ok(
            self._call("POST", f"keys/{name}/config", {"min_decryption_version": floor, "min_encryption_version": floor}),
            "retire",
        )
        self._ok(self._call("POST", f"keys/{name}/trim", {"min_available_version": floor}), "trim")

    def superseded(self, scope: str) -> dict[str, datetime]:
        info = self._info(scope)
        versions = {int(v): t for v, t in info["keys"].items()}
        low, latest = int(info["min_decryption_version"]), int(info["latest_version"])
        out = {}
        for v in range(low, latest):
            t = versions.get(v + 1)
            if t is None:
                continue
            out[f"v{v}"] = (
                datetime.fromtimestamp(t, timezone.utc)
                if isinstance(t, (int, float))
                else datetime.fromisoformat(str(t).replace("Z", "+00:00"))
            )
        return out

    def destroy(self, scope: str) -> None:
        name = self._name(scope)
        marker = self._marker(scope)
        if self._exists(marker) is None:
            # The marker first: a crash halfway leaves a scope that refuses use,
            # never one that is recreated later.
            self._ok(self._call("POST", f"keys/{marker}", {"type": "aes256-gcm96", "exportable": False}), "mark")
        if self._exists(name) is not None:
            self._ok(self._call("POST", f"keys/{name}/config", {"deletion_allowed": True}), "allow deletion")
            self._ok(self._call("DELETE", f"keys/{name}"), "delete")

    def scopes(self) -> list[str]:
        resp = self._call("LIST", "keys")
        if resp.status_code == 404:
            return []
        names = self._ok(resp, "list").get("keys") or []
        marked = {n[len(self._prefix) + len("destroyed-") :] for n in names if n.startswith(self._prefix + "destroyed-")}
        return sorted(
            n[len(self._prefix) :]
            for n in names
            if n.startswith(self._prefix) and not n.startswith(self._prefix + "destroyed-")
            and n[len(self._prefix) :] not in marked
        )
