"""The SIP gate listener over real UDP and TCP sockets on loopback."""

from __future__ import annotations

import asyncio
import socket
import time


from tests.support.sip_fakes import HourlyCapSipAuthorizer, RecordingSipAuthorizer
from adapters.sip import invites
from adapters.sip.gate import SipDialAnswer, SipDialInput
from tests.conftest import captured_logs
from sipclient import TcpClient, UdpClient, derive, make_invite


def blocked(invite: SipDialInput) -> SipDialAnswer:
    return SipDialAnswer(
        allowed=False,
        rule_id="cap.number_hourly",
        reason='Number called 2 times this hour; "limit" 2',
        reason_zh="该号码一小时内已呼叫2次",
        retry_after=1800,
    )


async def test_an_allowed_invite_is_redirected_with_a_302_to_the_configured_route(start_gate):
    auth = HourlyCapSipAuthorizer()
    async with start_gate(auth) as gate:
        client = UdpClient(gate.port)
        req = make_invite("+8613800000011", gate_port=gate.port, call_id="allow-1@pbx", cseq=5)
        resp = await client.request(req)
        client_port = client.sock.getsockname()[1]
        client.close()
    assert resp.status == 302 and resp.reason == "Moved Temporarily"
    assert resp.get("contact") == "<sip:+8613800000011@127.0.0.1:5080>"
    assert resp.get("x-dialgate-attempt") == auth.attempts["+8613800000011"][0]
    assert resp.call_id == "allow-1@pbx" and resp.get("cseq") == "5 INVITE"
    assert resp.vias[0].branch is not None and resp.vias[0].branch.startswith("z9hG4bK-test")
    assert resp.vias[0].params.get("rport") == str(client_port)  # RFC 3581 rport filled in
    assert resp.vias[0].params.get("received") is None  # sent-by host already is the source
    assert resp.from_.tag is not None and resp.to.tag  # To-tag added by the gate


async def test_a_blocked_invite_gets_603_with_reason_warning_and_retry_after(start_gate):
    async with start_gate(RecordingSipAuthorizer(blocked)) as gate:
        client = UdpClient(gate.port)
        resp = await client.request(make_invite("+8613800000012", gate_port=gate.port))
        client.close()
    assert resp.status == 603 and resp.reason == "Decline"
    assert resp.get("reason") == 'SIP;cause=603;text="cap.number_hourly"'
    assert resp.get("warning") == '399 dialgate "Number called 2 times this hour; \\"limit\\" 2"'
    assert resp.get("retry-after") == "1800"
    assert resp.get("contact") is None


async def test_the_third_call_to_a_number_within_the_hour_is_declined(start_gate):
    auth = HourlyCapSipAuthorizer(per_hour=2)
    async with start_gate(auth) as gate:
        client = UdpClient(gate.port)
        statuses = [(await client.request(make_invite("+8613800000013", gate_port=gate.port))).status for _ in range(3)]
        client.close()
    assert statuses == [302, 302, 603]
    assert len(auth.attempts["+8613800000013"]) == 2


async def test_a_retransmitted_invite_gets_the_same_answer_and_is_decided_once(start_gate):
    auth = HourlyCapSipAuthorizer(per_hour=1)
    async with start_gate(auth) as gate:
        client = UdpClient(gate.port)
        req = make_invite("+8613800000014", gate_port=gate.port)
        first = await client.request(req)
        second = await client.request(req)
        client.close()
    assert first.status == second.status == 302
    assert first.get("x-dialgate-attempt") == second.get("x-dialgate-attempt")
    assert first.to.tag == second.to.tag
    assert len(auth.asked) == 1


async def test_a_retransmission_during_a_pending_decision_waits_for_that_same_decision(start_gate):
    release = asyncio.Event()

    async def slow(invite: SipDialInput) -> SipDialAnswer:
        await release.wait()
        return blocked(invite)

    auth = RecordingSipAuthorizer(slow)
    async with start_gate(auth) as gate:
        client = UdpClient(gate.port)
        req = make_invite("+8613800000015", gate_port=gate.port)
        client.send(req)
        await asyncio.wait_for(auth.changed.wait(), 3)
        client.send(req)  # retransmission while the first is still being decided
        other = UdpClient(gate.port)
        other.send(req)  # and one arriving from another socket
        release.set()
        a = await client.recv_final()
        b = await client.recv_final()
        c = await other.recv_final()
        client.close()
        other.close()
    assert a.status == b.status == c.status == 603
    assert len(auth.asked) == 1


