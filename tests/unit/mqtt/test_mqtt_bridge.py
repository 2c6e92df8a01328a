"""How the bridge maps the gate's answers for dial commands (fake auth and gate)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from adapters.mqtt.bridge import GateDialHandler, GatePbxHandler
from adapters.mqtt.errors import MalformedMessage, UnauthorisedMessage, UnmatchedMessage
from adapters.mqtt.ports import DialCommand, PbxEvent
from dialer.errors import (
    ApiError,
    NoSuchCase,
    StoreRefusedValue,
    StoreUnavailable,
    Unauthenticated,
    UnprocessableEntity,
)
from dialer.model import Principal

ALICE = Principal(user_id=1, name="col-a", role="collector", creditors=frozenset({"bank-a"}))
BODY = {"case_id": "C-1", "number": "13800000001", "agent_id": "col-a"}


class Unavailable(ApiError):
    status, problem_id, title = 503, "pbx-unavailable", "PBX unavailable"


def _handler(raise_from_gate: Exception | None = None):
    async def authenticate(header: str) -> Principal:
        if header != "Bearer good":
            raise Unauthenticated("unknown or revoked token")
        return ALICE

    calls = []

    async def request_dial(cmd):
        calls.append(cmd)
        raise raise_from_gate or AssertionError("not reached")

    return GateDialHandler(SimpleNamespace(authenticate=authenticate),  # type: ignore[arg-type]
                           SimpleNamespace(request_dial=request_dial)), calls  # type: ignore[arg-type]


def _cmd(token="good", **body):
    return DialCommand(token=token, request={**BODY, **body}, message_id="m-1")


async def test_an_unknown_token_is_unauthorised_before_the_gate_is_asked():
    handler, calls = _handler()
    with pytest.raises(UnauthorisedMessage) as err:
        await handler.handle_dial(_cmd(token="forged"))
    assert err.value.reason == "unauthorised" and calls == []


async def test_fields_that_post_v1_dials_refuses_are_malformed_and_named():
    handler, calls = _handler()
    with pytest.raises(MalformedMessage) as err:
        await handler.handle_dial(_cmd(number="", extra=1))
    fields = {e["field"] for e in err.value.details["errors"]}
    assert fields == {"number", "extra"} and calls == []


async def test_a_creditor_outside_the_users_scope_is_a_wrong_creditor_refusal():
    handler, calls = _handler()
    with pytest.raises(UnauthorisedMessage) as err:
        await handler.handle_dial(_cmd(creditor="bank-b"))
    assert err.value.reason == "wrong-creditor" and calls == []


async def test_an_unknown_or_foreign_case_is_unmatched():
    handler, calls = _handler(NoSuchCase("no case 'C-1'"))
    with pytest.raises(UnmatchedMessage) as err:
        await handler.handle_dial(_cmd())
    assert err.value.reason == "no-such-case"
    assert (calls[0].channel, calls[0].actor) == ("mqtt", ALICE)


async def test_a_validation_problem_of_the_gate_keeps_its_status_and_problem_id():
    handler, _ = _handler(UnprocessableEntity("no agent 'x'", details={"field": "agent_id"}))
    with pytest.raises(MalformedMessage) as err:
        await handler.handle_dial(_cmd())
    assert (err.value.status, err.value.reason, err.value.details) == (
        422, "validation-failed", {"field": "agent_id"}
    )


async def test_a_server_side_unavailability_is_answered_not_dead_lettered():
    handler, _ = _handler(Unavailable("not registered on the PBX"))
    reply = await handler.handle_dial(_cmd())
    assert reply.status == 503
    assert reply.body["type"].endswith("/pbx-unavailable")


async def test_a_value_the_store_refuses_is_a_malformed_400_as_over_http():
    # PostgreSQL refuses a NUL in any text value; POST /v1/dials answers that 400.
    handler, _ = _handler(StoreRefusedValue("a value was refused by the store: CharacterNotInRepertoireError"))
    with pytest.raises(MalformedMessage) as err:
        await handler.handle_dial(_cmd(case_id="C\x00-1"))
    assert (err.value.status, err.value.reason) == (400, "bad-request")
    assert "nothing was changed" in err.value.message


async def test_an_unavailable_store_is_answered_503_not_dead_lettered():
    handler, _ = _handler(StoreUnavailable("connection refused"))
    reply = await handler.handle_dial(_cmd())
    assert reply.status == 503
    assert reply.body["type"].endswith("/store-unavailable")


async def test_an_unavailable_store_while_checking_the_token_is_answered_503():
    async def authenticate(header: str) -> Principal:
        raise StoreUnavailable("connection refused")

    handler = GateDialHandler(SimpleNamespace(authenticate=authenticate), SimpleNamespace())  # type: ignore[arg-type]
    reply = await handler.handle_dial(_cmd())
    assert reply.status == 503


async def test_a_pbx_event_with_a_value_the_store_refuses_is_malformed_not_a_handler_failure():
    async def apply_call_event(event):
        raise StoreRefusedValue("a value was refused by the store: CharacterNotInRepertoireError")

    handler = GatePbxHandler(SimpleNamespace(apply_call_event=apply_call_event))  # type: ignore[arg-type]
    event = PbxEvent(pbx_id="pbx-1", kind="answered", occurred_at=None, call_id="c\x00", attempt_id=None)  # type: ignore[arg-type]
    with pytest.raises(MalformedMessage) as err:
        await handler.handle_pbx_event(event)
    assert (err.value.status, err.value.reason) == (400, "bad-request")
