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

Wire format, one JSON array per line::

    edge -> service   ["link", token, pid]                 first, before the SIP port is bound
                      ["hello", token, pid, host, port]   once the listener is bound
                      ["failed", token, pid, reason]       instead, when it cannot listen
                      [id, number, caller_line, extension, agent_id, case_id,
                       attempt_id, call_id]                one per INVITE to decide
    service -> edge   [id, allowed, rule_id, reason, reason_zh, attempt_id,
                       retry_after, decision_id, number]

The socket lives in a fresh 0700 directory, is itself 0600, and a link counts only
after its first line carries the token the service gave the child on its stdin (with
the rest of its configuration), so no other process can ask for or answer decisions.
The edge introduces itself before it binds the SIP port, so the first INVITE a
restarted edge reads already has a link the service accepts (a restart under load once
failed on INVITEs that arrived between bind and hello, then backed off for seconds).

No input breaks the link. Every field of a question is bounded by the listener before
it is asked (a dial string of at most 32 characters, printable caller fields, a Call-ID
of at most 256 characters), so a line stays far below ``MAX_LINE`` even escaped; a line
that would not is refused by the edge before it is sent (the INVITE gets its 603, the
link is untouched). On a link that has introduced itself, a line the other end cannot
read (too long, not JSON, wrong shape) is logged and skipped, answered fail closed
when its request id can be read: one bad message costs one call, never the link.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import orjson
import structlog

from adapters.sip.gate import DecisionUnavailable, SipDialAnswer, SipDialAuthorizer, SipDialInput, fail_closed_answer

log = structlog.get_logger("dialgate.sip")

MAX_LINE = 65536  # far above any question or answer (their fields are bounded before sending)
_INPUT_FIELDS = 8  # SipDialInput's fields on the wire, after the request id (the number once)
_REPO = str(Path(__file__).resolve().parents[2])  # so `python -m adapters.sip.edge` imports from any cwd


class LinkError(ConnectionError):
    """The link between the edge and the service is down or spoke nonsense."""


class LinkDown(LinkError, DecisionUnavailable):
    """No link to the service, or it closed with the question unanswered: nothing was
    decided (the listener answers 503, not 603)."""


class BadLine(LinkError):
    """One line the other end cannot read; ``req_id`` when its request id could be read.
    The line is skipped, the link stays up."""

    def __init__(self, message: str, req_id: int | None = None) -> None:
        super().__init__(message)
        self.req_id = req_id


class SipEdgeError(RuntimeError):
    """The edge process could not be started (the message says why)."""


# -- the wire -----------------------------------------------------------------------------


