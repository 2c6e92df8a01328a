"""The ``[recordings]`` table of ``config.toml``, typed. Defaults in one block::

    [recordings]
    data_dir = "<paths.data_dir>/recordings"     # sealed blobs (ciphertext only)
    keys = "file"                                # "file" | "env" (DIALGATE_KEK_<CREDITOR>)
    key_file = "<paths.data_dir>/keys/recordings.keys"   # 0600; keep out of data backups
    retention = "730d"                           # at least 730 days
    max_size_mb = 2048                           # larger uploads get 413
    upload_idle_timeout_s = 60                   # an upload silent this long is dropped (408)
    inbox = ""                                   # drop folder for PBXs writing files; "" = off
    store = ""                                   # "" = data_dir; "s3://bucket/prefix" = object store

    [recordings.s3]                              # only with store = "s3://..."
    endpoint = "https://s3.internal:9000"        # "" = AWS's own
    region = "us-east-1"
    access_key_env = "DIALGATE_S3_ACCESS_KEY"    # or access_key_file
    secret_key_env = "DIALGATE_S3_SECRET_KEY"    # or secret_key_file
    object_lock = "compliance"                   # "compliance" | "governance" | "off"
    part_size_mb = 8                             # multipart part size, 5..512
    concurrency = 3                              # parts in flight per upload, 1..16
    ca_file = ""                                 # private CA for the endpoint's TLS

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
    "store": "",
    "s3": {},
    "creditors": {},
}
_CREDITOR_KEYS = {"retention"}
_S3_KEYS = {
    "endpoint": str,
    "region": str,
    "access_key_env": str,
    "access_key_file": str,
    "secret_key_env": str,
    "secret_key_file": str,
    "object_lock": str,
    "part_size_mb": int,
    "concurrency": int,
    "ca_file": str,
}
_S3_LIMITS = {"part_size_mb": (5, 512), "concurrency": (1, 16)}


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
    store: str = ""  # "" = the filesystem under data_dir; "s3://bucket/prefix"
    s3: Mapping[str, Any] | None = None  # [recordings.s3], validated; secrets by name only


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
    store = values["store"]
    if not isinstance(store, str) or not (store.strip() == "" or store.strip().startswith("s3://")):
        raise ConfigError(
            f"recordings.store: 应为空或 s3://存储桶/前缀 / expected \"\" or \"s3://bucket/prefix\", got {store!r}"
        )
    s3 = _s3_table(values["s3"])
    return RecordingsConfig(
        data_dir=path("data_dir", base / "recordings"),
        keys=values["keys"],
        key_file=path("key_file", base / "keys" / "recordings.keys"),
        retention=retention,
        max_size=size * 1024 * 1024,
        upload_idle_timeout_s=float(idle),
        inbox=Path(inbox) if inbox.strip() else None,
        creditors=tuple(sorted(creditors)),
        store=store.strip(),
        s3=s3,
    )


def _s3_table(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError("recordings.s3: 应为表 / expected a table")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        kind = _S3_KEYS.get(key)
        if kind is None:
            raise ConfigError(f"recordings.s3.{key}: 未知配置项 / unknown key")
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ConfigError(f"recordings.s3.{key}: 应为{'整数' if kind is int else '字符串'} / expected {kind.__name__}, got {value!r}")
        if key in _S3_LIMITS:
            lo, hi = _S3_LIMITS[key]
            if not lo <= value <= hi:
                raise ConfigError(f"recordings.s3.{key}: 应在 {lo}..{hi} / expected {lo}..{hi}, got {value!r}")
        out[key] = value
    lock = out.get("object_lock", "compliance")
    if lock not in ("compliance", "governance", "off"):
        raise ConfigError(
            f"recordings.s3.object_lock: 应为 compliance、governance 或 off / expected compliance|governance|off, got {lock!r}"
        )
    for name in ("access_key", "secret_key"):
        if out.get(f"{name}_env") and out.get(f"{name}_file"):
            raise ConfigError(f"recordings.s3.{name}_env / {name}_file: 只能给一个 / give one, not both")
    return out
