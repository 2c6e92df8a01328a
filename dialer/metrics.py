"""Prometheus metrics (served at /metrics). Module-level: one registry per process."""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

REGISTRY = CollectorRegistry(auto_describe=True)

DECISIONS = Counter(
    "dialgate_decisions_total",
    "Dial decisions by outcome, deciding rule and channel",
    ["allowed", "rule_id", "channel"],
    registry=REGISTRY,
)
DECISION_SECONDS = Histogram(
    "dialgate_decision_seconds",
    "Decide-and-reserve latency inside the service",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
RECORDINGS_MISSING = Counter(
    "dialgate_recordings_missing_total",
    "Connected calls whose recording did not arrive within [recordings] expect_within",
    ["creditor"],
    registry=REGISTRY,
)
VAULT_CLEANED = Counter(
    "dialgate_vault_cleaned_total",
    "Recording vault leftovers removed at start and by the periodic sweep: interrupted uploads' "
    "temporaries, blobs without a row, blobs of destroyed recordings",
    ["kind"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "dialgate_http_requests_total", "HTTP requests by route and status", ["route", "status"], registry=REGISTRY
)


# The counter's child per (allowed, rule, channel), as `labels` returns it: found again
# with one dict lookup per decision instead of `labels`' checks. As few as the rules.
_decision_counts: dict[tuple[bool, str, str], Any] = {}


def observe_decision(allowed: bool, rule_id: str, channel: str, seconds: float) -> None:
    key = (allowed, rule_id, channel)
    child = _decision_counts.get(key)
    if child is None:
        child = _decision_counts[key] = DECISIONS.labels("true" if allowed else "false", rule_id, channel)
    child.inc()
    DECISION_SECONDS.observe(seconds)


def render() -> bytes:
    """This process's metrics; with HTTP workers (PROMETHEUS_MULTIPROC_DIR set by
    dialer/workers.py before any worker imports this module) every worker's, summed."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated
        return generate_latest(registry)
    return generate_latest(REGISTRY)
