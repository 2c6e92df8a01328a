"""The ``[recordings]`` table of ``config.toml``, typed. Defaults in one block::

    [recordings]
    data_dir = "<paths.data_dir>/recordings"     # sealed blobs (ciphertext only)
    keys = "file"                                # "file" | "env" (DIALGATE_KEK_<CREDITOR>) | "pkcs11" | "transit"
    key_file = "<paths.data_dir>/keys/recordings.keys"   # 0600; keep out of data backups
    pkcs11_module = "/usr/lib/softhsm/libsofthsm2.so"     # keys = "pkcs11": the token's library
    pkcs11_token = ""                            # token label
    pkcs11_pin_env = "" / pkcs11_pin_file = ""   # the user PIN, by variable name or file
    transit_url = ""                             # keys = "transit": e.g. https://kms.internal:8200
    transit_mount = "transit"
    transit_prefix = "dialgate-"                 # key name = prefix + creditor
    transit_token_env = "" / transit_token_file = ""
    retention = "730d"                           # at least 730 days
    max_size_mb = 2048                           # larger uploads get 413
    upload_idle_timeout_s = 60                   # an upload silent this long is dropped (408)
    inbox = ""                                   # drop folder for PBXs writing files; "" = off
    expect_within = "10m"                        # a connected call's recording must arrive this long
                                                 # after the call ends, or alert.recording_missing; "off"
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
    cipher = "sm4-gcm"                           # data cipher: "aes-256-gcm" (default) | "sm4-gcm"

Unknown keys are refused with their path (``recordings.retension: unknown key``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping

from policy.model import CREDITOR_ID
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
    "expect_within": "10m",
    "pkcs11_module": "/usr/lib/softhsm/libsofthsm2.so",
    "pkcs11_token": "",
    "pkcs11_pin_env": "",
    "pkcs11_pin_file": "",
    "transit_url": "",
    "transit_mount": "transit",
    "transit_prefix": "dialgate-",
    "transit_token_env": "",
    "transit_token_file": "",
    "store": "",
    "s3": {},
    "creditors": {},
}
_CREDITOR_KEYS = {"retention", "cipher"}
KEY_BACKENDS = ("file", "env", "pkcs11", "transit")
# config name → the envelope header's name of the data cipher
CIPHER_NAMES = {"aes-256-gcm": "AES-256-GCM", "sm4-gcm": "SM4-GCM"}


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where a secret is: an environment variable's name or a file's path (never
    the secret itself, which stays out of the config)."""

    env: str = ""
    file: str = ""


@dataclass(frozen=True, slots=True)
class Pkcs11Settings:
    module: str
    token: str
    pin: SecretRef


@dataclass(frozen=True, slots=True)
class TransitSettings:
    url: str
    mount: str
    prefix: str
    token: SecretRef
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
    ciphers: dict[str, str] = field(default_factory=dict)  # creditor → envelope cipher name
    expect_within: timedelta | None = timedelta(minutes=10)  # None: completeness not watched
    pkcs11: Pkcs11Settings | None = None
    transit: TransitSettings | None = None
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

    if values["keys"] not in KEY_BACKENDS:
        raise ConfigError(
            f"recordings.keys: 应为 {' / '.join(KEY_BACKENDS)} / expected one of {', '.join(KEY_BACKENDS)}, "
            f"got {values['keys']!r}"
        )
    for key in DEFAULTS:
        if key.startswith(("pkcs11_", "transit_")) and not isinstance(values[key], str):
            raise ConfigError(f"recordings.{key}: 应为字符串 / expected a string, got {values[key]!r}")

    def secret(name: str) -> SecretRef:
        ref = SecretRef(env=values[f"{name}_env"].strip(), file=values[f"{name}_file"].strip())
        if bool(ref.env) == bool(ref.file):
            raise ConfigError(
                f"recordings.{name}_env / recordings.{name}_file: 须且只须设置一个 / set exactly one "
                f"(keys = {values['keys']!r} needs it)"
            )
        return ref

    pkcs11 = transit = None
    if values["keys"] == "pkcs11":
        if not values["pkcs11_token"].strip():
            raise ConfigError("recordings.pkcs11_token: keys = \"pkcs11\" 需要令牌标签 / needs the token label")
        pkcs11 = Pkcs11Settings(values["pkcs11_module"], values["pkcs11_token"], secret("pkcs11_pin"))
    if values["keys"] == "transit":
        if not values["transit_url"].startswith(("http://", "https://")):
            raise ConfigError(
                f"recordings.transit_url: 应为 http(s) 地址 / expected an http(s) URL, got {values['transit_url']!r}"
            )
        transit = TransitSettings(
            values["transit_url"], values["transit_mount"], values["transit_prefix"], secret("transit_token")
        )
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
    expect = values["expect_within"]
    m = re.fullmatch(r"([0-9]{1,5})(s|m|h)", expect) if isinstance(expect, str) else None
    if expect == "off":
        expect_within = None
    elif m is None or int(m.group(1)) == 0:
        raise ConfigError(
            f"recordings.expect_within: 应为时长如 \"10m\" 或 \"off\" / expected a duration like \"10m\", "
            f"\"600s\", \"1h\", or \"off\", got {expect!r}"
        )
    else:
        expect_within = timedelta(seconds=int(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)])
    creditors = values["creditors"]
    if not isinstance(creditors, Mapping):
        raise ConfigError("recordings.creditors: 应为表 / expected a table of creditors")
    per_creditor: dict[str, Any] = {}
    ciphers: dict[str, str] = {}
    for creditor, table in creditors.items():
        if not isinstance(creditor, str) or not CREDITOR_ID.match(creditor):
            # Recordings carry their case's creditor id: under another spelling the
            # retention and cipher would never apply, and the default (shorter) one would.
            raise ConfigError(f"recordings.creditors.{creditor}: 委托方编号须与案件中的写法一致（小写字母、数字、'.'、'_'、'-'）"
                              " / creditor id as cases carry it: lower-case letters, digits, '.', '_' or '-'")
        if not isinstance(table, Mapping):
            raise ConfigError(f"recordings.creditors.{creditor}: 应为表 / expected a table")
        for key in table:
            if key not in _CREDITOR_KEYS:
                raise ConfigError(f"recordings.creditors.{creditor}.{key}: 未知配置项 / unknown key")
        if "retention" in table:
            per_creditor[creditor] = table["retention"]
        if "cipher" in table:
            if table["cipher"] not in CIPHER_NAMES:
                raise ConfigError(
                    f"recordings.creditors.{creditor}.cipher: 应为 {' / '.join(CIPHER_NAMES)} / expected one of "
                    f"{', '.join(CIPHER_NAMES)}, got {table['cipher']!r}"
                )
            ciphers[str(creditor)] = CIPHER_NAMES[table["cipher"]]
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
        ciphers=ciphers,
        expect_within=expect_within,
        pkcs11=pkcs11,
        transit=transit,
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
            if not isinstance(value, int) or not lo <= value <= hi:
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
