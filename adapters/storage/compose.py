"""Build a `Vault` from the ``[recordings]`` configuration: the filesystem blob store
and the configured key provider around a given metadata repository."""

from __future__ import annotations

from recordings.config import RecordingsConfig
from recordings.ports import ChainSealer, Clock, KeyProvider, RecordingRepository
from recordings.vault import Checkpoint, Vault

from adapters.storage.filesystem import FilesystemBlobStore
from adapters.storage.keys import EnvKeyProvider, KeyFileKeyProvider


def key_provider(cfg: RecordingsConfig, clock: Clock | None = None) -> KeyProvider:
    return EnvKeyProvider() if cfg.keys == "env" else KeyFileKeyProvider(cfg.key_file, clock)


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
        FilesystemBlobStore(cfg.data_dir),
        key_provider(cfg, clock),
        clock=clock,
        retention=cfg.retention,
        max_size=cfg.max_size,
        checkpoint=checkpoint,
        create_missing_keys=cfg.keys == "file",
        sealer=sealer,
    )
