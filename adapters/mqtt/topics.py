"""Topic names: the contract with subscribers and publishers (versioned by `v1`).

Out: `dialgate/v1/<creditor>/events/<type>` (QoS 1), `dialgate/v1/deadletter`.
In:  `dialgate/v1/commands/dial`, `dialgate/v1/pbx/<pbx_id>/events`.
Replies to v3.1.1 clients go to the `reply_to` they name, which must sit under
`dialgate/v1/replies/` or outside `dialgate/` altogether (never on our event topics).
"""

from __future__ import annotations

import re

ROOT = "dialgate/v1"
DEADLETTER = f"{ROOT}/deadletter"
DIAL_COMMANDS = f"{ROOT}/commands/dial"
PBX_EVENTS_FILTER = f"{ROOT}/pbx/+/events"
REPLIES_ROOT = f"{ROOT}/replies/"

EVENT_TYPES: tuple[str, ...] = (
    "dial.allowed",
    "dial.blocked",
    "attempt.state",
    "outcome.logged",
    "case.updated",
    "recording.stored",
    "recording.purged",
    "alert.complaint_risk",
    "alert.dispute",
    "case.first_call_overdue",
    "alert.recording_missing",
)

_LEVEL = re.compile(r"^[^/+#\x00]{1,128}$")
_PBX_TOPIC = re.compile(r"^dialgate/v1/pbx/([^/+#]{1,128})/events$")


def is_valid_level(value: str) -> bool:
    """One topic level: non-empty, no '/', '+', '#' or NUL."""
    return bool(_LEVEL.match(value))


def event_topic(creditor: str, event_type: str) -> str:
    if not is_valid_level(creditor):
        raise ValueError(f"creditor {creditor!r} cannot be a topic level")
    if not is_valid_level(event_type):
        raise ValueError(f"event type {event_type!r} cannot be a topic level")
    return f"{ROOT}/{creditor}/events/{event_type}"


def pbx_id_of(topic: str) -> str | None:
    m = _PBX_TOPIC.match(topic)
    return m.group(1) if m else None


def reply_topic_problem(topic: str) -> str | None:
    """Why `topic` may not receive a reply, or None when it may."""
    if not topic or len(topic.encode()) > 1024:
        return "reply topic must be 1-1024 bytes"
    if any(c in topic for c in "+#\x00"):
        return "reply topic must not contain wildcards"
    if topic.startswith("dialgate/") and not topic.startswith(REPLIES_ROOT):
        return f"reply topic under dialgate/ must start with {REPLIES_ROOT}"
    return None
