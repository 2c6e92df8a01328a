"""`[sip] edge = "process"`: the SIP listener in a child process, decisions in the service.

Driven through :class:`SipEdgeProcess` with in-memory authorizers standing in for the
service's GateSipAuthorizer (the service itself runs both modes in test_sip_service.py):
a real child process, real UDP and a real UNIX socket between them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from adapters.sip import edge_process
from adapters.sip.edge import SipEdgeError, SipEdgeProcess
from tests.support.sip_fakes import HourlyCapSipAuthorizer, RecordingSipAuthorizer
from adapters.sip.message import SipMessage
from tests.support.net import free_tcp_and_udp_port as free_port
from adapters.sip.service import SipEdgeHealth
from sipclient import GATE_CONFIG, UdpClient, make_invite, wait_until
from tests.conftest import captured_logs

REPO = Path(__file__).resolve().parents[3]


def edge_config(port: int) -> dict[str, Any]:
    return {**GATE_CONFIG, "listen": f"127.0.0.1:{port}", "edge": "process"}


async def ask(port: int, invite: bytes, timeout: float = 3.0) -> SipMessage:
    """One INVITE to the gate on ``port`` over UDP; its final response."""
    client = UdpClient(port)
    try:
        return await client.request(invite, timeout=timeout)
    finally:
        client.close()


def udp_socket_owners(port: int) -> set[int]:
    """Pids holding the UDP socket bound to 127.0.0.1:<port> (from /proc, as ss -p does)."""
    inodes = set()
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"0100007F:{port:04X}":
            inodes.add(f"socket:[{fields[9]}]")
    owners = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    owners.add(int(pid))
            except OSError:
                pass
    return owners


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # exited (a zombie waits for a parent that may be gone too)


async def test_the_edge_process_owns_the_sip_socket_and_the_service_side_decides():
    port = free_port()
    authorizer = RecordingSipAuthorizer()
    async with SipEdgeProcess(authorizer, edge_config(port)) as edge:
        resp = await ask(port, make_invite("13800000001", gate_port=port, call_id="edge-1@pbx"))
        assert resp.status == 302
        assert resp.get("contact") == "<sip:+8613800000001@127.0.0.1:5080>"
        assert resp.get("x-dialgate-attempt") == "att-edge-1@pbx"
        # the question crossed the link intact, and the socket is the child's, not ours
        [asked] = authorizer.asked
        assert (asked.number, asked.agent_id, asked.call_id, asked.caller_line) == (
            "+8613800000001", "a1", "edge-1@pbx", "1001")
        assert udp_socket_owners(port) == {edge.pid}
        assert edge.pid != os.getpid()


async def test_a_retransmitted_invite_gets_the_same_answer_and_is_decided_once():
    port = free_port()
    authorizer = HourlyCapSipAuthorizer(per_hour=5)
    async with SipEdgeProcess(authorizer, edge_config(port)):
        client = UdpClient(port)
        invite = make_invite("13800000001", gate_port=port)
        first = await client.request(invite)
        again = await client.request(invite)
        client.close()
    assert first.status == again.status == 302
    assert first.get("to") == again.get("to") and first.get("x-dialgate-attempt") == again.get("x-dialgate-attempt")
    assert len(authorizer.asked) == 1 and authorizer.attempts["+8613800000001"] == ["att-000001"]


async def test_a_declined_call_carries_the_services_rule_reason_and_retry_after_over_the_link():
    port = free_port()
    async with SipEdgeProcess(HourlyCapSipAuthorizer(per_hour=0, retry_after=1800), edge_config(port)):
        resp = await ask(port, make_invite("13800000001", gate_port=port))
    assert resp.status == 603
    assert resp.get("reason") == 'SIP;cause=603;text="cap.number_hourly"'
    assert resp.get("retry-after") == "1800"
    assert "limit 0" in resp.get("warning")


async def test_a_decision_that_never_comes_is_answered_503_so_another_gate_may_decide():
    port = free_port()
    never = asyncio.Event()

    async def hang(invite):  # noqa: ANN001 - a service stuck in its store
        await never.wait()

    async with SipEdgeProcess(RecordingSipAuthorizer(hang), edge_config(port)):
        resp = await ask(port, make_invite("13800000001", gate_port=port), timeout=10)
        never.set()
    # a service stuck (or frozen) is no decision: not the final 603 of a block
    assert resp.status == 503
    assert resp.get("reason") == 'SIP;cause=503;text="system.no_decision"'
    assert resp.get("retry-after") == "1"


async def test_a_killed_edge_is_restarted_on_the_same_port_and_decides_again():
    port = free_port()
    authorizer = HourlyCapSipAuthorizer(per_hour=5)
    async with SipEdgeProcess(authorizer, edge_config(port)) as edge:
        first = edge.pid
        assert first is not None
        health = SipEdgeHealth(edge)  # what the console's health strip shows
        assert health.health()[0] == "ok"
        os.kill(first, signal.SIGKILL)
        # the link closes a moment before the exit status is collected: wait for both
        await wait_until(lambda: not edge.listening and edge.last_exit is not None, 10,
                         "the service to notice the edge is gone")
        assert health.health() == ("down", f"SIP edge process restarting (last exit code {-signal.SIGKILL})")
        await wait_until(lambda: edge.restarts == 1 and edge.listening, 20, "the edge to be restarted")
        assert edge.pid != first and edge.last_exit == -signal.SIGKILL
        assert health.health()[0] == "ok" and f"edge process {edge.pid}" in health.health()[1]
        resp = await ask(port, make_invite("13800000002", gate_port=port), timeout=5)
    assert resp.status == 302
    assert [a.number for a in authorizer.asked] == ["+8613800000002"]


async def test_a_restart_that_cannot_bind_is_retried_with_back_off_and_logged_once_per_attempt():
    port = free_port()
    authorizer = HourlyCapSipAuthorizer(per_hour=5)
    async with SipEdgeProcess(authorizer, edge_config(port)) as edge:
        first = edge.pid
        assert first is not None
        squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # someone else takes the port meanwhile

        def squat() -> bool:
            try:
                squatter.bind(("127.0.0.1", port))
            except OSError:
                return False  # the killed edge's socket is not closed yet
            return True

        with captured_logs(edge_process) as logs:
            os.kill(first, signal.SIGKILL)
            # the first restart comes >= 1 s after the exit: the squatter is there before it
            await wait_until(squat, 10, "the killed edge to let go of its port")
            try:
                await wait_until(lambda: any(e["event"] == "sip.edge_restart_failed" for e in logs), 20,
                                 "a restart attempt to fail on the taken port")
            finally:
                squatter.close()
            await wait_until(lambda: edge.restarts == 1 and edge.listening, 30, "the edge to be restarted")
        events = [e["event"] for e in logs if e["event"].startswith("sip.edge_")]
        assert events[0] == "sip.edge_exited" and events[-1] == "sip.edge_restarted"
        assert events.count("sip.edge_exited") == 1  # one exit, however many attempts it takes
        failed = [e for e in logs if e["event"] == "sip.edge_restart_failed"]
        assert failed and f"127.0.0.1:{port}" in failed[0]["error"]
        assert [e["retry_in_s"] for e in failed] == [2.0, 4.0, 8.0][: len(failed)]
        resp = await ask(port, make_invite("13800000003", gate_port=port), timeout=5)
    assert resp.status == 302


async def test_a_taken_port_fails_the_start_with_the_reason_and_leaves_no_process():
    port = free_port()
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", port))
    edge = SipEdgeProcess(RecordingSipAuthorizer(), edge_config(port))
    try:
        with pytest.raises(SipEdgeError, match=f"cannot listen on 127.0.0.1:{port}"):
            await edge.start()
    finally:
        taken.close()
    assert edge.pid is None and edge.socket_path is None


async def test_stopping_the_service_side_stops_the_edge_and_frees_the_port():
    port = free_port()
    async with SipEdgeProcess(RecordingSipAuthorizer(), edge_config(port)) as edge:
        pid = edge.pid
        assert pid is not None and not gone(pid)
    assert edge.pid is None and gone(pid)
    assert udp_socket_owners(port) == set()


async def test_a_link_without_the_token_is_closed_before_any_decision():
    port = free_port()
    authorizer = RecordingSipAuthorizer()
    async with SipEdgeProcess(authorizer, edge_config(port)) as edge:
        assert edge.socket_path is not None
        assert os.stat(edge.socket_path).st_mode & 0o777 == 0o600
        reader, writer = await asyncio.open_unix_connection(edge.socket_path)
        hello = ["hello", "not-the-token", os.getpid(), "127.0.0.1", port]
        request = [1, "+8613800000001", "13800000001", None, "1001", "a1", None, None, "intruder@x"]
        writer.write(json.dumps(hello).encode() + b"\n" + json.dumps(request).encode() + b"\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing answered
        writer.close()
        # the real edge is untouched and still decides
        resp = await ask(port, make_invite("13800000001", gate_port=port, call_id="real@pbx"))
    assert resp.status == 302
    assert [a.call_id for a in authorizer.asked] == ["real@pbx"]


PARENT = textwrap.dedent(
    """
    import asyncio, json, sys
    from adapters.sip.edge import SipEdgeProcess
    from tests.support.sip_fakes import RecordingSipAuthorizer

    async def main():
        edge = SipEdgeProcess(RecordingSipAuthorizer(), json.loads(sys.argv[1]))
        await edge.start()
        print(edge.pid, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def test_an_edge_whose_service_died_exits_by_itself():
    port = free_port()
    parent = subprocess.Popen([sys.executable, "-c", PARENT, json.dumps(edge_config(port))],
                              stdout=subprocess.PIPE, cwd=REPO, start_new_session=True)
    try:
        assert parent.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(parent.stdout.readline), 30)
        edge_pid = int(line)
        assert not gone(edge_pid)
        parent.kill()  # no clean-up runs: the edge learns it from its stdin closing
        parent.wait(10)
        await wait_until(lambda: gone(edge_pid), 10, "the orphaned edge to exit")
        assert udp_socket_owners(port) == set()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        if parent.stdout is not None:
            parent.stdout.close()


