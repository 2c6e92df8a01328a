"""What every `dialgate` command shares: the error console, loading the config and
running a coroutine, each failing with a one-line reason and exit code 2."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Optional, TypeVar

import typer
from rich.console import Console

from dialer.config import Config, load_config
from dialer.errors import ApiError, ConfigError, DialGateError

T = TypeVar("T")

err = Console(stderr=True, soft_wrap=True)  # one error per line: scripts and tests match on it


def load_config_or_exit(path: Optional[Path], **overrides: dict[str, Any]) -> Config:
    try:
        return load_config(path, overrides={k: v for k, v in overrides.items() if v})
    except ConfigError as exc:
        err.print(f"[red]config error:[/red] {exc}")
        raise typer.Exit(2) from None


def run_or_exit(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except ApiError as exc:
        err.print(f"[red]error:[/red] {exc.detail} {exc.details or ''}")
        raise typer.Exit(2) from None
    except DialGateError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
