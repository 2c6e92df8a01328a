"""The transactional outbox as an event relay reads it.

Use cases write their events into the outbox in the same transaction as the change
(`UnitOfWork.outbox`, dialer/ports.py). A relay (adapters/mqtt) publishes them:

    OutboxEvent    one committed, not yet published event, its payload as stored
    OutboxSource   the unsent events in commit order; `mark_sent` once the broker has them
    RelayStore     what a relay needs of the store: a source over its outbox, a call after
                   each of its commits, and the commits of other instances on the same
                   database (PostgreSQL LISTEN/NOTIFY; nothing on SQLite)

Implementations: `SqlAlchemyCaseStore` (adapters/db/store.py) with
`SqlAlchemyOutboxSource` (adapters/db/outbox_source.py); `InMemoryOutboxSource`
(tests/support/outbox.py) for tests and the benchmark.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One committed, not yet published event.

    `position` is the outbox's commit order (the row id) and what `mark_sent` takes.
    `ordering_key` groups events that must be published in order (the case id); events
    with different keys may be published in parallel. `payload` is the JSON document
    exactly as stored (see schemas/events/).
    """

    position: int
    event_id: str
    type: str
    creditor: str
    payload: bytes
    ordering_key: str | None = None
    sequence: int | None = None


class OutboxSource(Protocol):
    async def fetch_unsent(self, limit: int) -> Sequence[OutboxEvent]:
        """Up to `limit` unsent events, oldest first (ascending `position`)."""
        ...

    async def mark_sent(self, positions: Sequence[int]) -> None:
        """Record that these events were acknowledged by the broker."""
        ...


class RelayStore(Protocol):
    is_postgres: bool

    def outbox_source(self, *, now: Callable[[], datetime], retention: timedelta) -> Any:
        """An `OutboxSource` over this store's outbox that also deletes rows published
        more than `retention` ago; its own writes wake no relay."""
        ...

    def on_commit(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` after each write that committed; returns the undo."""
        ...

    def commits_elsewhere(self, on_commit: Callable[[], None]) -> AbstractAsyncContextManager[Any]:
        """While entered, call `on_commit` when another instance committed a write."""
        ...

    def announce_commits(self) -> AbstractAsyncContextManager[Any]:
        """While entered: an object whose `wake_soon()` tells the other instances that
        this one committed (at most one message for a burst)."""
        ...
