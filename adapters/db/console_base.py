"""The state every part of `SqlAlchemyConsoleQueries` shares: the services it reads,
the vault when one is wired, and the caches and background audit of its pages."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from dialer.console.ports import FilterOptions, HealthItem


class ConsoleState:
    def __init__(
        self, services: Any, vault: Any = None, *, health: Callable[[], Awaitable[Sequence[HealthItem]]] | None = None
    ) -> None:
        # `services` and `vault` stay loosely typed: the console is wired over whichever
        # store and vault the composition root built, including the tests' in-memory ones.
        self.services = services
        self.store = services.store
        self.vault = vault
        self._health = health
        self._audit_task: asyncio.Task[Any] | None = None
        self._audit_at = 0.0
        self._audit_last: HealthItem | None = None
        self._summaries: OrderedDict[Any, tuple[int, dict[Any, int], dict[Any, int]]] = OrderedDict()
        self._options: dict[tuple[str, ...] | None, tuple[float, FilterOptions]] = {}