async def test_an_introduced_link_survives_lines_it_cannot_read_and_fails_only_that_call_closed():
    port = free_port()
    authorizer = RecordingSipAuthorizer()
    async with SipEdgeProcess(authorizer, edge_config(port)) as edge:
        assert edge.socket_path is not None
        reader, writer = await asyncio.open_unix_connection(edge.socket_path)
        good = [9, "+8613800000009", None, "1001", "a1", None, None, "good@pbx", "invite-identity-9"]
        lines = [
            json.dumps(["link", edge._token, os.getpid()]).encode(),  # what an edge sends first
            b"not json",
            b"[" + b"1," * 40_000 + b"1]",  # 80 KB: longer than a line may be
            json.dumps([5, "+8613800000005", None]).encode(),  # a request of the wrong shape
            json.dumps(good).encode(),
        ]
        writer.write(b"\n".join(lines) + b"\n")
        await writer.drain()
        answers = {}
        while len(answers) < 2:
            answer = json.loads(await asyncio.wait_for(reader.readline(), 5))
            answers[answer[0]] = answer
        writer.close()
        # the readable bad request failed closed, the good one was decided, on the same link
        assert answers[5][1:3] == [False, "system.store_unavailable"]
        assert answers[9][1:3] == [True, "allow"]
        assert [a.call_id for a in authorizer.asked] == ["good@pbx"]


