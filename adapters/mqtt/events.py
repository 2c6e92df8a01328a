"""Building event documents in the shape of schemas/events/v1/envelope.schema.json.

The service writes its own outbox rows; this helper is the reference shape, used by
the in-memory outbox, the tests and the benchmark.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

SCHEMA_VERSION = 1


def event_document(
    event_type: str,
    creditor: str,
    *,
    case_id: str | None,
    sequence: int | None,
    data: Mapping[str, Any] | None = None,
    ids: Mapping[str, str] | None = None,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id or str(uuid.uuid4()),
        "type": event_type,
        "occurred_at": (occurred_at or datetime.now(UTC)).isoformat(),
        "creditor": creditor,
        "case_id": case_id,
        "sequence": sequence,
    }
    doc.update(ids or {})
    doc["data"] = dict(data or {})
    return doc


def encode(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
