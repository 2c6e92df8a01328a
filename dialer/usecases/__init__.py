"""The use cases: one entry point (`Gate`) for the HTTP API, `dialgate simulate`, the
SIP gate and the MQTT command handler.

Each use case gathers its inputs inside one store transaction, asks the pure policy
core, and applies the result — attempt, decision-log record and outbox events written
in that same transaction, so an allowed answer exists only once all of it is committed.

Commands are imperative dataclasses (`RequestDial`, `CheckDial`, `LogOutcome`, …);
`Gate.request_dial(cmd)` etc. run them. Refusals by policy are values (`DialResult`
with `allowed=False`); exceptions are for requests that cannot be served (404, 403,
422…), and nothing is written when one is raised.

    commands     the commands, their results, the roles that may run them
    gate         `Gate`, the facade over the use cases below
    dials        RequestDial, CheckDial, the recheck (through the DialLedger port)
    outcomes     LogOutcome
    cases        imports, contacts, case views, caller lookup
    review       the blocked-dial review
    attempts     expiry of authorisations never placed
    follow_up    an outcome's follow-up status and date (pure)
    presenters   answers and events as JSON values, numbers masked
    base         what the use cases share
"""

from dialer.usecases.base import AlwaysRecording, NonePbx
from dialer.usecases.commands import (
    CASE_READ_ROLES,
    CHANNELS,
    CHECK_ROLES,
    DATA_ROLES,
    DIAL_ROLES,
    LOOKUP_ROLES,
    OUTCOME_ROLES,
    REVIEW_ROLES,
    WHAT_IF_ROLES,
    CheckDial,
    DialResult,
    LogOutcome,
    PromiseInput,
    RequestDial,
    _narrow,
    history_bound,
    require_role,
)
from dialer.usecases.follow_up import ALERTS, RESULT_FLAGS, chosen_follow_up, follow_up
from dialer.usecases.gate import Gate
from dialer.usecases.presenters import _masked_inputs, case_json, outcome_json

__all__ = [
    "ALERTS", "CASE_READ_ROLES", "CHANNELS", "CHECK_ROLES", "DATA_ROLES", "DIAL_ROLES", "LOOKUP_ROLES",
    "OUTCOME_ROLES", "RESULT_FLAGS", "REVIEW_ROLES", "WHAT_IF_ROLES", "AlwaysRecording", "CheckDial", "DialResult",
    "Gate", "LogOutcome", "NonePbx", "PromiseInput", "RequestDial", "_masked_inputs", "_narrow", "case_json",
    "chosen_follow_up", "follow_up", "history_bound", "outcome_json", "require_role",
]
