"""Click-to-dial end to end through the real service (phase 2).

The real app (lifespan, SQLite file, vault, SIP gate, `[pbx] mode = "sip_ua"`) registers
on the reference Kamailio (deploy/kamailio); `POST /v1/dials` answers 201 at once; the
job rings the agent's pyVoIP phone (1001), decides again, calls the debtor's number
through Kamailio, which asks the SIP gate (the X-DialGate-Attempt reservation is matched,
not counted again) and follows its 302 to the debtor's pyVoIP phone; both talk, the
recording lands in the vault and decrypts to agent-left / debtor-right.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any, AsyncIterator

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sip"))

from kamailio_proc import kamailio_available, run_kamailio  # noqa: E402  (the SIP gate's helper)
from pbx_kamailio import free_port_block, free_udp_port  # noqa: E402
from pbx_phones import AGENT_HZ, DEBTOR_HZ, TestPhone, band_energy_ratio, dominant_frequency  # noqa: E402

from adapters.db import tables  # noqa: E402
from recordings.model import Actor  # noqa: E402
from tests.conftest import require_service  # noqa: E402
from tests.support import harness  # noqa: E402
from tests.support.builders import case_doc, users  # noqa: E402
from tests.support.net import free_tcp_and_udp_port as free_port  # noqa: E402

pytestmark = [
    pytest.mark.kamailio,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:RTP Packet failed to send:RuntimeWarning"),  # pyVoIP phones' own race
]

DEBTOR = "13800000001"
DEBTOR_E164 = "+8613800000001"


class Service(harness.Service):
    async def attempts_of(self, number: str) -> int:
        return await self.rows(tables.attempts, tables.attempts.c.number == number)

    async def call_ended(self, state_url: str, timeout: float) -> dict[str, Any]:
        """Wait until the attempt's call has ended (the job runs in the background)."""
        async with asyncio.timeout(timeout):
            while True:
                body = (await self.get(state_url, "col-a")).json()
                if body.get("call") and body["call"]["state"] == "ended":
                    return body
                await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def service(tmp_path: Path, *, pbx_server: str, gate_port: int, kam_port: int, rtp_base: int) -> AsyncIterator[Service]:
    config = {
        "paths": {"data_dir": str(tmp_path)},
        "sip": {
            "listen": f"127.0.0.1:{gate_port}",
            "route": f"sip:{{number}}@127.0.0.1:{kam_port}",
            "extensions": {"1001": "col-a"},
            "registered_lines": {"bank-a": ["+862161234567", "1001"]},
            "trusted_peers": ["127.0.0.1"],
        },
        "pbx": {
            "mode": "sip_ua", "max_bridged_calls": 2, "agent_ring_timeout": 4, "callee_ring_timeout": 8,
            "sip_ua": {"server": pbx_server, "username": "dialgate", "local": f"127.0.0.1:{rtp_base - 2}",
                       "rtp_ports": f"{rtp_base}-{rtp_base + 59}", "register_timeout": 2},
        },
    }
    async with harness.in_process(config, users=users("col-a", "data-a", "comp-a"), handle=Service, prepare=_key_for_bank_a,
                                  cases={"data-a": [case_doc("C-1", "bank-a", "col-a", DEBTOR)]}, drain=False) as run:
        yield run


def _key_for_bank_a(svc: Any) -> None:
    svc.vault.keys.create("bank-a")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Service, TestPhone, TestPhone]]:
    require_service("kamailio", kamailio_available(), "apt-get install kamailio")
    kport, gport = free_port(), free_port()
    base = free_port_block(100)
    async with run_kamailio(kport, f"127.0.0.1:{gport}"):
        # the service first: its gate binds gport before the phones pick ports of their own
        async with service(tmp_path, pbx_server=f"127.0.0.1:{kport}", gate_port=gport, kam_port=kport, rtp_base=base + 40) as run:
            # every port from one block checked free together: SIP and RTP never collide
            agent = TestPhone("1001", kport, base + 20, base, base + 9, tone_hz=AGENT_HZ)
            debtor = TestPhone(DEBTOR_E164, kport, base + 21, base + 10, base + 19, tone_hz=DEBTOR_HZ)
            await asyncio.to_thread(agent.start)
            try:
                await asyncio.to_thread(debtor.start)
                yield run, agent, debtor
            finally:
                await asyncio.to_thread(agent.stop)
                await asyncio.to_thread(debtor.stop)