async def test_the_final_answer_is_retransmitted_over_udp_until_the_ack_arrives(start_gate):
    async with start_gate(RecordingSipAuthorizer(blocked)) as gate:
        client = UdpClient(gate.port)
        req = make_invite("+8613800000016", gate_port=gate.port)
        first = await client.request(req)
        again = await client.recv_final(timeout=3)  # Timer G fires after T1 without an ACK
        assert again.status == 603 and again.to.tag == first.to.tag
        client.send(derive(req, "ACK", to_tag=first.to.tag))
        options = await client.request(make_invite("+8613800000016", gate_port=gate.port, method="OPTIONS"))
        # the ACK was absorbed: no response to it, the next thing on the socket is the OPTIONS answer
        from adapters.sip.transaction import transaction_key
        from adapters.sip.message import parse_message

        txn = gate.transactions.get(transaction_key(parse_message(req)))
        client.close()
    assert options.status == 200
    assert txn is not None and txn.acked


async def test_cancel_of_a_pending_invite_answers_200_and_487(start_gate):
    release = asyncio.Event()

    async def slow(invite: SipDialInput) -> SipDialAnswer:
        await release.wait()
        return SipDialAnswer(True, "allow", "Allowed", attempt_id="att-x")

    auth = RecordingSipAuthorizer(slow)
    async with start_gate(auth) as gate:
        client = UdpClient(gate.port)
        req = make_invite("+8613800000017", gate_port=gate.port)
        client.send(req)
        await asyncio.wait_for(auth.changed.wait(), 3)
        client.send(derive(req, "CANCEL"))
        got = {}
        for _ in range(2):
            m = await client.recv_final()
            got[m.cseq[1]] = m.status
        release.set()
        retrans = await client.request(req)  # the transaction's final answer stays the 487
        client.close()
    assert got == {"CANCEL": 200, "INVITE": 487}
    assert retrans.status == 487


async def test_cancel_after_the_final_answer_is_answered_200_and_changes_nothing(start_gate):
    async with start_gate(RecordingSipAuthorizer(blocked)) as gate:
        client = UdpClient(gate.port)
        req = make_invite("+8613800000018", gate_port=gate.port)
        assert (await client.request(req)).status == 603
        cancel = await client.request(derive(req, "CANCEL"))
        again = await client.request(req)
        client.close()
    assert cancel.status == 200 and cancel.cseq[1] == "CANCEL"
    assert again.status == 603


async def test_cancel_without_a_matching_invite_is_answered_481(start_gate):
    async with start_gate(RecordingSipAuthorizer()) as gate:
        client = UdpClient(gate.port)
        resp = await client.request(derive(make_invite(gate_port=gate.port), "CANCEL"))
        client.close()
    assert resp.status == 481


async def test_options_is_answered_200_with_allow_and_other_methods_405_or_501(start_gate):
    auth = RecordingSipAuthorizer()
    async with start_gate(auth) as gate:
        client = UdpClient(gate.port)
        options = await client.request(make_invite(gate_port=gate.port, method="OPTIONS"))
        register = await client.request(make_invite(gate_port=gate.port, method="REGISTER"))
        unknown = await client.request(make_invite(gate_port=gate.port, method="FROBNICATE"))
        client.close()
    assert options.status == 200 and options.get("allow") == "INVITE, ACK, CANCEL, OPTIONS"
    assert register.status == 405 and register.get("allow") == "INVITE, ACK, CANCEL, OPTIONS"
    assert unknown.status == 501
    assert auth.asked == []


async def test_an_authorizer_that_raises_fails_closed_and_the_listener_keeps_serving(start_gate):
    calls = []

    def broken(invite: SipDialInput) -> SipDialAnswer:
        calls.append(invite)
        if len(calls) == 1:
            raise ConnectionError("database is gone")
        return SipDialAnswer(True, "allow", "Allowed", attempt_id="att-2")

    async with start_gate(RecordingSipAuthorizer(broken)) as gate:
        client = UdpClient(gate.port)
        first = await client.request(make_invite("+8613800000019", gate_port=gate.port))
        second = await client.request(make_invite("+8613800000019", gate_port=gate.port))
        client.close()
    assert first.status == 603
    assert first.get("reason") == 'SIP;cause=603;text="system.store_unavailable"'
    assert second.status == 302


