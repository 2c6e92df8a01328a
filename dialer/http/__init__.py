"""HTTP API v1 (FastAPI). One module per topic; each exports `router`.

Handlers authenticate (`deps.principal`), translate JSON to a use-case command, call
`Gate`, and shape the answer. Errors leave as RFC 9457 problem+json (`problems.py`).
"""
