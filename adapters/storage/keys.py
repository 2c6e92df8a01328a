"""Key-encryption-key providers: a key file (``dialgate keys init``) or the environment.

Key file (JSON, mode 0600, outside the database and the recordings directory; the
vault refuses a file readable by group or others)::

    {"format": "dialgate-keys/1",
     "scopes": {"<creditor>": {"active": "<key id>",
                               "keys": {"<key id>": {"key": "<base64 32 bytes>",
                                                      "created_at": "<ISO>",
                                                      "superseded_at": "<ISO>"}},
                               "destroyed_at": null}}}

Every change rewrites the file atomically (temporary 0600 → fsync → rename → fsync
directory) under an exclusive ``flock`` on ``<file>.lock``, so the CLI can rotate
keys while the service runs; the service re-reads the file when it changes.

Environment: ``DIALGATE_KEK_<SCOPE>=<key id>:<base64>[,<key id>:<base64>...]``, the
first one active, SCOPE upper-cased with anything but letters and digits as ``_``
(``_unmatched`` → ``DIALGATE_KEK__UNMATCHED``). Environment keys are managed outside
dialgate: create/rotate/destroy are refused.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import re
import secrets
import stat
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from recordings.errors import ConfigError, KeyDestroyed, NoSuchKey
from recordings.keywrap import LocalWrapping

_SCOPE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
FORMAT = "dialgate-keys/1"


def _check_scope(scope: str) -> None:
    if not _SCOPE.match(scope):
        raise ConfigError(f"无效的委托方编号 / invalid creditor id {scope!r} for a key")


class KeyFileKeyProvider(LocalWrapping):
    def __init__(self, path: str | os.PathLike[str], clock: Callable[[], datetime] | None = None) -> None:
        self.path = Path(path)
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._cache: dict[str, Any] | None = None
        self._stamp: tuple[int, int, int] | None = None

    # -- file handling -------------------------------------------------------------

    def exists(self) -> bool:
        return self.path.exists()

    def _load(self) -> dict[str, Any]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {"format": FORMAT, "scopes": {}}
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"密钥文件权限过宽 / key file {self.path} is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):o}); run chmod 600"
            )
        stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
        if self._cache is not None and stamp == self._stamp:
            return self._cache
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"密钥文件无法读取 / key file {self.path} unreadable: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("scopes"), dict):
            raise ConfigError(f"密钥文件格式错误 / key file {self.path}: expected format {FORMAT}")
        self._cache, self._stamp = data, stamp
        return data

    def _save(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self._cache = None

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write under an exclusive lock shared with other processes."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._cache = None
            data = json.loads(json.dumps(self._load()))  # a private copy to edit
            yield data
            self._save(data)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- KeyProvider ---------------------------------------------------------------

    def _scope(self, data: Mapping[str, Any], scope: str) -> Mapping[str, Any]:
        entry = data["scopes"].get(scope)
        if entry is None:
            raise NoSuchKey(
                f"委托方 {scope} 没有密钥 / no key for {scope} in {self.path}: run `dialgate keys init`",
                scope=scope,
            )
        if entry.get("destroyed_at"):
            raise KeyDestroyed(
                f"委托方 {scope} 的密钥已于 {entry['destroyed_at']} 销毁 / keys of {scope} were destroyed",
                scope=scope,
            )
        return entry  # type: ignore[no-any-return]

    @staticmethod
    def _decode(scope: str, key_id: str, raw: str) -> bytes:
        try:
            key = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConfigError(f"密钥 {scope}/{key_id} 不是 base64 / key {scope}/{key_id} is not base64") from exc
        if len(key) != 32:
            raise ConfigError(f"密钥 {scope}/{key_id} 长度应为 32 字节 / key {scope}/{key_id} must be 32 bytes")
        return key

    def active(self, scope: str) -> tuple[str, bytes]:
        entry = self._scope(self._load(), scope)
        key_id = entry["active"]
        return key_id, self._decode(scope, key_id, entry["keys"][key_id]["key"])

    def get(self, scope: str, key_id: str) -> bytes:
        entry = self._scope(self._load(), scope)
        k = entry["keys"].get(key_id)
        if k is None:
            raise NoSuchKey(f"密钥 {scope}/{key_id} 不存在或已退役 / no key {scope}/{key_id} (retired?)", scope=scope)
        return self._decode(scope, key_id, k["key"])

    def _new_key(self, entry: dict[str, Any]) -> str:
        previous = entry.get("active")
        if previous and previous in entry.get("keys", {}):
            entry["keys"][previous]["superseded_at"] = self._clock().astimezone(timezone.utc).isoformat(timespec="seconds")
        key_id = f"{self._clock().astimezone(timezone.utc):%Y%m%d}-{secrets.token_hex(4)}"
        entry.setdefault("keys", {})[key_id] = {
            "key": base64.b64encode(os.urandom(32)).decode(),
            "created_at": self._clock().astimezone(timezone.utc).isoformat(timespec="seconds"),
        }
        entry["active"] = key_id
        return key_id

    def create(self, scope: str) -> str:
        _check_scope(scope)
        with self._locked() as data:
            entry = data["scopes"].get(scope)
            if entry is not None and entry.get("destroyed_at"):
                raise KeyDestroyed(
                    f"委托方 {scope} 的密钥已销毁，不会重建 / keys of {scope} were destroyed; not recreating",
                    scope=scope,
                )
            if entry is not None and entry.get("active"):
                return str(entry["active"])
            entry = data["scopes"].setdefault(scope, {"keys": {}, "destroyed_at": None})
            return self._new_key(entry)

    def rotate(self, scope: str) -> str:
        _check_scope(scope)
        with self._locked() as data:
            entry = self._scope(data, scope)
            return self._new_key(entry)  # type: ignore[arg-type]

    def retire(self, scope: str, key_id: str) -> None:
        with self._locked() as data:
            entry = data["scopes"][scope]
            if entry.get("active") == key_id:
                raise ConfigError(f"不能退役当前密钥 / cannot retire the active key {scope}/{key_id}")
            entry["keys"].pop(key_id, None)

    def superseded(self, scope: str) -> dict[str, datetime]:
        entry = self._scope(self._load(), scope)
        return {
            kid: datetime.fromisoformat(k["superseded_at"])
            for kid, k in entry["keys"].items()
            if kid != entry.get("active") and k.get("superseded_at")
        }

    def destroy(self, scope: str) -> None:
        with self._locked() as data:
            data["scopes"][scope] = {
                "keys": {},
                "active": None,
                "destroyed_at": self._clock().astimezone(timezone.utc).isoformat(timespec="seconds"),
            }

    def scopes(self) -> list[str]:
        return sorted(s for s, e in self._load()["scopes"].items() if not e.get("destroyed_at"))


def env_var(scope: str) -> str:
    return "DIALGATE_KEK_" + re.sub(r"[^A-Za-z0-9]", "_", scope).upper()


class EnvKeyProvider(LocalWrapping):
    """Read-only KEKs from the environment (e.g. injected by a secrets manager)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._env = os.environ if environ is None else environ

    def _keys(self, scope: str) -> list[tuple[str, bytes]]:
        name = env_var(scope)
        raw = self._env.get(name)
        if not raw:
            raise NoSuchKey(f"环境变量 {name} 未设置 / no key for {scope}: set {name}", scope=scope)
        out = []
        for item in raw.split(","):
            key_id, sep, b64 = item.strip().partition(":")
            if not sep or not key_id:
                raise ConfigError(f"{name}: 应为 <key id>:<base64> / expected <key id>:<base64>[,...]")
            out.append((key_id, KeyFileKeyProvider._decode(scope, key_id, b64)))
        return out

    def active(self, scope: str) -> tuple[str, bytes]:
        return self._keys(scope)[0]

    def get(self, scope: str, key_id: str) -> bytes:
        for kid, key in self._keys(scope):
            if kid == key_id:
                return key
        raise NoSuchKey(f"密钥 {scope}/{key_id} 不在 {env_var(scope)} 中 / key {scope}/{key_id} not in the environment")

    def superseded(self, scope: str) -> dict[str, datetime]:
        return {}  # older keys in the variable are managed outside dialgate

    def _refuse(self, *_: object) -> Any:
        raise ConfigError("环境变量中的密钥须在外部管理 / keys from the environment are managed outside dialgate")

    create = rotate = retire = destroy = _refuse

    def scopes(self) -> list[str]:
        return sorted(k[len("DIALGATE_KEK_") :].lower() for k in self._env if k.startswith("DIALGATE_KEK_"))
