"""POST /v1/dials retried with an `Idempotency-Key`: the first answer again, decided and
counted once; the key reused for another dial, or malformed, is refused."""

from __future__ import annotations

from datetime import datetime

from adapters.db import tables
from gate_api_support import Api
from tests.support.builders import SHANGHAI

DIAL = {"case_id": "C-1", "number": "13800000001", "agent_id": "col-a"}


async def test_a_click_to_dial_retried_with_its_key_gets_the_same_answer_and_counts_once(api: Api) -> None:
    key = {"Idempotency-Key": "click-0001"}
    first = await api.post("/v1/dials", "col-a", DIAL, headers=key)
    api.clock.advance(seconds=3)
    again = await api.post("/v1/dials", "col-a", DIAL, headers=key)
    assert first.status_code == again.status_code == 201, first.text
    assert again.json() == first.json()
    assert "idempotent-replayed" not in first.headers and again.headers["idempotent-replayed"] == "true"
    assert await api.rows(tables.attempts) == 1
    assert await api.rows(tables.decisions, tables.decisions.c.kind == "dial") == 1
    # without the key a second click is a second dial, as always
    other = await api.post("/v1/dials", "col-a", DIAL)
    assert other.status_code == 201 and other.json()["attempt_id"] != first.json()["attempt_id"]


async def test_a_blocked_dial_retried_with_its_key_gets_the_same_403_and_one_logged_refusal(api: Api) -> None:
    api.clock.set(datetime(2026, 11, 24, 21, 30, tzinfo=SHANGHAI))
    key = {"Idempotency-Key": "night-1"}
    first = await api.post("/v1/dials", "col-a", DIAL, headers=key)
    again = await api.post("/v1/dials", "col-a", DIAL, headers=key)
    assert first.status_code == again.status_code == 403
    assert again.json()["decision_id"] == first.json()["decision_id"]
    assert again.json()["decision"]["rule_id"] == "window.outside_hours"
    assert again.headers["idempotent-replayed"] == "true"
    assert await api.rows(tables.decisions) == 1 and await api.rows(tables.attempts) == 0


async def test_a_key_reused_for_a_different_dial_is_422_naming_the_key_and_writes_nothing(api: Api) -> None:
    key = {"Idempotency-Key": "click-0002"}
    assert (await api.post("/v1/dials", "col-a", DIAL, headers=key)).status_code == 201
    before = await api.snapshot()
    r = await api.post("/v1/dials", "col-a", {**DIAL, "number": "13900000002"}, headers=key)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"].endswith("/idempotency-key-reused")
    assert r.json()["details"]["header"] == "Idempotency-Key" and "Idempotency-Key" in r.json()["detail"]
    assert await api.snapshot() == before


async def test_one_users_key_never_answers_another_users_dial(api: Api) -> None:
    key = {"Idempotency-Key": "shared-key"}
    mine = await api.post("/v1/dials", "col-a", DIAL, headers=key)
    theirs = await api.post("/v1/dials", "admin", DIAL, headers=key)
    assert mine.status_code == theirs.status_code == 201
    assert theirs.json()["decision_id"] != mine.json()["decision_id"]
    assert "idempotent-replayed" not in theirs.headers
    assert await api.rows(tables.attempts) == 2


async def test_a_malformed_idempotency_key_is_400_naming_the_header_and_writes_nothing(api: Api) -> None:
    before = await api.snapshot()
    for bad in ("", " ", "k" * 129, "caf\u00e9", "tab\there"):
        r = await api.post("/v1/dials", "col-a", DIAL, headers={"Idempotency-Key": bad.encode("utf-8")})
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["details"]["header"] == "Idempotency-Key"
    assert await api.snapshot() == before
