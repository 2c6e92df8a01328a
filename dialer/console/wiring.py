"""The console as the service includes it: `ROUTERS` in `dialer/app.py` lists
"dialer.console.wiring", whose `router` builds its adapter on first use from
`app.state.services` (opened in the app's lifespan).

This module is the console's part of the composition root: the one place in
`dialer.console` that imports an adapter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from fastapi import Request

from dialer.console.config import ConsoleConfigError, console_settings
from dialer.console.router import ConsoleSettings, console_router


def _vault(request: Request, services: Any) -> Any:
    """The recordings vault, wherever the composition root put it (None: not enabled)."""
    for holder in (services, request.app.state):
        vault = getattr(holder, "vault", None)
        if vault is not None:
            return vault
    return None


def _console(request: Request) -> tuple[Any, ConsoleSettings]:
    services = request.app.state.services
    cached = getattr(request.app.state, "console", None)
    vault = _vault(request, services)
    if cached is None or cached[0] is not services or cached[1].vault is not vault:
        from adapters.db.console_queries import SqlAlchemyConsoleQueries

        settings = console_settings(services.config.section("console"), services.config.paths.data_dir)
        # "Today" and session expiry follow the service's clock (fixed in tests, stepped
        # in simulations), like every other time the service shows.
        settings = replace(settings, now=lambda: services.clock.now().timestamp())
        cached = (services, SqlAlchemyConsoleQueries(services, vault), settings)
        request.app.state.console = cached
    return cached[1], cached[2]


@asynccontextmanager
async def check_console_config(services: Any) -> AsyncIterator[None]:
    """Extension (dialer/app.py EXTENSIONS): a bad `[console]` section refuses start-up
    with the key path, like the other sections, instead of failing the first page."""
    from dialer.errors import ConfigError

    try:
        console_settings(services.config.section("console"), services.config.paths.data_dir)
    except ConsoleConfigError as exc:
        raise ConfigError(f"{services.config.source}: {exc}") from exc
    yield None


router = console_router(lambda r: _console(r)[0], lambda r: _console(r)[1])