async def test_a_click_rings_the_agent_then_the_debtor_bridges_them_and_the_vault_holds_the_stereo_recording(world) -> None:
    run, agent, debtor = world
    agent.reset("answer", expect_hz=DEBTOR_HZ)
    debtor.reset("answer", expect_hz=AGENT_HZ)

    r = await run.post("/v1/dials", "col-a", {"case_id": "C-1", "number": DEBTOR, "agent_id": "col-a"})
    assert r.status_code == 201, r.text
    body = r.json()
    attempt_id, state_url = body["attempt_id"], body["state_url"]
    assert state_url == f"/v1/attempts/{attempt_id}" and body["state"] == "authorised"

    assert await asyncio.to_thread(agent.heard_tone.wait, 25), "the agent never heard the debtor"
    assert await asyncio.to_thread(debtor.heard_tone.wait, 25), "the debtor never heard the agent"
    async with run.svc.store.write() as uow:  # a supervisor records a stop during the call
        case = await uow.cases.get("bank-a", "C-1")
        await uow.cases.update(case.pk, run.svc.clock.now(), flags=frozenset({"complaint_risk"}))
    live = (await run.get(state_url, "col-a")).json()["call"]
    assert live["state"] == "connected" and live["stops_during_call"] == ["complaint_risk"]  # shown, not cut
    debtor.hangup_now.set()
    shown = await run.call_ended(state_url, 20)
    assert shown["call"]["stops_during_call"] == ["complaint_risk"]

    call = shown["call"]
    assert call["cause"] == "completed", shown
    assert list(call["timestamps"]) == ["originating", "agent_ringing", "agent_answered", "callee_ringing", "connected", "ended"]
    assert shown["connected"] is True
    # the debtor leg went through the SIP gate, matched the reservation: one attempt, consumed
    assert shown["state"] == "dialing"
    assert await run.attempts_of(DEBTOR_E164) == 1

    recording_id = call["recording_id"]
    assert recording_id
    audio = await run.svc.vault.open_audio(recording_id, Actor("comp-a", "compliance", frozenset({"bank-a"})), reason="e2e check")
    data = audio.read_all()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    stereo = np.frombuffer(data[44:], dtype="<i2").reshape(-1, 2)
    left, right = stereo[:, 0], stereo[:, 1]
    assert abs(dominant_frequency(left) - AGENT_HZ) < 15 and abs(dominant_frequency(right) - DEBTOR_HZ) < 15
    assert band_energy_ratio(left, DEBTOR_HZ) < 0.05 and band_energy_ratio(right, AGENT_HZ) < 0.05
    rec = await run.svc.vault.get(recording_id, Actor("comp-a", "compliance", frozenset({"bank-a"})))
    assert (rec.case_id, rec.agent, rec.source_id) == ("C-1", "col-a", attempt_id)


async def test_an_agent_who_does_not_answer_releases_the_attempt_so_it_does_not_count_and_the_debtor_never_rings(world) -> None:
    run, agent, debtor = world
    agent.reset("ignore")
    debtor.reset("answer")
    r = await run.post("/v1/dials", "col-a", {"case_id": "C-1", "number": DEBTOR, "agent_id": "col-a"})
    assert r.status_code == 201, r.text
    shown = await run.call_ended(r.json()["state_url"], 20)
    assert shown["call"]["cause"] == "agent_no_answer"
    assert shown["state"] == "released" and not debtor.rang.is_set()
    # released: the next click is decided as if this one never happened (cap: 2 per hour)
    for _ in range(2):
        r2 = await run.post("/v1/dials", "col-a", {"case_id": "C-1", "number": DEBTOR, "agent_id": "col-a"})
        assert r2.status_code == 201, r2.text


