"""The SIP edge in a process of its own: ``[sip] edge = "process"``.

Why. Behind one PBX the gate decides every outbound call in one process, and with the
listener inline a third of that process's CPU per INVITE is SIP, not policy: reading
the datagram, parsing and validating it, the transaction table, building and sending
the 302/603, absorbing the ACK. Decide-and-reserve cannot spread over processes
without losing SQLite's single writer (each process's page cache is thrown away
whenever another process commits), but the SIP work can. With this setting the
service starts one child process that owns everything SIP, and keeps only the
decisions::

    PBX --UDP/TCP--> edge process: SipServer (parse, transactions, retransmissions,
                     100/302/603/503, ACK, CANCEL, OPTIONS, the 2 s fail-closed time-out)
                       |  one UNIX stream socket, JSON lines, batched per loop turn
                       v
                     service process: DecisionServer -> GateSipAuthorizer -> RequestDial

The listener is the same code in both modes (``server.py``); only its authorizer
differs: :class:`RemoteAuthorizer` forwards the :class:`SipDialInput` and awaits the
:class:`SipDialAnswer`. So every SIP behaviour (and every torture/PROTOS guarantee)
holds unchanged, and any failure of the link is what the listener already handles.
The service's own "could not decide" (its store failed) comes back as an answer, a 603
``system.store_unavailable``. An answer that does not come in time (the service's
process is frozen, or stuck) or a link that is down is no decision at all: the listener
answers 503 ``system.no_decision`` with ``Retry-After``, and while the service stays
silent it answers OPTIONS 503 too, so a dispatcher in front of two gates sends the
call, and the next ones, to the other gate. A 603 there would be final: a frozen
process is not a block.

The socket lives in a fresh 0700 directory, is itself 0600, and a link counts only
after its first line carries the token the service gave the child on its stdin (with
the rest of its configuration), so no other process can ask for or answer decisions.
The edge introduces itself before it binds the SIP port, so the first INVITE a
restarted edge reads already has a link the service accepts (a restart under load once
failed on INVITEs that arrived between bind and hello, then backed off for seconds).

Lifetimes. A spare child is started after each launch: it imports what an edge needs
and waits for its spec, so a restart on a busy machine costs a connect and a bind, not
a Python start. The child exits when its stdin reaches end of file (the service closed it,
or died: the kernel closes the pipe either way), when the link closes, or on SIGTERM;
it ignores SIGINT (a terminal's Ctrl-C reaches the whole process group; the service
shuts the edge down in order). The service restarts an edge that exits at once (50 ms)
when it had run for 5 s or more, else after 1 s, doubling up to 10 s while restarts
fail or edges keep dying young (a crash loop must not spin); it logs
``sip.edge_exited``; meanwhile the PBX's retransmissions (Timer A) carry its INVITEs
over the gap.

The parts: the link's wire format and line protocol (``edge_link.py``), the service's
side answering its questions (``edge_decisions.py``) and starting and supervising the
child (``edge_process.py``); this module is the child: :class:`RemoteAuthorizer` and
the entry point ``python -m adapters.sip.edge``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sys
from typing import Any, Mapping

import structlog

from adapters.sip.edge_decisions import DecisionServer, SipEdgeError
from adapters.sip.edge_link import (
    MAX_LINE,
    BadLine,
    LinkDown,
    LinkError,
    Lines,
    decode_answer,
    decode_input,
    dumps,
    encode_answer,
    encode_input,
)
from adapters.sip.edge_process import SipEdgeProcess
from adapters.sip.gate import SipDialAnswer, SipDialInput

log = structlog.get_logger("dialgate.sip")


class RemoteAuthorizer:
    """``SipDialAuthorizer`` in the edge: each INVITE's question goes over the link; the
    answer comes back by request id. With the link down it raises LinkDown, which the
    listener answers 503 ``system.no_decision`` (nothing was decided here)."""

    def __init__(self) -> None:
        self._link: Lines | None = None
        self._waiting: dict[int, asyncio.Future[SipDialAnswer]] = {}
        self._next = 0
        self.lost = asyncio.Event()

    async def connect(self, path: str | None = None, *, sock: Any = None) -> None:
        """Over the service's socket at ``path`` (or an already connected ``sock``)."""
        _, self._link = await asyncio.get_running_loop().create_unix_connection(
            lambda: Lines(self._on_line, self._on_lost, self._on_bad, trusted=True), path=path, sock=sock
        )

    def send(self, msg: list[Any]) -> None:
        if self._link is not None:
            self._link.send(dumps(msg))

    async def authorize(self, invite: SipDialInput) -> SipDialAnswer:
        link = self._link
        if link is None or link.closed:
            raise LinkDown("the SIP edge has no link to the decision service")
        self._next += 1
        req_id = self._next
        fut: asyncio.Future[SipDialAnswer] = asyncio.get_running_loop().create_future()
        line = encode_input(req_id, invite)  # BadLine here: this INVITE fails closed, nothing sent
        self._waiting[req_id] = fut
        link.send(line)
        try:
            return await fut
        finally:
            self._waiting.pop(req_id, None)

    def _on_line(self, link: Lines, msg: Any) -> None:
        req_id, answer = decode_answer(msg)
        fut = self._waiting.get(req_id)
        if fut is not None and not fut.done():
            fut.set_result(answer)

    def _on_bad(self, link: Lines, exc: BadLine) -> None:
        fut = self._waiting.get(exc.req_id) if exc.req_id is not None else None
        if fut is not None and not fut.done():
            fut.set_exception(exc)  # that INVITE fails closed (603); the link stays

    def _on_lost(self, link: Lines, exc: Exception | None) -> None:
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(LinkDown("the link to the decision service closed"))
        self.lost.set()

    def close(self) -> None:
        if self._link is not None:
            self._link.close()


