"""Event documents in the shape of schemas/events/v1/envelope.schema.json.

The gate service writes its own outbox rows (adapters/db/outbox_repo.py `SqlOutbox.add`):
a flat JSON object with the envelope fields (`event_id`, `type`, `occurred_at`,
`creditor`, `case_id`, `case_seq`) and the type's own fields beside them. This helper
builds the same shape for the in-memory outbox, the tests and the benchmark.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


def event_document(
    event_type: str,
    creditor: str,
    *,
    case_id: str | None,
    case_seq: int | None,
    fields: Mapping[str, Any] | None = None,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "type": event_type,
        "occurred_at": (occurred_at or datetime.now(UTC)).isoformat(),
        "creditor": creditor,
        "case_id": case_id,
        "case_seq": case_seq,
        **(fields or {}),
    }


def encode(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
