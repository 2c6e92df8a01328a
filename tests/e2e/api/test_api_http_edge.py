"""The HTTP edge every request crosses: request ids, the bearer header, problem instances,
and the log line a dial leaves behind (request id, caller, masked number)."""

from __future__ import annotations

import json
import re

import structlog

from dialer.logs import configure_logging
from gate_api_support import Api


async def test_an_incoming_request_id_is_echoed_on_the_answer(api: Api) -> None:
    r = await api.client.get("/healthz", headers={**api.auth("qa-a"), "X-Request-Id": "probe-7f3a"})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "probe-7f3a"


async def test_a_request_without_an_id_gets_a_fresh_32_hex_digit_id_each_time(api: Api) -> None:
    ids = [(await api.get("/healthz", "qa-a")).headers["x-request-id"] for _ in range(3)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), ids
    assert len(set(ids)) == 3


async def test_refusals_carry_a_request_id_too(api: Api) -> None:
    r = await api.client.get("/healthz", headers={"X-Request-Id": "no-token-1"})
    assert r.status_code == 401
    assert r.headers["x-request-id"] == "no-token-1"
    assert r.headers["www-authenticate"] == "Bearer"


async def test_health_answers_exactly_the_status_object_as_json(api: Api) -> None:
    r = await api.get("/healthz", "pbx")
    assert r.headers["content-type"] == "application/json"
    assert r.content == b'{"status":"ok"}'


async def test_the_bearer_scheme_is_case_insensitive(api: Api) -> None:
    r = await api.client.get("/healthz", headers={"Authorization": f"bearer {api.tokens['qa-a']}"})
    assert r.status_code == 200


async def test_a_problem_instance_is_the_request_path_with_its_reserved_characters_escaped(api: Api) -> None:
    r = await api.get("/v1/cases/no%3Fsuch%23case", "col-a")
    assert r.status_code == 404
    assert r.json()["instance"] == "/v1/cases/no%3Fsuch%23case"


async def test_a_dial_logs_its_decision_with_the_request_id_the_caller_and_the_number_masked(api: Api, capsys) -> None:  # type: ignore[no-untyped-def]
    configure_logging("info", json=True)
    try:
        r = await api.client.post(
            "/v1/dials", json={"case_id": "C-1", "number": "13800000001", "agent_id": "col-a"},
            headers={**api.auth("col-a"), "X-Request-Id": "req-dial-1"},
        )
        assert r.status_code == 201, r.text
        err = capsys.readouterr().err
    finally:
        structlog.contextvars.clear_contextvars()
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    decided = [e for e in events if e.get("event") == "dial.decided"]
    assert len(decided) == 1, err
    e = decided[0]
    assert (e["request_id"], e["user"], e["role"]) == ("req-dial-1", "col-a", "collector")
    assert e["decision_id"] == r.json()["decision_id"]
    assert e["number"] == "138****0001"
    assert "13800000001" not in err