async def test_an_authorizer_that_hangs_times_out_into_a_503_after_100_trying_and_the_call_is_not_placed(start_gate):
    async def hang(invite: SipDialInput) -> SipDialAnswer:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async with start_gate(RecordingSipAuthorizer(hang), decision_timeout=0.5) as gate:
        client = UdpClient(gate.port)
        client.send(make_invite("+8613800000020", gate_port=gate.port))
        provisional = await client.recv()
        final = await client.recv_final(timeout=5)
        client.close()
    assert provisional.status == 100
    # no decision is not a block: 503 lets a dispatcher ask another gate; no 302, no Contact
    assert final.status == 503 and 'text="system.no_decision"' in (final.get("reason") or "")
    assert final.get("retry-after") == "1" and final.get("contact") is None


async def test_the_dial_input_carries_number_line_agent_case_and_attempt_from_the_headers(start_gate):
    auth = RecordingSipAuthorizer()
    async with start_gate(auth) as gate:
        client = UdpClient(gate.port)
        await client.request(
            make_invite(
                "013800000021",
                gate_port=gate.port,
                call_id="hdrs@pbx",
                extra=(
                    "P-Asserted-Identity: <sip:+86-21-6123-4567@pbx>\r\n"
                    "X-Agent-ID: a9\r\nX-Case-ID: C-77\r\nX-DialGate-Attempt: att-pre-1\r\n"
                ),
            )
        )
        await client.request(make_invite("+8613800000022", gate_port=gate.port, from_user="1002"))
        await client.request(make_invite("+8613800000023", gate_port=gate.port, from_user="1999"))
        client.close()
    first, second, third = auth.asked
    assert (first.number, first.dialed, first.caller_line) == ("+8613800000021", "013800000021", "+862161234567")
    assert (first.agent_id, first.case_id, first.attempt_id, first.call_id) == ("a9", "C-77", "att-pre-1", "hdrs@pbx")
    assert (second.agent_id, second.caller_line, second.extension) == ("a2", "1002", "1002")
    assert third.agent_id is None and third.case_id is None


async def test_a_malformed_invite_is_answered_400_and_never_reaches_the_authorizer(start_gate):
    auth = RecordingSipAuthorizer()
    async with start_gate(auth) as gate:
        client = UdpClient(gate.port)
        bad = make_invite(gate_port=gate.port).replace(b"Content-Length: ", b"Content-Length: 9")
        resp = await client.request(bad)
        client.close()
    assert resp.status == 400 and "Content-Length" in (resp.get("warning") or "")
    assert auth.asked == []


async def test_an_invite_without_a_dialed_number_is_answered_484(start_gate):
    auth = RecordingSipAuthorizer()
    async with start_gate(auth) as gate:
        client = UdpClient(gate.port)
        req = make_invite(gate_port=gate.port).replace(b"INVITE sip:+8613800000001@", b"INVITE sip:", 1)
        resp = await client.request(req)
        client.close()
    assert resp.status == 484 and auth.asked == []


async def test_tcp_carries_pipelined_invites_and_answers_each_on_the_same_connection(start_gate):
    auth = HourlyCapSipAuthorizer(per_hour=5)
    async with start_gate(auth) as gate:
        conn = await TcpClient.connect(gate.port)
        a = make_invite("+8613800000024", gate_port=gate.port, transport="TCP")
        b = make_invite("+8613800000025", gate_port=gate.port, transport="TCP")
        await conn.send(a + b)
        first = await conn.recv_final()
        second = await conn.recv_final()
        await conn.close()
    assert first is not None and second is not None
    assert {first.get("contact"), second.get("contact")} == {
        "<sip:+8613800000024@127.0.0.1:5080>",
        "<sip:+8613800000025@127.0.0.1:5080>",
    }


async def test_tcp_message_without_content_length_gets_400_and_the_connection_is_closed(start_gate):
    auth = RecordingSipAuthorizer()
    async with start_gate(auth) as gate:
        conn = await TcpClient.connect(gate.port)
        req = make_invite(gate_port=gate.port, transport="TCP")
        head, _, _ = req.partition(b"Content-Length")
        await conn.send(head + b"\r\n")
        resp = await conn.recv()
        closed = await conn.recv()
        await conn.close()
    assert resp is not None and resp.status == 400
    assert closed is None
    assert auth.asked == []