async def test_a_complaint_flag_recorded_while_the_agent_phone_rings_blocks_the_debtor_leg(world) -> None:
    run, agent, debtor = world
    agent.reset("answer", hold_answer=True)
    debtor.reset("answer")
    r = await run.post("/v1/dials", "col-a", {"case_id": "C-1", "number": DEBTOR, "agent_id": "col-a"})
    assert r.status_code == 201, r.text
    assert await asyncio.to_thread(agent.rang.wait, 10)
    async with run.svc.store.write() as uow:  # a supervisor flags the case meanwhile
        case = await uow.cases.get("bank-a", "C-1")
        await uow.cases.update(case.pk, run.svc.clock.now(), flags=frozenset({"complaint_risk"}))
    agent.may_answer.set()
    shown = await run.call_ended(r.json()["state_url"], 20)
    assert (shown["call"]["cause"], shown["call"]["rule_id"]) == ("blocked", "case.complaint_risk")
    assert list(shown["call"]["timestamps"]) == ["originating", "agent_ringing", "agent_answered", "ended"]
    assert shown["state"] == "released" and not debtor.rang.is_set()
    assert await asyncio.to_thread(agent.ended.wait, 5), "the agent's phone was left connected"


async def test_a_busy_debtor_ends_the_attempt_busy_and_it_counts_once(world) -> None:
    run, agent, debtor = world
    agent.reset("answer")
    debtor.reset("busy")
    r = await run.post("/v1/dials", "col-a", {"case_id": "C-1", "number": DEBTOR, "agent_id": "col-a"})
    shown = await run.call_ended(r.json()["state_url"], 20)
    assert shown["call"]["cause"] == "busy" and debtor.rang.is_set()
    assert shown["state"] == "dialing" and shown["connected"] is False  # dialled through the gate: it counts
    assert await run.attempts_of(DEBTOR_E164) == 1


async def test_a_dial_beyond_the_configured_call_slots_is_refused_503_at_once_and_nothing_is_reserved(world) -> None:
    run, agent, debtor = world
    agent.reset("ignore")  # both slots stay busy ringing the agent (max_bridged_calls = 2)
    debtor.reset("answer")
    first = [await run.post("/v1/dials", "col-a", {"case_id": "C-1", "number": DEBTOR, "agent_id": "col-a"}) for _ in range(2)]
    assert [r.status_code for r in first] == [201, 201], [r.text for r in first]
    async with asyncio.timeout(5):
        while run.svc.pbx.limiter.in_use < 2:  # both jobs have taken their slot
            await asyncio.sleep(0.02)
    third = await run.post("/v1/dials", "col-a", {"case_id": "C-1", "number": DEBTOR, "agent_id": "col-a"})
    assert third.status_code == 503, third.text
    assert third.json()["details"] == {"max_bridged_calls": 2} and "上限" in third.json()["detail"]
    assert await run.attempts_of(DEBTOR_E164) == 2
    for r in first:
        assert (await run.call_ended(r.json()["state_url"], 20))["call"]["cause"] == "agent_no_answer"
    async with asyncio.timeout(5):
        while run.svc.pbx.limiter.in_use:  # a job lets its slot go just after it records the call's end
            await asyncio.sleep(0.02)


async def test_with_the_pbx_unreachable_the_service_starts_and_refuses_dials_with_503_and_a_reason(tmp_path: Path) -> None:
    dead = free_udp_port()
    base = free_port_block(64)
    async with service(tmp_path, pbx_server=f"127.0.0.1:{dead}", gate_port=free_port(), kam_port=dead, rtp_base=base + 2) as run:
        status = (await run.get("/v1/pbx", "col-a")).json()
        assert status["mode"] == "sip_ua" and status["state"] != "registered" and status["error"]
        ready = (await run.get("/readyz", "col-a")).json()
        assert ready["pbx"]["state"] != "registered" and ready["pbx"]["error"]
        r = await run.post("/v1/dials", "col-a", {"case_id": "C-1", "number": DEBTOR, "agent_id": "col-a"})
        assert r.status_code == 503, r.text
        assert "PBX" in r.json()["detail"] and "未注册" in r.json()["detail"]
        assert await run.attempts_of(DEBTOR_E164) == 0
