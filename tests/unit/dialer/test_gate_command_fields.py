"""Guards for code that copies a command or record field by field on the hot path
(instead of dataclasses.replace): a new field must be copied there too."""

from __future__ import annotations

from dataclasses import fields

from dialer.usecases import RequestDial


def test_every_field_of_request_dial_is_one_the_case_resolution_copies() -> None:
    # The SIP gate, the HTTP API and the MQTT handler build RequestDial field by field;
    # a field added here must be set by them (and added to this list).
    assert [f.name for f in fields(RequestDial)] == [
        "actor", "case_id", "number", "agent_id", "channel", "creditor", "match_pending", "attempt_id",
        "caller_line", "registered_lines", "lines_by_creditor", "request_key",
    ]