def _dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON (orjson: a line each way per decision, so the encoder is on the hot path)."""
    return orjson.dumps(obj)


def encode_input(req_id: int, d: SipDialInput) -> bytes:
    """One question as a line (the dialed number once: its E.164 form, or the clean dial
    string the listener let through). Raises BadLine if it would exceed ``MAX_LINE``."""
    line = _dumps([req_id, d.number, d.caller_line, d.extension, d.agent_id, d.case_id, d.attempt_id, d.call_id,
                  d.request_key])
    if len(line) > MAX_LINE:
        raise BadLine(f"a question of {len(line)} bytes exceeds the link's {MAX_LINE}", req_id)
    return line


def _req_id(msg: Any) -> int | None:
    return msg[0] if isinstance(msg, list) and msg and type(msg[0]) is int else None


def decode_input(msg: Any) -> tuple[int, SipDialInput]:
    if not (isinstance(msg, list) and len(msg) == 1 + _INPUT_FIELDS and type(msg[0]) is int):
        raise BadLine(f"a request must be [id, {_INPUT_FIELDS} fields], got {str(msg)[:80]!r}", _req_id(msg))
    req_id, number, caller_line, extension, agent_id, case_id, attempt_id, call_id, request_key = msg
    for name, value in (("number", number), ("call_id", call_id)):
        if type(value) is not str:
            raise BadLine(f"request field {name} must be a string, got {type(value).__name__}", req_id)
    for name, value in (("caller_line", caller_line), ("extension", extension), ("agent_id", agent_id),
                        ("case_id", case_id), ("attempt_id", attempt_id), ("request_key", request_key)):
        if value is not None and type(value) is not str:
            raise BadLine(f"request field {name} must be a string or null, got {type(value).__name__}", req_id)
    return req_id, SipDialInput(number, number, caller_line, extension, agent_id, case_id, attempt_id, call_id,
                                request_key)


def encode_answer(req_id: int, a: SipDialAnswer) -> bytes:
    return _dumps([req_id, a.allowed, a.rule_id, a.reason, a.reason_zh, a.attempt_id, a.retry_after, a.decision_id,
                   a.number])


def decode_answer(msg: Any) -> tuple[int, SipDialAnswer]:
    if not (isinstance(msg, list) and len(msg) == 9 and type(msg[0]) is int):
        raise BadLine(f"an answer must be [id, 8 fields], got {str(msg)[:80]!r}", _req_id(msg))
    req_id, allowed, rule_id, reason, reason_zh, attempt_id, retry_after, decision_id, number = msg
    if type(allowed) is not bool or type(rule_id) is not str or type(reason) is not str or type(reason_zh) is not str:
        raise BadLine("answer fields allowed/rule_id/reason/reason_zh have the wrong types", req_id)
    if retry_after is not None and type(retry_after) is not int:
        raise BadLine("answer field retry_after must be an integer or null", req_id)
    for value in (attempt_id, decision_id, number):
        if value is not None and type(value) is not str:
            raise BadLine("answer fields attempt_id/decision_id/number must be strings or null", req_id)
    return req_id, SipDialAnswer(allowed, rule_id, reason, reason_zh, attempt_id, retry_after, decision_id, number)


class _Lines(asyncio.Protocol):
    """JSON lines over a stream socket. Complete lines go to ``on_line``. Until the link
    is ``trusted`` (its first line carried the token) anything unreadable closes it;
    after that a line that is too long, not JSON or refused by the handler (BadLine) is
    logged and skipped, and ``on_bad`` hears of it (with the request id when readable),
    so one bad message never takes the link down. Writes made in one loop turn leave in
    one ``write``, so a burst of decisions costs one system call each way."""

    def __init__(self, on_line: Callable[["_Lines", Any], None], on_lost: Callable[["_Lines", Exception | None], None],
                 on_bad: Callable[["_Lines", BadLine], None] | None = None, *, trusted: bool = False) -> None:
        self._on_line = on_line
        self._on_lost = on_lost
        self._on_bad = on_bad
        self._rest = b""
        self._skipping = False  # inside an over-long line: drop bytes up to its end
        self._out: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.trusted = trusted
        self.skipped = 0  # bad lines skipped

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._rest:
            data = self._rest + data
        lines = data.split(b"\n")
        self._rest = lines.pop()
        try:
            for line in lines:
                if self.closed:
                    return
                if self._skipping:
                    self._skipping = False  # the end of the over-long line
                    continue
                if len(line) > MAX_LINE:
                    if not self.trusted:
                        raise LinkError(f"a line longer than {MAX_LINE} bytes")
                    self._bad(BadLine(f"a line longer than {MAX_LINE} bytes (skipped)"))
                elif line:
                    self._line(line)
            if len(self._rest) > MAX_LINE:
                if not self.trusted:
                    raise LinkError(f"a line longer than {MAX_LINE} bytes")
                self._rest, self._skipping = b"", True
                self._bad(BadLine(f"a line longer than {MAX_LINE} bytes (skipped)"))
        except LinkError as exc:
            log.error("sip.edge_link_error", error=str(exc))
            self.close()

    def _line(self, line: bytes) -> None:
        try:
            msg = orjson.loads(line)
        except ValueError as exc:
            if not self.trusted:
                raise LinkError(f"not JSON: {exc}") from None
            self._bad(BadLine(f"not JSON: {exc}"))
            return
        try:
            self._on_line(self, msg)
        except BadLine as exc:
            if not self.trusted:
                raise
            self._bad(exc)

    def _bad(self, exc: BadLine) -> None:
        self.skipped += 1
        log.error("sip.edge_bad_line", error=str(exc)[:200], request=exc.req_id)
        if self._on_bad is not None:
            self._on_bad(self, exc)

    def send(self, line: bytes) -> None:
        if self.closed:
            return
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(line)

    def _flush(self) -> None:
        if self._out and not self.closed and self.transport is not None:
            self._out.append(b"")
            self.transport.write(b"\n".join(self._out))
        self._out = []

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self._flush()
            self.transport.close()
        self.closed = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._on_lost(self, exc)


# -- the service's side -------------------------------------------------------------------


class DecisionServer:
    """Answers the edge's requests with ``authorizer`` (the service's GateSipAuthorizer),
    each in a task of its own so that the decisions of one burst share a group commit."""

    def __init__(self, authorizer: SipDialAuthorizer, token: str) -> None:
        self._authorizer = authorizer
        self._token = token
        self._server: asyncio.AbstractServer | None = None
        self._link: _Lines | None = None  # the edge's link, once its hello was right
        self._hellos: dict[int, asyncio.Future[tuple[str, int]]] = {}  # pid -> (host, port)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.pending = 0

    async def start(self, path: str) -> None:
        self._server = await asyncio.get_running_loop().create_unix_server(
            lambda: _Lines(self._on_line, self._on_lost, self._on_bad), path=path
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

    def _on_line(self, link: _Lines, msg: Any) -> None:
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

    def _on_bad(self, link: _Lines, exc: BadLine) -> None:
        if exc.req_id is not None and link.trusted:
            link.send(encode_answer(exc.req_id, fail_closed_answer()))  # that call fails closed; the link stays

    def _on_lost(self, link: _Lines, exc: Exception | None) -> None:
        if link is self._link:
            self._link = None

    def _decide(self, link: _Lines, req_id: int, dial: SipDialInput) -> None:
        self.pending += 1
        task = asyncio.get_running_loop().create_task(self._answer(link, req_id, dial))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, link: _Lines, req_id: int, dial: SipDialInput) -> None:
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


class SipEdgeProcess:
    """Starts, supervises and stops the edge child; owns the DecisionServer and its socket.

    ``start()`` returns once the child listens (or raises SipEdgeError with its reason:
    the port is taken, it exited, it did not report within ``start_timeout``)."""

    def __init__(self, authorizer: SipDialAuthorizer, sip: Mapping[str, Any], *, log_level: str = "info",
                 log_json: bool = True, start_timeout: float = 30.0, restart_delay: float = 0.05,
                 stable_after: float = 5.0, spare: bool = True) -> None:
        self._sip = _plain(sip)
        self._sip.pop("edge", None)
        self._log = {"level": log_level, "json": log_json}
        self._timeout = start_timeout
        self._restart_delay = restart_delay
        self._stable_after = stable_after  # an edge that ran this long is restarted at once
        self._launched = 0.0  # loop time of the last successful launch
        self._token = secrets.token_hex(16)
        self._server = DecisionServer(authorizer, self._token)
        self._dir: str | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._spare: asyncio.subprocess.Process | None = None  # imported, waiting for a spec
        self._spares = spare
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self.host = ""
        self.port = 0
        self.restarts = 0
        self.last_exit: int | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    @property
    def socket_path(self) -> str | None:
        """The decision link's UNIX socket (in a private directory) while running."""
        return os.path.join(self._dir, "decide.sock") if self._dir is not None else None

    @property
    def pending_decisions(self) -> int:
        return self._server.pending

    @property
    def listening(self) -> bool:
        return self.pid is not None and self._server.linked

    async def __aenter__(self) -> "SipEdgeProcess":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="dialgate-sip-edge-")  # 0700
        try:
            await self._server.start(os.path.join(self._dir, "decide.sock"))
            await self._launch()
        except BaseException:
            await self.close()
            raise
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(), name="sip-edge-supervisor")

    async def _spawn(self) -> asyncio.subprocess.Process:
        """A child that imports everything it needs, then waits for its spec on stdin."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_REPO, env.get("PYTHONPATH", "")) if p)
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "adapters.sip.edge", stdin=asyncio.subprocess.PIPE, env=env
        )

    async def _launch(self) -> None:
        assert self._dir is not None
        # A spare started after the last launch has done its imports meanwhile (most of
        # a start on a busy machine: seconds): a restart only connects and binds.
        proc, self._spare = self._spare, None
        if proc is None or proc.returncode is not None:
            proc = await self._spawn()
        self._proc = proc
        ready = self._server.expect(proc.pid)
        spec = {"sip": self._sip, "socket": os.path.join(self._dir, "decide.sock"), "token": self._token, "log": self._log}
        assert proc.stdin is not None
        proc.stdin.write(_dumps(spec) + b"\n")
        exited = asyncio.ensure_future(proc.wait())
        first: set[asyncio.Future[Any]] = {ready, exited}
        try:
            await asyncio.wait(first, timeout=self._timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
        if ready.done() and not ready.cancelled():
            if ready.exception() is None:
                self.host, self.port = ready.result()
                self._sip["listen"] = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
                self._launched = asyncio.get_running_loop().time()
                if self._spares:
                    self._spare = await self._spawn()
                return  # a restart binds the same port, also when the first asked for port 0
            await self._stop(proc)
            raise SipEdgeError(f"the SIP edge process could not start: {ready.exception()}")
        ready.cancel()
        await self._stop(proc)
        if proc.returncode is not None and proc.returncode > 0:
            raise SipEdgeError(f"the SIP edge process exited with code {proc.returncode} before listening (see its log)")
        raise SipEdgeError(f"the SIP edge process did not report listening within {self._timeout:g} s")

    async def _supervise(self) -> None:
        delay = self._restart_delay
        while not self._closing:
            proc = self._proc
            assert proc is not None
            code = await proc.wait()
            if self._closing:  # closed while the edge ran; mypy holds the loop's check across the await
                return  # type: ignore[unreachable]
            self.last_exit = code
            loop = asyncio.get_running_loop()
            if loop.time() - self._launched < self._stable_after:
                delay = min(max(delay * 2, 1.0), 10.0)  # it died young: a crash loop must not spin
            else:
                delay = self._restart_delay  # every call of the floor waits for it: at once
            log.error("sip.edge_exited", code=code, pid=proc.pid, restart_in_s=delay)
            while True:  # one sip.edge_exited per exit; each failed restart says when the next is
                await asyncio.sleep(delay)
                try:
                    await self._launch()
                    break
                except SipEdgeError as exc:
                    delay = min(max(delay * 2, 1.0), 10.0)
                    log.error("sip.edge_restart_failed", error=str(exc), retry_in_s=delay)
            self.restarts += 1
            log.info("sip.edge_restarted", pid=self.pid, listen=self._sip["listen"])

    async def _stop(self, proc: asyncio.subprocess.Process) -> None:
        """Close its stdin (the edge's cue to finish its answers and exit), then SIGTERM,
        then SIGKILL: at most ~7 s, never a hang."""
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
        for step, wait in ((None, 5.0), (signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
            if proc.returncode is not None:
                return
            if step is not None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(step)
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), wait)

    async def close(self) -> None:
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._spare is not None:
            await self._stop(self._spare)
            self._spare = None
        if self._proc is not None:
            await self._stop(self._proc)
        await self._server.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _plain(value: Any) -> Any:
    """The frozen config (mapping proxies, tuples) as JSON-ready dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, frozenset, set)):
        return [_plain(v) for v in value]
    return value


