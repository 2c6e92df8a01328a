"""The S3 store's settings: ``[recordings] store = "s3://bucket/prefix"`` and the
``[recordings.s3]`` table, with the credentials read from files or the environment."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

from recordings.config import SecretRef
from recordings.errors import ConfigError

from adapters.storage.secrets import read_secret

_URL = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?$")


def parse_store_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ("bucket", "some/prefix") (prefix without slashes
    at either end; may be empty)."""
    m = _URL.match(url.strip())
    if not m:
        raise ConfigError(
            f"recordings.store: 应为 s3://存储桶/前缀 / expected s3://bucket/prefix, got {url!r}"
        )
    return m.group(1), (m.group(2) or "").strip("/")


@dataclass(frozen=True, slots=True)
class S3Settings:
    """The ``[recordings.s3]`` table with its secrets resolved (never logged)."""

    bucket: str
    prefix: str
    endpoint: str | None
    region: str
    access_key: str
    secret_key: str
    object_lock: str = "compliance"
    part_size: int = 8 * 1024 * 1024
    concurrency: int = 3
    ca_file: str | None = None

    def __repr__(self) -> str:  # the secret never reaches a log line
        return f"S3Settings(bucket={self.bucket!r}, prefix={self.prefix!r}, endpoint={self.endpoint!r}, object_lock={self.object_lock!r})"


def _secret(table: Mapping[str, Any], name: str, default_env: str, environ: Mapping[str, str]) -> str:
    file = table.get(f"{name}_file")
    if file:
        return read_secret(SecretRef(file=str(file)), f"recordings.s3.{name}_file")
    var = table.get(f"{name}_env") or default_env
    return read_secret(
        SecretRef(env=var), f"recordings.s3.{name}", environ=environ, hint=f" (or give recordings.s3.{name}_file)"
    )


def settings_from_config(url: str, table: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> S3Settings:
    """Resolve ``[recordings] store`` and ``[recordings.s3]`` (validated by
    `recordings.config`) into settings; credentials from the environment or files."""
    env = os.environ if environ is None else environ
    bucket, prefix = parse_store_url(url)
    return S3Settings(
        bucket=bucket,
        prefix=prefix,
        endpoint=table.get("endpoint") or None,
        region=table.get("region") or "us-east-1",
        access_key=_secret(table, "access_key", "DIALGATE_S3_ACCESS_KEY", env),
        secret_key=_secret(table, "secret_key", "DIALGATE_S3_SECRET_KEY", env),
        object_lock=table.get("object_lock", "compliance"),
        part_size=int(table.get("part_size_mb", 8)) * 1024 * 1024,
        concurrency=int(table.get("concurrency", 3)),
        ca_file=table.get("ca_file") or None,
    )
