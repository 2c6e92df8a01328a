"""HTTP API v1 (FastAPI). One module per topic; each exports `router`, which
`dialer.bootstrap.routers` mounts.

Handlers authenticate (`deps.principal`), reach the wired application through
`deps.Svc` (a `dialer.services.Services`), translate JSON to a use-case command, call
`Gate`, and shape the answer. Errors leave as RFC 9457 problem+json (`problems.py`).
"""
