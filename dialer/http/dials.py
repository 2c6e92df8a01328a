"""Click-to-dial, dial checks and call outcomes."""

from __future__ import annotations

import inspect
import json
from decimal import Decimal
from typing import Any

import structlog
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request as StarletteRequest
from starlette.types import ASGIApp, Receive, Scope, Send

from dialer.commands import DialBody, is_request_key
from dialer.errors import BadRequest, DialBlocked
from dialer.http.deps import Caller, Svc
from dialer.http.inputs import Day, Text, When
from dialer.http.limits import PRINCIPAL_KEY
from dialer.http.problems import FastJSONResponse
from dialer.model import Principal
from dialer.usecases import CheckDial, LogOutcome, PromiseInput, RequestDial, outcome_json

router = APIRouter(prefix="/v1", tags=["dials"])
_bind = structlog.contextvars.bind_contextvars


class CheckBody(DialBody):
    at: When | None = Field(default=None, description="what-if time (compliance and admin only)")


class PromiseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # At most 30 digits: the amount is stored as its text in 40 characters, and a longer
    # one was stored whole by SQLite and refused by PostgreSQL without naming the field.
    amount: Decimal = Field(ge=0, le=10**12, allow_inf_nan=False, max_digits=30)
    date: Day


class OutcomeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    disposition: Text
    result: Text = "none"
    note: Text = Field(min_length=1, max_length=4000)
    callback_at: When | None = None
    promise: PromiseBody | None = None
    next_action_date: Day | None = Field(
        default=None, description="the next follow-up: earlier than the rule's date, or within a chosen status's bounds")
    status: Text | None = Field(default=None, description="a chosen follow-up status: urgent (紧急), night (夜间催收), "
                                                         "custom (自定义)")
    authorised_agent: bool = Field(
        default=False, description="the third party reached is the holder's authorised agent (a promise counts)")


@router.post("/dial-checks", summary="Would this dial be allowed? Nothing is reserved.")
async def dial_check(body: CheckBody, who: Caller, svc: Svc) -> dict[str, Any]:
    result = await svc.gate.check_dial(
        CheckDial(actor=who, case_id=body.case_id, number=body.number, agent_id=body.agent_id,
                  at=body.at, creditor=body.creditor)
    )
    return {"decision_id": result.decision_id, "allowed": result.allowed, "decision": result.decision_json()}


IDEMPOTENCY_KEY = "Idempotency-Key"
REPLAYED = {"Idempotent-Replayed": "true"}  # the answer is the one the key's first request got


def idempotency_key(values: list[bytes]) -> str | None:
    """The request's `Idempotency-Key` (one, 1-128 printable ASCII characters), or None."""
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(f"{IDEMPOTENCY_KEY} header given {len(values)} times; give it once",
                         details={"header": IDEMPOTENCY_KEY})
    key = values[0].decode("latin-1")  # every byte one character, so a non-ASCII one fails the rule
    if not is_request_key(key):
        raise BadRequest(f"{IDEMPOTENCY_KEY} header must be 1-128 printable ASCII characters",
                         details={"header": IDEMPOTENCY_KEY})
    return key


@router.post("/dials", status_code=201, summary="Click-to-dial: decide and reserve at the server clock.",
             description=f"A retry carrying the same `{IDEMPOTENCY_KEY}` header (and the same body) gets the "
                         "first answer again, marked `Idempotent-Replayed: true`, decided and counted once.")
async def dial(body: DialBody, who: Caller, request: Request) -> Any:
    key = idempotency_key([v for k, v in request.scope["headers"] if k == b"idempotency-key"])
    return await _dial(request.app.state.services, body, who, key)