async def test_a_timed_out_decision_is_not_cancelled_half_way_and_the_call_is_still_not_placed(start_gate):
    release = asyncio.Event()
    done = asyncio.Event()
    finished: list[str] = []

    async def slow_store(invite: SipDialInput) -> SipDialAnswer:
        await release.wait()  # e.g. a store transaction that must not be cut in the middle
        finished.append(invite.call_id)
        done.set()
        return SipDialAnswer(True, "allow", "Allowed", attempt_id="att-late")

    async with start_gate(RecordingSipAuthorizer(slow_store), decision_timeout=0.3) as gate:
        client = UdpClient(gate.port)
        req = make_invite("+8613800000026", gate_port=gate.port, call_id="late@pbx")
        first = await client.request(req)
        pending_late = gate.pending_decisions  # the late decision still holds its slot
        release.set()
        again = await client.request(req)  # the transaction keeps its 503, not the late 302
        client.close()
        await asyncio.wait_for(done.wait(), 3)  # the decision completes in the background
        await asyncio.sleep(0)  # let its done-callbacks run
        pending_after = gate.pending_decisions
    assert first.status == 503 and 'text="system.no_decision"' in (first.get("reason") or "")
    assert again.status == 503
    assert finished == ["late@pbx"]
    assert (pending_late, pending_after) == (1, 0)


def held() -> tuple[RecordingSipAuthorizer, asyncio.Event]:
    """An authorizer whose decisions all wait for the returned event, then allow."""
    release = asyncio.Event()

    async def slow(invite: SipDialInput) -> SipDialAnswer:
        await release.wait()
        return SipDialAnswer(True, "allow", "Allowed", attempt_id=f"att-{invite.call_id}")

    return RecordingSipAuthorizer(slow), release


async def test_when_too_many_decisions_are_in_flight_new_invites_get_503_at_once(start_gate):
    auth, release = held()
    async with start_gate(auth, max_pending_decisions=2) as gate:
        client = UdpClient(gate.port)
        first = make_invite("+8613800000027", gate_port=gate.port)
        second = make_invite("+8613800000028", gate_port=gate.port)
        third = make_invite("+8613800000029", gate_port=gate.port)
        client.send(first)
        client.send(second)
        refused = await client.request(third)  # answered while the other two still wait
        release.set()
        decided = sorted([(await client.recv_final()).status, (await client.recv_final()).status])
        retransmitted = await client.request(third)  # the transaction keeps its 503
        pending_after = gate.pending_decisions
        client.close()
    assert refused.status == 503 and refused.get("retry-after") == "1"
    assert refused.get("reason") == 'SIP;cause=503;text="system.overloaded"'
    assert decided == [302, 302]
    assert retransmitted.status == 503
    assert len(auth.asked) == 2
    assert pending_after == 0


async def test_a_burst_of_invites_queued_on_the_udp_socket_is_read_and_answered_in_full(start_gate):
    auth = RecordingSipAuthorizer()
    # What is read is under test, not how fast: a busy machine must not turn the burst's
    # wait in the socket into load shedding.
    async with start_gate(auth, shed_after=30.0) as gate:
        client = UdpClient(gate.port)
        # all sent before the gate's loop runs once: they wait in its socket together
        for i in range(100):
            client.send(make_invite(f"+86138000{i:05d}", gate_port=gate.port, call_id=f"burst-{i}@pbx"))
        answers = [await client.recv_final() for _ in range(100)]
        client.close()
    assert sorted(a.call_id for a in answers) == sorted(f"burst-{i}@pbx" for i in range(100))
    assert {a.status for a in answers} == {302}
    assert sorted(i.call_id for i in auth.asked) == sorted(f"burst-{i}@pbx" for i in range(100))  # each decided once


