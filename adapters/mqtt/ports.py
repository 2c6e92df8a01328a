"""What the MQTT adapter needs from the rest of the system, as Protocols.

- `OutboxSource`, `OutboxEvent`, `RelayStore` (dialer/outbox.py): the transactional
  outbox (events written in the same transaction as the change). The relay reads unsent
  events in commit order and marks them sent once the broker acknowledged them (PUBACK).
  Implementations: `InMemoryOutboxSource` (tests/support/outbox.py), the store's
  (adapters/db, reached only through `RelayStore`).
- `EventPublisher`: what the relay publishes through (the `MqttConnection`).
- `DialCommandHandler`, `PbxEventHandler`: what inbound messages are handed to. They
  raise `MessageRejected` subclasses (adapters/mqtt/errors.py) for messages that must
  go to the dead-letter topic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from dialer.outbox import OutboxEvent, OutboxSource, RelayStore


class EventPublisher(Protocol):
    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, properties: Any = None
    ) -> None:
        """Return once the broker acknowledged (QoS 1: PUBACK); raise BrokerUnavailable."""
        ...


@dataclass(frozen=True, slots=True)
class DialCommand:
    """A dial request that arrived on `dialgate/v1/commands/dial`.

    `request` holds the same fields as the body of `POST /v1/dials`; `token` is the
    user's bearer token (never logged).
    """

    token: str = field(repr=False)
    request: Mapping[str, Any]
    message_id: str  # ours, for logs and the dead-letter record
    # The requester's key for this dial: a redelivered or resent command with the same
    # key gets the first answer, decided and counted once.
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class DialReply:
    """The answer published to the requester: an HTTP-like status and a JSON body."""

    status: int
    body: Mapping[str, Any]
    replayed: bool = False  # the answer the idempotency key's first command got


class DialCommandHandler(Protocol):
    async def handle_dial(self, command: DialCommand) -> DialReply:
        """Run the dial request; raise UnauthorisedMessage / MalformedMessage to refuse."""
        ...


PbxEventKind = Literal["answered", "hangup", "recording_ready"]


@dataclass(frozen=True, slots=True)
class PbxEvent:
    """Call progress from a PBX event bridge on `dialgate/v1/pbx/<pbx_id>/events`."""

    pbx_id: str
    kind: PbxEventKind
    occurred_at: datetime
    call_id: str | None = None  # SIP Call-ID
    attempt_id: str | None = None
    cause: str | None = None  # hangup: SIP/Q.850 cause as sent by the PBX
    duration_s: float | None = None  # hangup: talk time in seconds
    recording_path: str | None = None  # recording_ready: file path or ...
    recording_url: str | None = None  # ... URL
    creditor: str | None = None  # when the bridge knows it; checked against the attempt
    message_id: str = ""


class PbxEventHandler(Protocol):
    async def handle_pbx_event(self, event: PbxEvent) -> None:
        """Apply the event; raise UnmatchedMessage when no attempt matches it."""
        ...


__all__ = [
    "DialCommand", "DialCommandHandler", "DialReply", "EventPublisher", "OutboxEvent", "OutboxSource",
    "PbxEvent", "PbxEventHandler", "RelayStore",
]
