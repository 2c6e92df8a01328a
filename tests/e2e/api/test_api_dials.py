"""POST /v1/dials and POST /v1/dial-checks through HTTP."""

from __future__ import annotations

import gc
from datetime import datetime, timezone

from adapters.db import tables
from gate_api_support import Api
from tests.support.builders import SHANGHAI, TUESDAY_10AM

PROBLEM = "application/problem+json"


async def test_allowed_click_to_dial_answers_201_with_a_committed_attempt(api: Api) -> None:
    r = await api.dial("col-a", "C-1", "13800000001")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["decision"]["allowed"] is True
    assert body["decision"]["rule_id"] == "allow"
    assert body["state"] == "authorised"
    case = (await api.get("/v1/cases/C-1", "col-a")).json()
    assert [a["attempt_id"] for a in case["attempts"]] == [body["attempt_id"]]
    assert case["attempts"][0]["decision"]["decision_id"] == body["decision_id"]
    assert case["attempts"][0]["number"] == "+8613800000001"


async def test_dial_outside_the_calling_window_is_403_dial_blocked_with_the_decision(api: Api) -> None:
    api.clock.set(datetime(2026, 11, 24, 21, 30, tzinfo=SHANGHAI))
    before = await api.rows(tables.attempts)
    r = await api.dial("col-a", "C-1", "13800000001")
    assert r.status_code == 403
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["type"].endswith("/dial-blocked")
    assert body["decision"]["allowed"] is False
    assert body["decision"]["rule_id"] == "window.outside_hours"
    assert datetime.fromisoformat(body["decision"]["next_allowed_at"]) == datetime(2026, 11, 25, 8, 0, tzinfo=SHANGHAI)
    assert await api.rows(tables.attempts) == before
    # The refusal is itself a logged decision.
    listed = (await api.get("/v1/blocked-dials", "comp-a")).json()["items"]
    assert [d["decision_id"] for d in listed] == [body["decision_id"]]


async def test_third_dial_within_an_hour_is_blocked_by_the_hourly_cap(api: Api) -> None:
    assert (await api.dial("col-a", "C-1", "13800000001")).status_code == 201
    api.clock.advance(minutes=5)
    assert (await api.dial("col-a", "C-1", "13800000001")).status_code == 201
    api.clock.advance(minutes=5)
    r = await api.dial("col-a", "C-1", "13800000001")
    assert r.status_code == 403
    assert r.json()["decision"]["rule_id"] == "cap.number_hourly"
    # The first of the two attempts leaves the rolling hour at 11:00 Shanghai.
    assert datetime.fromisoformat(r.json()["decision"]["next_allowed_at"]) == datetime(2026, 11, 24, 11, 0, tzinfo=SHANGHAI)


async def test_another_creditors_case_is_404_and_nothing_is_written(api: Api) -> None:
    before = await api.snapshot()
    r = await api.dial("col-a", "B-1", "18600000006")
    assert r.status_code == 404
    assert r.json()["type"].endswith("/no-such-case")
    assert await api.snapshot() == before


async def test_unknown_case_is_404_and_nothing_is_written(api: Api) -> None:
    before = await api.snapshot()
    r = await api.dial("col-a", "NOPE", "13800000001")
    assert r.status_code == 404
    assert await api.snapshot() == before


async def test_role_that_may_not_dial_is_403_forbidden_and_nothing_is_written(api: Api) -> None:
    before = await api.snapshot()
    r = await api.post("/v1/dials", "qa-a", {"case_id": "C-1", "number": "13800000001", "agent_id": "col-a"})
    assert r.status_code == 403
    assert r.json()["type"].endswith("/forbidden")
    assert await api.snapshot() == before


async def test_collector_cannot_dial_in_another_agents_name(api: Api) -> None:
    before = await api.snapshot()
    r = await api.dial("col-a2", "C-1", "13800000001", agent="col-a")
    assert r.status_code == 403
    assert r.json()["type"].endswith("/forbidden")
    assert await api.snapshot() == before


async def test_collector_not_assigned_to_the_case_is_blocked_by_policy_and_logged(api: Api) -> None:
    r = await api.dial("col-a2", "C-1", "13800000001")
    assert r.status_code == 403
    assert r.json()["decision"]["rule_id"] == "agent.not_assigned"


async def test_number_not_on_the_case_is_blocked_contact_not_authorized(api: Api) -> None:
    r = await api.dial("col-a", "C-1", "13600009999")
    assert r.status_code == 403
    assert r.json()["decision"]["rule_id"] == "contact.not_authorized"


async def test_pbx_may_dial_on_behalf_of_the_assigned_collector(api: Api) -> None:
    r = await api.post("/v1/dials", "pbx", {"case_id": "C-1", "number": "+8613800000001", "agent_id": "col-a"})
    assert r.status_code == 201, r.text


