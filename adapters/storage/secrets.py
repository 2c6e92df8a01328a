"""Reading a secret the configuration names: an environment variable, or a file only its
owner may read (a key, PIN or token readable by others is refused, not used). The value
never appears in an error."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from recordings.config import SecretRef
from recordings.errors import ConfigError


def read_secret(ref: SecretRef, what: str, *, environ: Mapping[str, str] | None = None, hint: str = "") -> str:
    """The secret `ref` points at; `what` is the key path errors name, `hint` what else
    could be given when the environment variable is not set."""
    if ref.env:
        value = (os.environ if environ is None else environ).get(ref.env, "").strip()
        if not value:
            raise ConfigError(f"{what}: 环境变量 {ref.env} 未设置 / environment variable {ref.env} is not set{hint}")
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