async def _dial(svc: Any, body: DialBody, who: Principal, key: str | None = None) -> FastJSONResponse:
    result = await svc.gate.request_dial(
        RequestDial(actor=who, case_id=body.case_id, number=body.number, agent_id=body.agent_id,
                    channel="api", creditor=body.creditor, request_key=key)
    )
    if not result.allowed:
        blocked = DialBlocked(result.decision_json(), result.decision_id)
        if result.replayed:
            blocked.headers = REPLAYED
        try:
            raise blocked
        finally:
            # The traceback keeps this frame, and a local naming the exception would
            # make every blocked dial a reference cycle, left for the collector.
            del blocked
    assert result.attempt is not None
    # Plain JSON values already: answered as is (FastAPI's generic encoding of the
    # returned dict cost more CPU than the decision itself on this hot path).
    return FastJSONResponse({
        "attempt_id": result.attempt.attempt_id,
        "state": result.attempt.state,
        "state_url": f"/v1/attempts/{result.attempt.attempt_id}",
        "valid_until": result.attempt.valid_until.isoformat(),
        "decision_id": result.decision_id,
        "decision": result.decision_json(),
    }, status_code=201, headers=REPLAYED if result.replayed else None)


async def fast_dial(app: Any, inner: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """`POST /v1/dials` without FastAPI's routing and dependency solving, for the one
    case that is the hot path: a JSON object that is a valid `DialBody`, from a caller
    whose token checks. The answer is the route's own (`_dial`), and an exception from
    the gate goes to the app's own exception handlers, so the status and the bytes are
    the route's. The caller was authenticated before the body was read
    (`dialer.http.limits`); anything else (a body FastAPI would refuse, another content
    type) is replayed, body and all, to `inner` (the rest of the app's stack), which
    answers it exactly as it always has. `app` is the FastAPI app (services, exception
    handlers).
    Installed by `RequestContext` (dialer/app.py) for the exact method and path."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # client gone: let the app see it as before
            return await inner(scope, _replay(chunks, message, receive), send)
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    raw = b"".join(chunks)
    svc = getattr(app.state, "services", None)
    ctype = None
    keys: list[bytes] = []
    for name, value in scope["headers"]:
        if name == b"content-type":
            ctype = value
        elif name == b"idempotency-key":
            keys.append(value)
    body: DialBody | None = None
    who: Principal | None = scope.get(PRINCIPAL_KEY)
    if svc is not None and who is not None and raw and ctype is not None and ctype.split(b";", 1)[0].strip().lower() == b"application/json":
        try:
            doc = json.loads(raw)
            if type(doc) is dict:
                body = DialBody.model_validate(doc)
        except Exception:  # noqa: BLE001 - whatever it was, the FastAPI route answers it
            body = None
    if body is None or who is None:
        return await inner(scope, _replay(chunks, None, receive), send)
    _bind(user=who.name, role=who.role)
    try:
        response: Any = await _dial(svc, body, who, idempotency_key(keys))
    except Exception as exc:
        handler = next((app.exception_handlers[c] for c in type(exc).__mro__ if c in app.exception_handlers), None)
        if handler is None:
            raise  # as from the route: ServerErrorMiddleware answers 500
        response = handler(StarletteRequest(scope, receive), exc)
        if inspect.isawaitable(response):
            response = await response
    await response(scope, receive, send)


def _replay(chunks: list[bytes], last: Any, receive: Any) -> Any:
    """A `receive` that hands out the body already read, then the real one."""
    pending: list[Any] = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    if last is not None:  # the body was cut short (a disconnect): that message follows
        pending.append(last)
    elif pending:
        pending[-1]["more_body"] = False

    async def again() -> Any:
        return pending.pop(0) if pending else await receive()

    return again


@router.post("/attempts/{attempt_id}/outcome", status_code=201, summary="Log a call's outcome (催记); idempotent.")
async def log_outcome(attempt_id: str, body: OutcomeBody, who: Caller, svc: Svc, response: Response) -> dict[str, Any]:
    promise = PromiseInput(amount=str(body.promise.amount), date=body.promise.date) if body.promise else None
    outcome, created, case = await svc.gate.log_outcome(
        LogOutcome(actor=who, attempt_id=attempt_id, disposition=body.disposition, result=body.result,
                   note=body.note, callback_at=body.callback_at, promise=promise,
                   next_action_date=body.next_action_date, status=body.status,
                   authorised_agent=body.authorised_agent)
    )
    if not created:
        response.status_code = 200
    return {
        "outcome": outcome_json(outcome),
        "created": created,
        "case": {
            "case_id": case.case_id,
            "creditor": case.creditor,
            "flags": sorted(case.flags),
            "next_action": {"status": case.follow_up_status,
                            "date": case.next_action_date.isoformat() if case.next_action_date else None},
        },
    }
