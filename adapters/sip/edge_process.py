"""Starting, supervising and stopping the SIP edge child process, from the service:
:class:`SipEdgeProcess`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

import structlog

from adapters.sip.edge_decisions import DecisionServer, SipEdgeError
from adapters.sip.edge_link import dumps
from adapters.sip.gate import SipDialAuthorizer

log = structlog.get_logger("dialgate.sip")

_REPO = str(Path(__file__).resolve().parents[2])  # so `python -m adapters.sip.edge` imports from any cwd


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
        proc.stdin.write(dumps(spec) + b"\n")
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


__all__ = ["SipEdgeProcess"]
