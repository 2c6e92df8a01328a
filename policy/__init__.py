"""DialGate's dial policy core: pure, deterministic, explainable.

Standard library plus `phonenumbers` and `holidays` (lunar dates) only; no I/O, no
asyncio, no clock reads. `evaluate(request, history, policy, now)` returns a `Decision`.

    book = load_policy(config["policy"])       # PolicyConfigError(path, reason)
    pol = book.for_creditor("bank-a")          # defaults + preset + creditor keys
    decision = evaluate(request, history, pol, now)
"""

from .config import (
    CALENDAR_DAY,
    AppointmentRules,
    BlackoutPeriod,
    Cap,
    Policy,
    PolicyBook,
    PolicyConfigError,
    Window,
    load_policy,
    parse_duration,
)
from .engine import evaluate
from .model import (
    CASE_FLAGS,
    CASE_STATUSES,
    CLOSED_STATUSES,
    NO_AGENT,
    RELATIONS,
    ROLES,
    SYSTEM_FAULTS,
    AgentSnapshot,
    Appointment,
    CaseSnapshot,
    Check,
    ContactSnapshot,
    Decision,
    DialRequest,
    HistoryEvent,
)
from .numbers import NumberFormatError, mask_number, normalize_number, number_zone
from .text import Text
from .presets import PRESETS

__all__ = [
    "evaluate",
    "load_policy",
    "PolicyBook",
    "Policy",
    "PolicyConfigError",
    "Window",
    "Cap",
    "AppointmentRules",
    "BlackoutPeriod",
    "parse_duration",
    "CALENDAR_DAY",
    "PRESETS",
    "normalize_number",
    "NumberFormatError",
    "number_zone",
    "mask_number",
    "Text",
    "DialRequest",
    "CaseSnapshot",
    "ContactSnapshot",
    "AgentSnapshot",
    "Appointment",
    "HistoryEvent",
    "Decision",
    "Check",
    "RELATIONS",
    "NO_AGENT",
    "ROLES",
    "CASE_FLAGS",
    "CASE_STATUSES",
    "CLOSED_STATUSES",
    "SYSTEM_FAULTS",
]
