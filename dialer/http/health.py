"""Liveness, readiness, metrics, and `GET /` sending a browser to the console.

/healthz is the one endpoint without a token: a load balancer's, Kubernetes' or
systemd's liveness probe carries none, so it answers a fixed `{"status":"ok"}` that
says nothing about the store, the version or the configuration. /readyz (which names
the store, the bus and the policy version) keeps the bearer token of any role; its
`leadership` says which instance runs the once-only work (dialer/leadership.py) and
whether the store is a primary. /metrics is for `admin` and `monitor` tokens only: its
counters sum over every creditor, and `monitor` (a scraper's role) reads nothing else;
Prometheus sends one with `authorization: {credentials_file: …}` in its scrape config.
/readyz answers 503 when the store is down (also when the token cannot be checked
because the store is down)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, RedirectResponse, Response

from dialer import metrics
from dialer.errors import StoreUnavailable
from dialer.holidays_cli import arrangement_health
from dialer.http.deps import Caller, Svc
from dialer.usecases import require_role

router = APIRouter(tags=["health"])
METRICS_ROLES = frozenset({"admin", "monitor"})


_OK = b'{"status":"ok"}'  # what JSONResponse({"status": "ok"}) renders, encoded once


@router.get("/healthz", response_class=JSONResponse, openapi_extra={"security": []})
async def healthz() -> Response:
    return Response(_OK, media_type="application/json")


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    # The console signs the visitor in itself; the redirect reveals nothing an anonymous caller could not guess.
    return RedirectResponse("/console/", status_code=307)


@router.get("/readyz")
async def readyz(who: Caller, svc: Svc) -> Any:
    try:
        await svc.store.ping()
    except StoreUnavailable as exc:
        return JSONResponse({"status": "unavailable", "store": str(exc)}, status_code=503)
    # `policy_version` hashes the whole book; a decision carries its creditor's entry of `policy_versions`.
    versions = svc.policies.versions()
    if who.role not in METRICS_ROLES:  # the names of the banks served are not for another bank's users
        versions = {c: v for c, v in versions.items() if c == "default" or who.can_see(c)}
    body: dict[str, Any] = {"status": "ready", "store": "ok", "policy_version": svc.policies.version,
                            "policy_versions": versions}
    mqtt = svc.mqtt  # the MQTT bus when [mqtt] url is set: reported, not
    if mqtt is not None:  # gating (events wait in the outbox while the broker is away)
        body["mqtt"] = mqtt.health()
    holidays = arrangement_health(svc.policies, svc.clock.now())  # reported, not gating: the
    if holidays is not None:  # statutory days still block without the year's arrangement
        body["holidays"] = holidays
    leadership = svc.leadership  # who runs the relay, sweeps, inbox, PBX UA;
    if leadership is not None:  # and whether the store answering is the primary: reported
        body["leadership"] = await leadership.describe()
    pbx = svc.pbx  # click-to-dial's SIP registration ([pbx] mode sip_ua): reported;
    if pbx is not None:  # while it is down, dials are refused with 503 and the reason
        body["pbx"] = pbx.health()
    return body


@router.get("/metrics")
async def prometheus(who: Caller) -> Response:
    # The counters sum over every creditor: not for a role scoped to some of them.
    require_role(who, METRICS_ROLES, "read metrics")
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