async def test_malformed_json_is_400_problem_and_nothing_is_written(api: Api) -> None:
    before = await api.snapshot()
    r = await api.client.post(
        "/v1/dials", content=b'{"case_id": "C-1",', headers={**api.auth("col-a"), "Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["type"].endswith("/bad-request")
    assert await api.snapshot() == before


async def test_missing_and_unknown_fields_are_422_naming_the_fields(api: Api) -> None:
    before = await api.snapshot()
    r = await api.post("/v1/dials", "col-a", {"case_id": "C-1", "agent_id": "col-a", "colour": "red"})
    assert r.status_code == 422
    fields = {e["field"] for e in r.json()["details"]["errors"]}
    assert fields == {"number", "colour"}
    assert await api.snapshot() == before


async def test_dial_check_answers_the_decision_and_reserves_nothing(api: Api) -> None:
    attempts = await api.rows(tables.attempts)
    for _ in range(3):
        r = await api.post("/v1/dial-checks", "col-a", {"case_id": "C-1", "number": "13800000001", "agent_id": "col-a"})
        assert r.status_code == 200
        assert r.json()["allowed"] is True
    assert await api.rows(tables.attempts) == attempts
    # Checks did not count: two real dials are still allowed within the hour.
    assert (await api.dial("col-a", "C-1", "13800000001")).status_code == 201
    assert (await api.dial("col-a", "C-1", "13800000001")).status_code == 201


async def test_what_if_time_is_for_compliance_only(api: Api) -> None:
    body = {"case_id": "C-1", "number": "13800000001", "agent_id": "col-a", "at": "2026-11-24T22:00:00+08:00"}
    before = await api.snapshot()
    r = await api.post("/v1/dial-checks", "col-a", body)
    assert r.status_code == 403
    assert await api.snapshot() == before
    r = await api.post("/v1/dial-checks", "comp-a", body)
    assert r.status_code == 200
    assert r.json()["decision"]["rule_id"] == "window.outside_hours"


async def test_dial_check_on_another_creditors_case_is_404(api: Api) -> None:
    r = await api.post("/v1/dial-checks", "comp-b", {"case_id": "C-1", "number": "13800000001", "agent_id": "col-a"})
    assert r.status_code == 404


async def test_naive_what_if_time_is_422(api: Api) -> None:
    r = await api.post(
        "/v1/dial-checks", "comp-a",
        {"case_id": "C-1", "number": "13800000001", "agent_id": "col-a", "at": "2026-11-24T22:00:00"},
    )
    assert r.status_code == 422
    assert r.json()["details"]["errors"][0]["field"] == "at"


def _counter(answer: dict, cap: str) -> int:
    return answer["decision"]["inputs_used"]["counters"][cap]["count"]


async def test_a_what_if_in_the_past_counts_only_the_attempts_made_before_the_asked_time(api: Api) -> None:
    for minute in (0, 10):
        api.clock.set(TUESDAY_10AM.replace(minute=minute))
        assert (await api.dial("col-a", "C-1", "13800000001")).status_code == 201
    api.clock.set(TUESDAY_10AM.replace(hour=15))
    body = {"case_id": "C-1", "number": "13800000001", "agent_id": "col-a"}

    between = (await api.post("/v1/dial-checks", "comp-a", {**body, "at": "2026-11-24T10:05:00+08:00"})).json()
    assert between["allowed"] is True  # then, only the 10:00 attempt existed
    assert _counter(between, "cap.number_hourly") == 1 and _counter(between, "cap.number_daily") == 1

    before_both = (await api.post("/v1/dial-checks", "comp-a", {**body, "at": "2026-11-24T09:00:00+08:00"})).json()
    assert before_both["allowed"] is True and _counter(before_both, "cap.number_daily") == 0

    after_both = (await api.post("/v1/dial-checks", "comp-a", {**body, "at": "2026-11-24T10:20:00+08:00"})).json()
    assert after_both["decision"]["rule_id"] == "cap.number_hourly"
    assert _counter(after_both, "cap.number_daily") == 2
    assert after_both["decision"]["next_allowed_at"] == "2026-11-24T11:00:00+08:00"


async def test_allowed_and_blocked_answers_give_every_instant_in_the_callees_zone_with_its_offset(api: Api) -> None:
    api.clock.set(datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc))  # 10:00 in Shanghai
    allowed = (await api.dial("col-a", "C-1", "13800000001")).json()["decision"]
    assert allowed["next_allowed_at"] == allowed["evaluated_at"] == "2026-11-24T10:00:00+08:00"
    api.clock.set(datetime(2026, 11, 24, 14, 0, tzinfo=timezone.utc))  # 22:00 in Shanghai
    blocked = (await api.dial("col-a", "C-1", "13800000001")).json()["decision"]
    assert blocked["rule_id"] == "window.outside_hours"
    assert blocked["evaluated_at"] == "2026-11-24T22:00:00+08:00"
    assert blocked["next_allowed_at"] == "2026-11-25T08:00:00+08:00"


async def test_a_blocked_dial_leaves_no_reference_cycle_for_the_cycle_collector(api: Api) -> None:
    # A refusal travels as an exception: one kept in a cycle with its traceback's frames
    # is freed only by the cycle collector, and a floor's blocked dials would keep it busy.
    api.clock.set(datetime(2026, 11, 24, 21, 30, tzinfo=SHANGHAI))
    assert (await api.dial("col-a", "C-1", "13800000001")).status_code == 403  # first use of every path
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds unreachable stays in gc.garbage
    try:
        for _ in range(3):
            assert (await api.dial("col-a", "C-1", "13800000001")).status_code == 403
        gc.collect()
        ours = sorted({type(o).__name__ if type(o).__name__ != "frame" else f"frame {o.f_code.co_name}"
                       for o in gc.garbage
                       if type(o).__module__.split(".")[0] in ("dialer", "policy", "adapters")
                       or (type(o).__name__ == "frame" and "/dialer/" in o.f_code.co_filename)})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert ours == []
