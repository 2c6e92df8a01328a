"""Build a `Vault` from the ``[recordings]`` configuration: the blob store (the
filesystem under ``data_dir``, or S3 with ``store = "s3://bucket/prefix"``) and the
configured key provider around a given metadata repository."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from recordings.config import RecordingsConfig, SecretRef
from recordings.errors import ConfigError
from recordings.ports import BlobStore, ChainSealer, Clock, KeyProvider, RecordingRepository
from recordings.vault import Checkpoint, Vault

from adapters.storage.filesystem import FilesystemBlobStore
from adapters.storage.keys import EnvKeyProvider, KeyFileKeyProvider


def read_secret(ref: SecretRef, what: str) -> str:
    """A secret named by the config: an environment variable or a file readable by
    its owner only. The value never appears in an error."""
    if ref.env:
        value = os.environ.get(ref.env, "")
        if not value:
            raise ConfigError(f"{what}: 环境变量 {ref.env} 未设置 / environment variable {ref.env} is not set")
        return value
    path = Path(ref.file)
    try:
        st = path.stat()
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"{what}: 文件权限过宽 / {path} is accessible by group or others; run chmod 600")
        value = path.read_text("utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{what}: 无法读取 / cannot read {path}: {type(exc).__name__}") from exc
    if not value:
        raise ConfigError(f"{what}: 文件为空 / {path} is empty")
    return value


def key_provider(cfg: RecordingsConfig, clock: Clock | None = None) -> KeyProvider:
    if cfg.keys == "env":
        return EnvKeyProvider()
    if cfg.keys == "pkcs11" and cfg.pkcs11 is not None:
        from adapters.storage.pkcs11 import Pkcs11KeyProvider

        pin = read_secret(cfg.pkcs11.pin, "recordings.pkcs11_pin")
        return Pkcs11KeyProvider(cfg.pkcs11.module, cfg.pkcs11.token, pin, clock)
    if cfg.keys == "transit" and cfg.transit is not None:
        from adapters.storage.transit import TransitKeyProvider

        token = read_secret(cfg.transit.token, "recordings.transit_token")
        return TransitKeyProvider(cfg.transit.url, token, mount=cfg.transit.mount, prefix=cfg.transit.prefix)
    return KeyFileKeyProvider(cfg.key_file, clock)


def blob_store(cfg: RecordingsConfig) -> BlobStore:
    if cfg.store.startswith("s3://"):
        from adapters.storage.s3 import S3BlobStore, settings_from_config

        return S3BlobStore.from_settings(settings_from_config(cfg.store, cfg.s3 or {}))
    return FilesystemBlobStore(cfg.data_dir)


def build_vault(
    cfg: RecordingsConfig,
    repo: RecordingRepository,
    clock: Clock,
    *,
    checkpoint: Checkpoint | None = None,
    sealer: ChainSealer | None = None,
) -> Vault:
    return Vault(
        repo,
        blob_store(cfg),
        key_provider(cfg, clock),
        clock=clock,
        retention=cfg.retention,
        max_size=cfg.max_size,
        checkpoint=checkpoint,
        # Where the service administers its own keys, a creditor's first recording
        # makes its key; keys from the environment are managed outside it.
        create_missing_keys=cfg.keys != "env",
        ciphers=cfg.ciphers,
        sealer=sealer,
    )