# -- the edge's side ----------------------------------------------------------------------


class RemoteAuthorizer:
    """``SipDialAuthorizer`` in the edge: each INVITE's question goes over the link; the
    answer comes back by request id. With the link down it raises LinkDown, which the
    listener answers 503 ``system.no_decision`` (nothing was decided here)."""

    def __init__(self) -> None:
        self._link: _Lines | None = None
        self._waiting: dict[int, asyncio.Future[SipDialAnswer]] = {}
        self._next = 0
        self.lost = asyncio.Event()

    async def connect(self, path: str | None = None, *, sock: Any = None) -> None:
        """Over the service's socket at ``path`` (or an already connected ``sock``)."""
        _, self._link = await asyncio.get_running_loop().create_unix_connection(
            lambda: _Lines(self._on_line, self._on_lost, self._on_bad, trusted=True), path=path, sock=sock
        )

    def send(self, msg: list[Any]) -> None:
        if self._link is not None:
            self._link.send(_dumps(msg))

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

    def _on_line(self, link: _Lines, msg: Any) -> None:
        req_id, answer = decode_answer(msg)
        fut = self._waiting.get(req_id)
        if fut is not None and not fut.done():
            fut.set_result(answer)

    def _on_bad(self, link: _Lines, exc: BadLine) -> None:
        fut = self._waiting.get(exc.req_id) if exc.req_id is not None else None
        if fut is not None and not fut.done():
            fut.set_exception(exc)  # that INVITE fails closed (603); the link stays

    def _on_lost(self, link: _Lines, exc: Exception | None) -> None:
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


if __name__ == "__main__":
    sys.exit(main())
