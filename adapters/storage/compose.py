"""Build a `Vault` from the ``[recordings]`` configuration: the blob store (the
filesystem under ``data_dir``, or S3 with ``store = "s3://bucket/prefix"``) and the
configured key provider around a given metadata repository."""

from __future__ import annotations

from recordings.config import RecordingsConfig
from recordings.ports import BlobStore, ChainSealer, Clock, KeyProvider, RecordingRepository
from recordings.vault import Checkpoint, Vault

from adapters.storage.filesystem import FilesystemBlobStore
from adapters.storage.keys import EnvKeyProvider, KeyFileKeyProvider
from adapters.storage.secrets import read_secret


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

        # typing.BinaryIO is nominal: the store's ranged reader is a seekable binary file
        # (io.RawIOBase) without being declared one.
        return S3BlobStore.from_settings(settings_from_config(cfg.store, cfg.s3 or {}))  # type: ignore[return-value]
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


__all__ = ["blob_store", "build_vault", "key_provider", "read_secret"]
