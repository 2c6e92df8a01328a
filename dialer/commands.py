"""The shapes of commands that arrive from outside, shared by every edge that takes them.

`DialBody` is a click-to-dial request: the body of `POST /v1/dials` and the `request`
of a dial command on the bus (`dialgate/v1/commands/dial`), so both refuse the same
fields with the same names.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DialBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    case_id: str = Field(min_length=1, max_length=100)
    number: str = Field(min_length=1, max_length=40)
    agent_id: str = Field(min_length=1, max_length=100)
    creditor: str | None = Field(default=None, description="needed only when the case id exists for two creditors")
