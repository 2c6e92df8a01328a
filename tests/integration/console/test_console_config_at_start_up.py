"""A bad `[console]` section refuses start-up with the key path (like `[sip]`,
`[mqtt]`, ...), instead of a 500 on the first console request."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.net import free_port

REPO = Path(__file__).resolve().parents[3]


def serve(tmp_path: Path, console: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[paths]\ndata_dir = "{tmp_path / "var"}"\n[log]\nlevel = "warning"\n[console]\n{console}\n',
        encoding="utf-8",
    )
    # A service that wrongly starts keeps running: the timeout fails the test.
    return subprocess.run(
        [sys.executable, "-m", "dialer.cli", "serve", "--config", str(cfg), "--host", "127.0.0.1",
         "--port", str(free_port())],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=30,
    )


@pytest.mark.parametrize(
    ("console", "names"),
    [
        ("page_size = 5", "console.page_size"),
        ('display_tz = "Mars/Olympus"', "console.display_tz"),
        ("colour = \"red\"", "console.colour"),
        ('secret_env = "DIALGATE_TEST_NO_SUCH_VARIABLE"', "console.secret_env"),
    ],
)
def test_dialgate_serve_with_a_bad_console_key_exits_non_zero_naming_the_key(
    tmp_path: Path, console: str, names: str
) -> None:
    done = serve(tmp_path, console)
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert "config.toml" in out and names in out, out[-2000:]
    assert "Application startup failed" in out, out[-2000:]