async def test_the_largest_udp_datagram_is_read_whole(start_gate):
    auth = RecordingSipAuthorizer()
    async with start_gate(auth) as gate:
        client = UdpClient(gate.port)
        head, body = make_invite("+8613800000012", gate_port=gate.port, call_id="big-1@pbx").split(b"\r\n\r\n", 1)
        pad = 65507 - len(head) - len(body) - len(b"\r\nX-Pad: \r\n\r\n")
        big = head + b"\r\nX-Pad: " + b"p" * pad + b"\r\n\r\n" + body  # Content-Length still counts the SDP
        assert len(big) == 65507  # the largest UDP payload over IPv4
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        client.send(big)
        resp = await client.recv_final()
        client.close()
    # a datagram cut short would fail its Content-Length: 400, and no decision
    assert resp.call_id == "big-1@pbx" and resp.status == 302
    assert [i.call_id for i in auth.asked] == ["big-1@pbx"]


async def test_invites_shed_under_overload_are_all_answered_503_and_logged_in_one_line_with_their_count(start_gate):
    auth, release = held()
    async with start_gate(auth, max_pending_decisions=1) as gate:
        client = UdpClient(gate.port)
        with captured_logs(invites) as logs:
            client.send(make_invite("+8613800000030", gate_port=gate.port))  # takes the one slot
            shed = [await client.request(make_invite(f"+86138000001{i:02d}", gate_port=gate.port)) for i in range(20)]
        release.set()
        decided = await client.recv_final()
        client.close()
        stats = gate.stats
    assert [r.status for r in shed] == [503] * 20 and decided.status == 302
    assert stats.overloaded == 20
    lines = [e for e in logs if e["event"] == "sip.overloaded"]
    assert len(lines) == 1 and lines[0]["shed"] == 1  # the first shed INVITE; the rest within the second are counted


async def test_invites_are_shed_once_the_oldest_decision_in_flight_has_waited_longer_than_shed_after(start_gate):
    auth, release = held()
    async with start_gate(auth, shed_after=0.15) as gate:
        client = UdpClient(gate.port)
        client.send(make_invite("+8613800000041", gate_port=gate.port))
        # a second INVITE right away: the first has waited ~0, under shed_after
        client.send(make_invite("+8613800000042", gate_port=gate.port))
        trying = [await client.recv(), await client.recv()]  # 100 Trying comes at 200 ms: past 150 ms
        refused = await client.request(make_invite("+8613800000043", gate_port=gate.port))
        release.set()
        decided = sorted([(await client.recv_final()).status, (await client.recv_final()).status])
        client.close()
    assert [t.status for t in trying] == [100, 100]
    assert refused.status == 503 and refused.get("reason") == 'SIP;cause=503;text="system.overloaded"'
    assert decided == [302, 302]
    assert sorted(i.number for i in auth.asked) == ["+8613800000041", "+8613800000042"]


async def test_an_invite_that_waited_in_the_socket_longer_than_shed_after_is_answered_503_and_not_decided(start_gate):
    auth = RecordingSipAuthorizer()
    async with start_gate(auth, shed_after=0.1) as gate:
        client = UdpClient(gate.port)
        client.send(make_invite("+8613800000046", gate_port=gate.port, call_id="stale@pbx"))
        # The gate's event loop (this thread) busy for 250 ms, as under overload: the
        # INVITE waits in the socket's buffer, and the kernel's receive time says so.
        time.sleep(0.25)
        stale = await client.recv_final()
        fresh = await client.request(make_invite("+8613800000047", gate_port=gate.port, call_id="fresh@pbx"))
        client.close()
    assert stale.call_id == "stale@pbx" and stale.status == 503
    assert stale.get("reason") == 'SIP;cause=503;text="system.overloaded"'
    assert fresh.status == 302
    assert [i.call_id for i in auth.asked] == ["fresh@pbx"]  # the stale one was never decided


async def test_a_decision_past_its_time_out_does_not_make_the_gate_shed_every_later_invite(start_gate):
    never = asyncio.Event()

    async def wedged(invite: SipDialInput) -> SipDialAnswer:
        await never.wait()
        raise AssertionError("unreachable")

    async with start_gate(RecordingSipAuthorizer(wedged), decision_timeout=0.3, shed_after=0.1) as gate:
        client = UdpClient(gate.port)
        first = await client.request(make_invite("+8613800000044", gate_port=gate.port))  # 503 at the time-out
        later = await client.request(make_invite("+8613800000045", gate_port=gate.port))
        client.close()
        never.set()
    # the second INVITE was decided (and timed out in turn), not shed because of the first
    assert first.status == later.status == 503
    assert later.get("reason") == 'SIP;cause=503;text="system.no_decision"'
