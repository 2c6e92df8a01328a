"""`InMemoryOutboxSource`: the outbox as a list, for the relay's tests and the MQTT benchmark."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from adapters.mqtt.events import encode, event_document
from adapters.mqtt.ports import OutboxEvent


class InMemoryOutboxSource:
    def __init__(self) -> None:
        self._events: list[OutboxEvent] = []
        self._unsent: dict[int, OutboxEvent] = {}  # insertion (= position) order
        self._sequences: dict[str, int] = {}
        self._listeners: list[Callable[[], None]] = []
        self._all_sent = asyncio.Event()
        self._all_sent.set()

    # -- writer side (what the service does in its transaction) ---------------------

    def on_commit(self, listener: Callable[[], None]) -> None:
        """Call `listener` after every append (the relay's `notify`)."""
        self._listeners.append(listener)

    def append(
        self,
        event_type: str,
        creditor: str,
        case_id: str | None,
        fields: Mapping[str, Any] | None = None,
    ) -> OutboxEvent:
        sequence = None
        if case_id is not None:
            sequence = self._sequences.get(case_id, 0) + 1
            self._sequences[case_id] = sequence
        doc = event_document(
            event_type, creditor, case_id=case_id, case_seq=sequence, fields=fields
        )
        event = OutboxEvent(
            position=len(self._events) + 1,
            event_id=doc["event_id"],
            type=event_type,
            creditor=creditor,
            payload=encode(doc),
            ordering_key=None if case_id is None else f"{creditor}/{case_id}",
            sequence=sequence,
        )
        self._events.append(event)
        self._unsent[event.position] = event
        self._all_sent.clear()
        for listener in self._listeners:
            listener()
        return event

    @property
    def events(self) -> Sequence[OutboxEvent]:
        return tuple(self._events)

    @property
    def unsent_count(self) -> int:
        return len(self._unsent)

    async def wait_all_sent(self) -> None:
        await self._all_sent.wait()

    # -- OutboxSource ------------------------------------------------------------

    async def fetch_unsent(self, limit: int) -> Sequence[OutboxEvent]:
        out = []
        for event in self._unsent.values():
            out.append(event)
            if len(out) >= limit:
                break
        return out

    async def mark_sent(self, positions: Sequence[int]) -> None:
        for p in positions:
            self._unsent.pop(p, None)
        if not self._unsent:
            self._all_sent.set()
