"""Recording metadata in one JSON file: for single-process tools (the CLI on a
machine without the service database, crash tests), never for the service, which uses
the SQL repository. Every mutation rewrites the file atomically (temporary → fsync →
rename → fsync directory), so a crash leaves the previous or the next state, whole.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from recordings.errors import ConfigError
from recordings.memory import InMemoryRecordingRepository


class JsonFileRecordingRepository(InMemoryRecordingRepository):
    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)
        if self.path.exists():
            try:
                self.restore(json.loads(self.path.read_text("utf-8")))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"元数据文件无法读取 / metadata file {self.path} unreadable: {exc}") from exc

    def _changed(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.snapshot(), f, ensure_ascii=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
