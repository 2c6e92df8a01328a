"""The console as the service includes it: `dialer.bootstrap` mounts
`console_router_over(make_queries)`, whose router builds its `ConsoleQueries` on first
use from `app.state.services` (opened in the app's lifespan) with the factory the
composition root passed in, so nothing here imports an adapter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request

from dialer.console.config import ConsoleConfigError, console_settings
from dialer.console.ports import ConsoleQueries
from dialer.console.router import ConsoleSettings, console_router
from dialer.services import Services

if TYPE_CHECKING:
    from recordings.vault import Vault

QueriesFactory = Callable[[Services, "Vault | None"], ConsoleQueries]
_STATE_KEY = "console"


def console_router_over(make_queries: QueriesFactory) -> APIRouter:
    """The `/console` pages over the queries `make_queries(services, vault)` returns,
    rebuilt when the services or the running vault change."""

    def console(request: Request) -> tuple[ConsoleQueries, ConsoleSettings]:
        services: Services = request.app.state.services
        cached = getattr(request.app.state, _STATE_KEY, None)  # app.state holds no console until the first page
        vault = services.vault
        if cached is None or cached[0] is not services or cached[3] is not vault:
            settings = console_settings(services.config.section("console"), services.config.paths.data_dir)
            # "Today" and session expiry follow the service's clock (fixed in tests, stepped
            # in simulations), like every other time the service shows.
            settings = replace(settings, now=lambda: services.clock.now().timestamp())
            cached = (services, make_queries(services, vault), settings, vault)
            setattr(request.app.state, _STATE_KEY, cached)
        return cached[1], cached[2]

    return console_router(lambda r: console(r)[0], lambda r: console(r)[1])


@asynccontextmanager
async def check_console_config(services: Services) -> AsyncIterator[None]:
    """Extension: a bad `[console]` section refuses start-up with the key path, like
    the other sections, instead of failing the first page."""
    from dialer.errors import ConfigError

    try:
        console_settings(services.config.section("console"), services.config.paths.data_dir)
    except ConsoleConfigError as exc:
        raise ConfigError(f"{services.config.source}: {exc}") from exc
    yield None
