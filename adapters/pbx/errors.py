"""Errors of the PBX adapter.

    PbxError                  base; `reason` is bilingual (Chinese / English) user text
    ├── PbxUnavailable        not registered on the PBX (unreachable, refused, stopped)
    ├── CapacityExceeded      the configured maximum of bridged calls is reached (→ 503)
    └── LegSetupError         a leg could not be started locally (no RTP port, socket error)

A leg that the far end refuses or that nobody answers is not an error: it ends with a
cause (`busy`, `declined`, `agent_no_answer`, …) on the leg and on the attempt.
"""

from __future__ import annotations


class PbxError(Exception):
    error_id = "pbx-error"

    def __init__(self, reason: str, **details: object) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details


class PbxUnavailable(PbxError):
    error_id = "pbx-unavailable"


class CapacityExceeded(PbxError):
    error_id = "pbx-capacity-exceeded"


class LegSetupError(PbxError):
    error_id = "pbx-leg-setup-failed"
