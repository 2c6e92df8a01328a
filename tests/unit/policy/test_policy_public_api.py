"""The names the gate service, the SIP gate and the CLI import from `policy`."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import policy
from policy import (
    AgentSnapshot,
    CaseSnapshot,
    ContactSnapshot,
    DialRequest,
    HistoryEvent,
    evaluate,
    load_policy,
    normalize_number,
)

SH = ZoneInfo("Asia/Shanghai")


def test_every_contract_name_is_exported_from_the_package() -> None:
    for name in (
        "evaluate", "load_policy", "PolicyBook", "Policy", "PolicyConfigError", "normalize_number",
        "NumberFormatError", "DialRequest", "CaseSnapshot", "ContactSnapshot", "AgentSnapshot",
        "Appointment", "HistoryEvent", "Decision", "Check",
    ):
        assert hasattr(policy, name), name


def test_a_default_policy_allows_an_assigned_collector_calling_the_debtor_at_ten_in_the_morning() -> None:
    pol = load_policy({}).for_creditor("bank-a")
    case = CaseSnapshot(
        "API-1", "bank-a", "active", date(2026, 1, 1), date(2026, 12, 31), assigned_agent="a1",
        contacts=(ContactSnapshot("+8613800000001", "self"),),
    )
    request = DialRequest(case, normalize_number("13800000001", region="CN"), AgentSnapshot("a1", "collector"))
    history = [HistoryEvent(datetime(2026, 11, 24, 9, 0, tzinfo=SH), "API-1", "+8613800000001", "self")]
    decision = evaluate(request, history, pol, datetime(2026, 11, 24, 10, 0, tzinfo=SH))
    assert decision.allowed and decision.rule_id == "allow"
    assert decision.policy_version == pol.version and len(pol.version) == 64
    assert decision.to_dict()["inputs_used"]["counters"]["cap.number_hourly"]["count"] == 0
