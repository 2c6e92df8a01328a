"""The boto3 client of the S3 store, and its errors mapped to the vault's at this
boundary."""

from __future__ import annotations

from typing import Any

from adapters.storage.filesystem import StorageError
from adapters.storage.s3_settings import S3Settings


def make_client(settings: S3Settings) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        s3={
            "addressing_style": "path",
            # The payload is already authenticated end to end (AES-GCM tags, the
            # SHA-256 kept at ingest); signing it would hash every byte once more.
            "payload_signing_enabled": False,
        },
        # CRC32 per request still guards the transfer itself.
        request_checksum_calculation="when_supported",
        response_checksum_validation="when_required",
        max_pool_connections=settings.concurrency + 4,
        retries={"max_attempts": 4, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.endpoint,
        region_name=settings.region,
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
        verify=settings.ca_file if settings.ca_file else None,
        config=config,
    )


def code(exc: Exception) -> str:
    resp = getattr(exc, "response", None) or {}
    return str(resp.get("Error", {}).get("Code", ""))


def status(exc: Exception) -> int:
    resp = getattr(exc, "response", None) or {}
    return int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def storage_error(what: str, exc: Exception) -> StorageError:
    return StorageError(f"对象存储{what}失败 / object store {what_en(what)} failed: {code(exc) or type(exc).__name__}")


_WHAT = {"上传": "upload", "读取": "read", "删除": "delete", "列举": "list", "锁定": "lock"}


def what_en(what: str) -> str:
    return _WHAT.get(what, what)
