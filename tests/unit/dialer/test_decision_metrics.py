"""Each decision counts once under its own labels in `dialgate_decisions_total`."""

from __future__ import annotations

from dialer import metrics


def count(allowed: str, rule_id: str, channel: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "dialgate_decisions_total", {"allowed": allowed, "rule_id": rule_id, "channel": channel}
    )
    return value or 0.0


def test_each_decision_counts_once_under_its_own_allowed_rule_and_channel() -> None:
    before = (count("true", "allow", "t-chan"), count("false", "cap.t_rule", "t-chan"), count("false", "allow", "t-chan"))
    for _ in range(3):
        metrics.observe_decision(True, "allow", "t-chan", 0.001)
    metrics.observe_decision(False, "cap.t_rule", "t-chan", 0.001)
    after = (count("true", "allow", "t-chan"), count("false", "cap.t_rule", "t-chan"), count("false", "allow", "t-chan"))
    assert [a - b for a, b in zip(after, before)] == [3.0, 1.0, 0.0]