async def test_a_restarted_edge_decides_an_invite_that_arrives_right_after_it_binds():
    port = free_port()
    authorizer = RecordingSipAuthorizer()
    async with SipEdgeProcess(authorizer, edge_config(port), stable_after=0) as edge:
        first = edge.pid
        assert first is not None
        client = UdpClient(port)
        with captured_logs(edge_process) as logs:
            os.kill(first, signal.SIGKILL)
            # INVITEs keep coming while the edge restarts: the first one the new edge reads
            # must be decided (its link is introduced before the port is bound)
            answer = None
            for i in range(400):
                client.send(make_invite("13800000001", gate_port=port, call_id=f"during-{i}@pbx"))
                try:
                    answer = await client.recv_final(timeout=0.05)
                except (TimeoutError, asyncio.TimeoutError):
                    continue
                break
            # The supervisor counts the restart once the new edge's spare is up too,
            # which may come after the first answer.
            await wait_until(lambda: edge.restarts == 1, 10, "the restart to be counted")
        client.close()
        assert answer is not None and answer.status == 302
        assert edge.restarts == 1 and edge.pid != first
        events = [e["event"] for e in logs if e["event"].startswith("sip.edge_")]
        assert events == ["sip.edge_exited", "sip.edge_restarted"]  # no failed restart, no link refused
        assert [e["restart_in_s"] for e in logs if e["event"] == "sip.edge_exited"] == [0.05]
