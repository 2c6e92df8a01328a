"""The service's side of the edge link: :class:`DecisionServer` accepts the edge
process's link and answers each of its questions with the service's authorizer.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from typing import Any

import structlog

from adapters.sip.edge_link import BadLine, LinkError, Lines, decode_input, encode_answer
from adapters.sip.gate import SipDialAnswer, SipDialAuthorizer, SipDialInput, fail_closed_answer

log = structlog.get_logger("dialgate.sip")


class SipEdgeError(RuntimeError):
    """The edge process could not be started (the message says why)."""


class DecisionServer:
    """Answers the edge's requests with ``authorizer`` (the service's GateSipAuthorizer),
    each in a task of its own so that the decisions of one burst share a group commit."""

    def __init__(self, authorizer: SipDialAuthorizer, token: str) -> None:
        self._authorizer = authorizer
        self._token = token
        self._server: asyncio.AbstractServer | None = None
        self._link: Lines | None = None  # the edge's link, once its hello was right
        self._hellos: dict[int, asyncio.Future[tuple[str, int]]] = {}  # pid -> (host, port)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.pending = 0

    async def start(self, path: str) -> None:
        self._server = await asyncio.get_running_loop().create_unix_server(
            lambda: Lines(self._on_line, self._on_lost, self._on_bad), path=path
        )
        os.chmod(path, 0o600)

    def expect(self, pid: int) -> asyncio.Future[tuple[str, int]]:
        """The (host, port) the child ``pid`` will report listening on; its failure
        reason as a SipEdgeError."""
        fut: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
        self._hellos[pid] = fut
        return fut

    @property
    def linked(self) -> bool:
        return self._link is not None and not self._link.closed

    def _signed(self, msg: Any, kinds: tuple[str, ...]) -> bool:
        return (isinstance(msg, list) and len(msg) >= 3 and msg[0] in kinds and isinstance(msg[1], str)
                and msg[1].isascii() and secrets.compare_digest(msg[1], self._token) and type(msg[2]) is int)

    def _on_line(self, link: Lines, msg: Any) -> None:
        if not link.trusted:
            # the first line: the edge introducing itself, before it binds the SIP port
            if not (self._signed(msg, ("link",)) and len(msg) == 3):
                raise LinkError("the first line of a link must be the edge's introduction with its token")
            link.trusted = True
            if self._link is not None and self._link is not link:
                self._link.close()  # an edge that is on its way out
            self._link = link
            return
        if type(msg[0] if isinstance(msg, list) and msg else None) is int:
            self._decide(link, *decode_input(msg))
            return
        if not self._signed(msg, ("hello", "failed")):
            raise BadLine(f"not a request, hello or failure: {str(msg)[:80]!r}")
        fut = self._hellos.pop(msg[2], None)
        if msg[0] == "failed":
            if fut is not None and not fut.done():
                fut.set_exception(SipEdgeError(str(msg[3]) if len(msg) > 3 else "no reason given"))
            link.close()
            return
        if len(msg) != 5 or not isinstance(msg[3], str) or type(msg[4]) is not int:
            raise BadLine("a hello must be [\"hello\", token, pid, host, port]")
        if fut is not None and not fut.done():
            fut.set_result((msg[3], msg[4]))

    def _on_bad(self, link: Lines, exc: BadLine) -> None:
        if exc.req_id is not None and link.trusted:
            link.send(encode_answer(exc.req_id, fail_closed_answer()))  # that call fails closed; the link stays

    def _on_lost(self, link: Lines, exc: Exception | None) -> None:
        if link is self._link:
            self._link = None

    def _decide(self, link: Lines, req_id: int, dial: SipDialInput) -> None:
        self.pending += 1
        task = asyncio.get_running_loop().create_task(self._answer(link, req_id, dial))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, link: Lines, req_id: int, dial: SipDialInput) -> None:
        """Decide, and send the answer from the same task: a done-callback would take one
        more turn of the loop."""
        exc: BaseException | None = None
        try:
            answer: Any = await self._authorizer.authorize(dial)
        except asyncio.CancelledError:  # the service is closing; the edge's link goes with it
            self.pending -= 1
            raise
        except Exception as e:  # noqa: BLE001 - any failure fails closed
            answer, exc = None, e
        self.pending -= 1
        if not isinstance(answer, SipDialAnswer):
            log.warning("sip.authorizer_failed", error=type(exc).__name__ if exc else type(answer).__name__,
                        detail=str(exc)[:200], call_id=dial.call_id)
            answer = fail_closed_answer()
        if link.closed:
            # the edge went away with the INVITE; a retransmission to its successor is
            # decided afresh (an allowed attempt here stays reserved: fail closed)
            log.warning("sip.edge_answer_dropped", call_id=dial.call_id, allowed=answer.allowed,
                        attempt_id=answer.attempt_id)
            return
        link.send(encode_answer(req_id, answer))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._tasks:  # decisions in a store transaction finish; their answers are dropped
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._link is not None:
            self._link.close()
        for fut in self._hellos.values():
            if not fut.done():
                fut.set_exception(SipEdgeError("the service is closing"))


__all__ = ["DecisionServer", "SipEdgeError"]
