"""`dialgate serve` leaves X-Forwarded-For to the service: uvicorn's own proxy-header
handling, which believes any local client by default, is switched off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import uvicorn
from typer.testing import CliRunner

from dialer import logs
from dialer.cli import app


def test_serve_runs_uvicorn_with_its_proxy_headers_off(tmp_path: Path, monkeypatch: Any) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app_, **kw: seen.update(kw))
    monkeypatch.setattr(logs, "configure_logging", lambda *a, **k: None)  # leave the suite's logging be
    config = tmp_path / "config.toml"
    config.write_text(f'[paths]\ndata_dir = "{tmp_path}"\n[log]\nlevel = "warning"\n')
    r = CliRunner().invoke(app, ["serve", "--config", str(config)])
    assert r.exit_code == 0, (r.output, r.exception)
    assert seen["proxy_headers"] is False