class _Eof(asyncio.Protocol):
    def __init__(self, done: asyncio.Event) -> None:
        self._done = done

    def eof_received(self) -> bool:
        self._done.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._done.set()


async def _serve(spec: Mapping[str, Any]) -> int:
    from adapters.sip.config import load_sip_config
    from adapters.sip.server import SipServer

    token, pid = str(spec["token"]), os.getpid()
    config = load_sip_config(spec["sip"])
    remote = RemoteAuthorizer()
    await remote.connect(str(spec["socket"]))
    # introduce the link before the SIP port exists: an INVITE read right after the bind
    # must find a link the service already accepts (ordered: the stream keeps line order)
    remote.send(["link", token, pid])
    server = SipServer(remote, config)
    try:
        await server.start()
    except OSError as exc:
        reason = f"cannot listen on {config.listen} (UDP and TCP): {exc.strerror or exc}"
        log.error("sip.edge_failed", error=reason)
        remote.send(["failed", token, pid, reason])
        remote.close()  # flushes the line first
        return 2
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    await loop.connect_read_pipe(lambda: _Eof(stop), sys.stdin)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    remote.send(["hello", token, pid, server.host, server.port])
    gc.collect()  # as `dialgate serve` does once started (dialer.cli.freeze_long_lived)
    gc.freeze()
    gc.set_threshold(7000, 20, 20)
    lost = asyncio.ensure_future(remote.lost.wait())
    await asyncio.wait({asyncio.ensure_future(stop.wait()), lost}, return_when=asyncio.FIRST_COMPLETED)
    await server.close()
    remote.close()
    log.info("sip.edge_stopped", pid=pid, link_lost=lost.done())
    return 0


def main() -> int:
    """The child's entry point: ``python -m adapters.sip.edge``, its spec on stdin's first line."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # everything it will need, before the spec: a spare child is ready when it arrives
    import adapters.sip.config  # noqa: F401
    import adapters.sip.server  # noqa: F401
    from dialer.logs import configure_logging

    line = sys.stdin.buffer.readline(MAX_LINE)
    if not line:
        return 0  # a spare the service no longer needs
    try:
        spec = json.loads(line)
        spec["sip"], spec["socket"], spec["token"]
    except (ValueError, KeyError, TypeError) as exc:
        print(f"dialgate SIP edge: expected its spec as one JSON line on stdin ({exc})", file=sys.stderr)
        return 2
    log_spec = spec.get("log") or {}
    configure_logging(str(log_spec.get("level", "info")), bool(log_spec.get("json", True)))
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_serve(spec))
    return uvloop.run(_serve(spec))


__all__ = [
    "MAX_LINE",
    "BadLine",
    "DecisionServer",
    "LinkDown",
    "LinkError",
    "RemoteAuthorizer",
    "SipEdgeError",
    "SipEdgeProcess",
    "decode_answer",
    "decode_input",
    "encode_answer",
    "encode_input",
    "main",
]

if __name__ == "__main__":
    sys.exit(main())
