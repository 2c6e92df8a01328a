"""Liveness, readiness, metrics. Like every endpoint they need a bearer token (any
role): probes use a `pbx` or `admin` token. /readyz answers 503 when the store is down
(also when the token cannot be checked because the store is down). Its `leadership`
says which instance runs the once-only work (dialer/leadership.py) and whether the
store is a primary."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from dialer import metrics
from dialer.errors import StoreUnavailable
from dialer.http.deps import Caller, Svc

router = APIRouter(tags=["health"])


_OK = b'{"status":"ok"}'  # what JSONResponse({"status": "ok"}) renders, encoded once


@router.get("/healthz", response_class=JSONResponse)
async def healthz(who: Caller) -> Response:
    return Response(_OK, media_type="application/json")


@router.get("/readyz")
async def readyz(who: Caller, svc: Svc) -> Any:
    try:
        await svc.store.ping()
    except StoreUnavailable as exc:
        return JSONResponse({"status": "unavailable", "store": str(exc)}, status_code=503)
    body: dict[str, Any] = {"status": "ready", "store": "ok", "policy_version": svc.policies.version}
    mqtt = getattr(svc, "mqtt", None)  # the MQTT bus when [mqtt] url is set: reported, not
    if mqtt is not None:  # gating (events wait in the outbox while the broker is away)
        body["mqtt"] = mqtt.health()
    leadership = getattr(svc, "leadership", None)  # who runs the relay, sweeps, inbox, PBX UA;
    if leadership is not None:  # and whether the store answering is the primary: reported
        body["leadership"] = await leadership.describe()
    pbx = getattr(svc, "pbx", None)  # click-to-dial's SIP registration ([pbx] mode sip_ua): reported;
    if pbx is not None:  # while it is down, dials are refused with 503 and the reason
        body["pbx"] = pbx.health()
    return body


@router.get("/metrics")
async def prometheus(who: Caller) -> Response:
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
