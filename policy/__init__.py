"""DialGate's dial policy core: pure, deterministic, explainable.

Standard library plus `phonenumbers` and `chinese-calendar` only; no I/O, no asyncio,
no clock reads. `evaluate(request, history, policy, now)` returns a `Decision`.
"""
