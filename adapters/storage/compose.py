"""Build a `Vault` from the ``[recordings]`` configuration: the blob store (the
filesystem under ``data_dir``, or S3 with ``store = "s3://bucket/prefix"``) and the
configured key provider around a given metadata repository."""

from __future__ import annotations

from recordings.config import RecordingsConfig
from recordings.ports import BlobStore, Clock, KeyProvider, RecordingRepository
from recordings.vault import Checkpoint, Vault

from adapters.storage.filesystem import FilesystemBlobStore
from adapters.storage.keys import EnvKeyProvider, KeyFileKeyProvider


def key_provider(cfg: RecordingsConfig, clock: Clock | None = None) -> KeyProvider:
    return EnvKeyProvider() if cfg.keys == "env" else KeyFileKeyProvider(cfg.key_file, clock)


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
) -> Vault:
    return Vault(
        repo,
        blob_store(cfg),
        key_provider(cfg, clock),
        clock=clock,
        retention=cfg.retention,
        max_size=cfg.max_size,
        checkpoint=checkpoint,
        create_missing_keys=cfg.keys == "file",
    )
