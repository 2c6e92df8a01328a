"""The SIP gate inside the real service: `[sip] listen` set, the app's lifespan starts
the listener, INVITEs are decided by RequestDial on a real SQLite file, and the
decisions show up in `GET /v1/blocked-dials` like API ones."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

import pytest

from tests.support.net import free_tcp_and_udp_port as free_port
from dialer.logs import configure_logging
from service_app import Running, start_service
from tests.support.builders import case_doc
from sipclient import UdpClient


@pytest.fixture(params=["inline", "process"])
async def running(request: Any, tmp_path: Any) -> AsyncIterator[Running]:
    """The service with its SIP listener inline and, with `[sip] edge = "process"`, in a
    child process that asks the service for each decision: every test here holds for both."""
    async with start_service(tmp_path, sip_port=free_port(), edge=request.param) as run:
        yield run


async def test_the_service_starts_the_sip_listener_when_sip_listen_is_set(running):
    client = UdpClient(running.sip_port)
    resp = await client.request(running.invite("13800000001", method="OPTIONS"))
    client.close()
    assert resp.status == 200
    status, detail = running.svc.sip.health()  # the console's health strip
    assert status == "ok" and f"127.0.0.1:{running.sip_port}" in detail


async def test_an_allowed_sip_dial_reserves_an_attempt_and_redirects(running):
    client = UdpClient(running.sip_port)
    resp = await client.request(running.invite("13800000001"))
    client.close()
    assert resp.status == 302
    assert resp.get("contact") == "<sip:+8613800000001@127.0.0.1:5080>"
    attempt_id = resp.get("x-dialgate-attempt")
    async with running.svc.store.read() as uow:
        attempt = await uow.attempts.get(attempt_id)
    assert attempt is not None and attempt.channel == "sip" and attempt.case_id == "C-1"
    assert attempt.agent_id == "col-a" and attempt.state == "dialing"


async def test_the_third_sip_call_within_the_hour_is_declined_and_listed_in_blocked_dials(running):
    client = UdpClient(running.sip_port)
    statuses = []
    for _ in range(3):
        last = await client.request(running.invite("13800000001"))
        statuses.append(last.status)
    client.close()
    assert statuses == [302, 302, 603]
    assert last.get("reason") == 'SIP;cause=603;text="cap.number_hourly"'
    assert last.get("retry-after") is not None and int(last.get("retry-after")) > 0
    assert await running.attempts("sip") == 2
    r = await running.get("/v1/blocked-dials", "comp-a")
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [(i["channel"], i["rule_id"], i["case_id"], i["agent_id"]) for i in items] == [
        ("sip", "cap.number_hourly", "C-1", "col-a")
    ]


async def test_each_sip_decision_is_one_info_log_line_with_the_call_id_attempt_and_decision_id(running, capsys):
    configure_logging("info", json=True)  # as `dialgate serve` does; lines go to stderr
    client = UdpClient(running.sip_port)
    allowed = await client.request(running.invite("13800000001", call_id="log-a@pbx"))
    refused = await client.request(running.invite("13800000001", from_user="1999", call_id="log-b@pbx"))
    client.close()
    assert allowed.status == 302 and refused.get("reason") == 'SIP;cause=603;text="agent.unknown"'
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]

    def about(call_id: str) -> list[dict[str, Any]]:
        return [e for e in lines if e.get("call_id") == call_id and e["level"] != "debug"]

    # one line ties the PBX's call to the decision log: no second line per INVITE
    [decided] = about("log-a@pbx")
    async with running.svc.store.read() as uow:
        attempt = await uow.attempts.get(allowed.get("x-dialgate-attempt"))
    assert decided["event"] == "dial.decided" and decided["allowed"] is True and decided["channel"] == "sip"
    assert decided["attempt_id"] == attempt.attempt_id and decided["decision_id"] == attempt.decision_id
    assert decided["number"] == "138****0001"
    # a refusal before the policy is logged once too, with its rule
    assert [(e["event"], e["rule_id"]) for e in about("log-b@pbx")] == [("sip.refused", "agent.unknown")]


async def test_a_click_to_dial_authorisation_is_consumed_by_the_sip_invite_without_counting_again(running):
    r = await running.post("/v1/dials", "col-a", {"case_id": "C-1", "number": "13800000001", "agent_id": "col-a"})
    assert r.status_code in (200, 201), r.text
    attempt_id = r.json()["attempt_id"]
    before = await running.attempts()
    client = UdpClient(running.sip_port)
    by_id = await client.request(running.invite("13800000001", extra=f"X-DialGate-Attempt: {attempt_id}\r\n"))
    client.close()
    assert by_id.status == 302 and by_id.get("x-dialgate-attempt") == attempt_id
    assert await running.attempts() == before
    async with running.svc.store.read() as uow:
        assert (await uow.attempts.get(attempt_id)).state == "dialing"


async def _a_click_paused_before_its_invite_is_declined(running: Running) -> None:
    r = await running.post("/v1/dials", "col-a", {"case_id": "C-1", "number": "13800000001", "agent_id": "col-a"})
    assert r.status_code == 201, r.text
    attempt_id = r.json()["attempt_id"]
    paused = await running.post("/v1/cases/C-1/pause", "data-a", {"reason": "委托方要求暂停 / creditor pause"})
    assert paused.status_code == 200, paused.text
    client = UdpClient(running.sip_port)
    # generous: a loaded machine must not turn a slow answer into a failure
    declined = await client.request(running.invite("13800000001", extra=f"X-DialGate-Attempt: {attempt_id}\r\n"),
                                    timeout=30)
    client.close()
    assert declined.status == 603 and declined.get("reason") == 'SIP;cause=603;text="case.paused"'
    async with running.svc.store.read() as uow:
        assert (await uow.attempts.get(attempt_id)).state == "authorised"  # never dialled
    r = await running.get("/v1/blocked-dials", "comp-a")
    assert [(i["channel"], i["rule_id"]) for i in r.json()["items"]] == [("sip", "case.paused")]


async def test_a_click_whose_case_is_paused_before_the_pbx_dials_it_is_declined_at_the_invite(running):
    await _a_click_paused_before_its_invite_is_declined(running)


async def test_on_postgresql_a_click_whose_case_is_paused_before_the_pbx_dials_it_is_declined_at_the_invite(tmp_path):
    from tests.integration.store.gate_store_support import private_pg_database

    async with private_pg_database() as url, start_service(tmp_path, sip_port=free_port(), store_url=url) as running:
        await _a_click_paused_before_its_invite_is_declined(running)


async def test_a_pending_authorisation_is_matched_by_agent_and_number(running):
    r = await running.post("/v1/dials", "col-a", {"case_id": "C-1", "number": "13800000001", "agent_id": "col-a"})
    attempt_id = r.json()["attempt_id"]
    client = UdpClient(running.sip_port)
    resp = await client.request(running.invite("+8613800000001"))  # E.164 form of the same number
    client.close()
    assert resp.get("x-dialgate-attempt") == attempt_id
    assert await running.attempts() == 1


async def test_on_postgresql_an_invite_naming_no_case_consumes_the_authorisation_then_resolves_by_agent_and_number(
    tmp_path,
):
    from tests.integration.store.gate_store_support import private_pg_database

    async with private_pg_database() as url, start_service(tmp_path, sip_port=free_port(), store_url=url) as running:
        r = await running.post("/v1/dials", "col-a", {"case_id": "C-1", "number": "13800000001", "agent_id": "col-a"})
        assert r.status_code in (200, 201), r.text
        attempt_id = r.json()["attempt_id"]
        client = UdpClient(running.sip_port)
        # generous: a loaded machine must not turn a slow answer into a failure
        consumed = await client.request(running.invite("13800000001"), timeout=30)
        resolved = await client.request(running.invite("13800000001"), timeout=30)
        client.close()
        assert consumed.status == 302 and consumed.get("x-dialgate-attempt") == attempt_id
        assert resolved.status == 302 and resolved.get("x-dialgate-attempt") not in (None, attempt_id)
        assert await running.attempts() == 2
        async with running.svc.store.read() as uow:
            again = await uow.attempts.get(resolved.get("x-dialgate-attempt"))
        assert again is not None and again.case_id == "C-1" and again.channel == "sip"


async def test_a_caller_line_that_is_not_registered_is_declined_with_line_not_registered(running):
    client = UdpClient(running.sip_port)
    resp = await client.request(running.invite("13800000001", extra="P-Asserted-Identity: <sip:+862199999999@pbx>\r\n"))
    client.close()
    assert resp.status == 603 and resp.get("reason") == 'SIP;cause=603;text="line.not_registered"'
    assert await running.attempts() == 0
    r = await running.get("/v1/blocked-dials", "comp-a")
    assert [i["rule_id"] for i in r.json()["items"]] == ["line.not_registered"]


async def test_another_agents_case_and_an_unknown_extension_are_declined_without_an_attempt(running):
    client = UdpClient(running.sip_port)
    other = await client.request(running.invite("13700000003"))  # C-2 belongs to col-a2
    unknown = await client.request(running.invite("13800000001", from_user="1999"))
    with_case = await client.request(running.invite("13700000003", extra="X-Case-ID: C-2\r\n"))
    client.close()
    assert other.get("reason") == 'SIP;cause=603;text="case.not_found"'
    assert unknown.get("reason") == 'SIP;cause=603;text="agent.unknown"'
    # naming the case does not help: the policy refuses a case not assigned to the agent
    assert with_case.status == 603 and with_case.get("reason") == 'SIP;cause=603;text="agent.not_assigned"'
    assert await running.attempts() == 0
    # All three are blocked decisions in the log. The pre-policy refusal from a
    # registered line (1001, bank-a's) is under that creditor, for its compliance
    # staff; the one from unregistered extension 1999 belongs to no creditor (chain
    # "-", for admins), so bank-a's compliance does not see it.
    r = await running.get("/v1/blocked-dials", "comp-a")
    assert sorted(i["rule_id"] for i in r.json()["items"]) == ["agent.not_assigned", "case.not_found"]
    async with running.svc.store.read() as uow:
        rows, _ = await uow.decisions.query(allowed=False, creditors=None, since=None, until=None, agent_id=None,
                                            rule_id="agent.unknown", case_id=None, after=None, limit=10)
    assert [(r.chain, r.channel, r.number_masked) for _, r in rows] == [("-", "sip", "138****0001")]


async def test_two_active_cases_of_the_agent_holding_the_number_are_declined_as_ambiguous(tmp_path):
    cases = [case_doc("C-1", "bank-a", "col-a", "13800000001"), case_doc("C-9", "bank-a", "col-a", "13800000001")]
    async with start_service(tmp_path, sip_port=free_port(), cases=cases) as run:
        client = UdpClient(run.sip_port)
        resp = await client.request(run.invite("13800000001"))
        named = await client.request(run.invite("13800000001", extra="X-Case-ID: C-9\r\n"))
        client.close()
        assert resp.status == 603 and resp.get("reason") == 'SIP;cause=603;text="case.ambiguous"'
        assert named.status == 302  # X-Case-ID says which
        async with run.svc.store.read() as uow:
            attempt = await uow.attempts.get(named.get("x-dialgate-attempt"))
        assert attempt is not None and attempt.case_id == "C-9"
        assert await run.attempts() == 1


async def test_a_paused_case_holding_the_number_does_not_count_as_the_agents_case(tmp_path):
    paused = case_doc("C-P", "bank-a", "col-a", "13800000001") | {"status": "paused"}
    async with start_service(tmp_path, sip_port=free_port(), cases=[paused, case_doc("C-A", "bank-a", "col-a", "13800000001")]) as run:
        client = UdpClient(run.sip_port)
        resp = await client.request(run.invite("13800000001"))
        client.close()
        assert resp.status == 302
        async with run.svc.store.read() as uow:
            attempt = await uow.attempts.get(resp.get("x-dialgate-attempt"))
        assert attempt is not None and attempt.case_id == "C-A"


async def test_a_pending_authorisation_wins_over_the_agents_active_case_with_the_same_number(tmp_path):
    # col-a has C-1 (active) and C-9 (active) with the same number: ambiguous on its own,
    # but a click-to-dial for C-9 says which one the INVITE is
    cases = [case_doc("C-1", "bank-a", "col-a", "13800000001"), case_doc("C-9", "bank-a", "col-a", "13800000001")]
    async with start_service(tmp_path, sip_port=free_port(), cases=cases) as run:
        r = await run.post("/v1/dials", "col-a", {"case_id": "C-9", "number": "13800000001", "agent_id": "col-a"})
        assert r.status_code in (200, 201), r.text
        attempt_id = r.json()["attempt_id"]
        client = UdpClient(run.sip_port)
        resp = await client.request(run.invite("13800000001"))
        client.close()
        assert resp.status == 302 and resp.get("x-dialgate-attempt") == attempt_id
        assert await run.attempts() == 1
