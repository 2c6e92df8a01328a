"""Errors of the MQTT adapter.

    MqttAdapterError
    ├── MqttConfigError          a wrong `[mqtt]` key; `.path` names it (``mqtt.url``)
    ├── BrokerUnavailable        not connected, or the connection dropped before PUBACK
    └── MessageRejected          an inbound message we will not act on → dead-letter topic
        ├── MalformedMessage     not JSON, wrong shape, bad field (reason ``malformed``)
        ├── UnauthorisedMessage  bad token, wrong creditor, unknown PBX (``unauthorised``)
        └── UnmatchedMessage     no attempt for that Call-ID / attempt id (``unmatched``)

aiomqtt's ``MqttError`` never leaves this package: the connection maps it to
``BrokerUnavailable`` at the boundary (``raise ... from exc``).
Every ``MessageRejected`` carries an English and a Chinese text because its reason is
published on the dead-letter topic and read by operators.
"""

from __future__ import annotations

from typing import Any


class MqttAdapterError(Exception):
    """Base of everything this package raises."""


class MqttConfigError(MqttAdapterError):
    """A `[mqtt]` setting is wrong; `path` is the dotted key (``mqtt.url``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class BrokerUnavailable(MqttAdapterError):
    """The broker could not take the message now (retry later)."""


class MessageRejected(MqttAdapterError):
    """An inbound message is not acted on; it goes to the dead-letter topic.

    `reason` is a stable kebab-case id, `details` a JSON-safe dict (never secrets or
    unmasked phone numbers).
    """

    reason = "rejected"
    status = 400

    def __init__(
        self,
        message: str,
        message_zh: str,
        *,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.message_zh = message_zh
        if reason is not None:
            self.reason = reason
        self.details = dict(details or {})


class MalformedMessage(MessageRejected):
    reason = "malformed"
    status = 400


class UnauthorisedMessage(MessageRejected):
    reason = "unauthorised"
    status = 403


class UnmatchedMessage(MessageRejected):
    reason = "unmatched"
    status = 404
