"""The shapes of commands that arrive from outside, shared by every edge that takes them.

`DialBody` is a click-to-dial request: the body of `POST /v1/dials` and the `request`
of a dial command on the bus (`dialgate/v1/commands/dial`), so both refuse the same
fields with the same names. `is_request_key` is the one rule for the key a retried
request carries (the `Idempotency-Key` header, a dial command's `idempotency_key`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DialBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    case_id: str = Field(min_length=1, max_length=100)
    number: str = Field(min_length=1, max_length=40)
    agent_id: str = Field(min_length=1, max_length=100)
    creditor: str | None = Field(default=None, description="needed only when the case id exists for two creditors")


def is_request_key(key: str) -> bool:
    """1-128 printable ASCII characters, not all blank."""
    return 1 <= len(key) <= 128 and key.strip() != "" and all(" " <= ch <= "~" for ch in key)
