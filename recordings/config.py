"""The ``[recordings]`` table of ``config.toml``, typed. Defaults in one block::

    [recordings]
    data_dir = "<paths.data_dir>/recordings"     # sealed blobs (ciphertext only)
    keys = "file"                                # "file" | "env" (DIALGATE_KEK_<CREDITOR>)
    key_file = "<paths.data_dir>/keys/recordings.keys"   # 0600; keep out of data backups
    retention = "730d"                           # at least 730 days
    max_size_mb = 2048                           # larger uploads get 413
    upload_idle_timeout_s = 60                   # an upload silent this long is dropped (408)
    inbox = ""                                   # drop folder for PBXs writing files; "" = off

    [recordings.creditors.bank-b]
    retention = "1095d"

Unknown keys are refused with their path (``recordings.retension: unknown key``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from recordings.errors import ConfigError
from recordings.retention import RetentionPolicy

DEFAULTS: dict[str, Any] = {
    "data_dir": None,  # <paths.data_dir>/recordings
    "keys": "file",
    "key_file": None,  # <paths.data_dir>/keys/recordings.keys
    "retention": "730d",
    "max_size_mb": 2048,
    "upload_idle_timeout_s": 60,
    "inbox": "",
    "creditors": {},
}
_CREDITOR_KEYS = {"retention"}


@dataclass(frozen=True, slots=True)
class RecordingsConfig:
    data_dir: Path
    keys: str
    key_file: Path
    retention: RetentionPolicy
    max_size: int
    upload_idle_timeout_s: float
    inbox: Path | None
    creditors: tuple[str, ...]  # creditors named in [recordings.creditors.*]


def parse_recordings_config(raw: Mapping[str, Any] | None, base_dir: str | Path = "./var") -> RecordingsConfig:
    raw = dict(raw or {})
    for key in raw:
        if key not in DEFAULTS:
            raise ConfigError(f"recordings.{key}: 未知配置项 / unknown key")
    values = {**DEFAULTS, **raw}
    base = Path(base_dir)

    def path(key: str, default: Path) -> Path:
        v = values[key]
        if v is None:
            return default
        if not isinstance(v, str) or not v.strip():
            raise ConfigError(f"recordings.{key}: 应为路径 / expected a path string, got {v!r}")
        return Path(v)

    if values["keys"] not in ("file", "env"):
        raise ConfigError(f"recordings.keys: 应为 \"file\" 或 \"env\" / expected \"file\" or \"env\", got {values['keys']!r}")
    size = values["max_size_mb"]
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 64 * 1024:
        raise ConfigError(f"recordings.max_size_mb: 应为 1..65536 的整数 / expected an integer 1..65536, got {size!r}")
    idle = values["upload_idle_timeout_s"]
    if isinstance(idle, bool) or not isinstance(idle, (int, float)) or not 0 < idle <= 3600:
        raise ConfigError(
            f"recordings.upload_idle_timeout_s: 应为 0..3600 秒 / expected seconds in (0, 3600], got {idle!r}"
        )
    inbox = values["inbox"]
    if not isinstance(inbox, str):
        raise ConfigError(f"recordings.inbox: 应为路径 / expected a path string, got {inbox!r}")
    creditors = values["creditors"]
    if not isinstance(creditors, Mapping):
        raise ConfigError("recordings.creditors: 应为表 / expected a table of creditors")
    per_creditor: dict[str, Any] = {}
    for creditor, table in creditors.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"recordings.creditors.{creditor}: 应为表 / expected a table")
        for key in table:
            if key not in _CREDITOR_KEYS:
                raise ConfigError(f"recordings.creditors.{creditor}.{key}: 未知配置项 / unknown key")
        if "retention" in table:
            per_creditor[creditor] = table["retention"]
    retention = RetentionPolicy.from_config(values["retention"], per_creditor)
    return RecordingsConfig(
        data_dir=path("data_dir", base / "recordings"),
        keys=values["keys"],
        key_file=path("key_file", base / "keys" / "recordings.keys"),
        retention=retention,
        max_size=size * 1024 * 1024,
        upload_idle_timeout_s=float(idle),
        inbox=Path(inbox) if inbox.strip() else None,
        creditors=tuple(sorted(creditors)),
    )
