"""The `sip_ua` PBX adapter inside the service: the `Pbx` port, its progress table, the
vault sink, and the extension factory that wires them (`[pbx] mode = "sip_ua"`).

    POST /v1/dials ─ Gate.request_dial ─ pbx.admit()  (not registered / full → 503)
                     └ decided, attempt reserved ("authorised"), 201 + state URL
                     └ pbx.originate(attempt) → job (this module), returns at once:
          agent leg ─ answered ─ Gate.recheck_attempt ─ allowed ─ debtor leg through
          the PBX, which asks the SIP gate: X-DialGate-Attempt matches the reservation
          (302, not counted again) ─ answered ─ bridge ─ stereo WAV streamed into the
          vault as source "attempt"/<attempt id>, linked to case, agent and number.

How the attempt counts (policy caps, "attempts of this number/case"): the reservation
counts from the moment it is made (so two clicks cannot both pass a cap). If the debtor
is never dialled — the agent does not answer, the second decision blocks, the PBX fails
before the debtor leg — the attempt is set `released` and stops counting. Once the
debtor's phone was dialled it counts, answered or not; answered calls are also marked
`connected` (the "connected calls" caps).

Every call state is kept with its timestamp, cause, rule id and the recording id, and
every change of the attempt is written, through the application's one writer of attempt
state (dialer/attempt_state.py `AttemptStates`); `GET /v1/attempts/{id}` shows them.
"""

from __future__ import annotations

import asyncio
import sys
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, AsyncIterator

import structlog

from adapters.pbx.bridge import BridgeLimiter
from adapters.pbx.config import PbxConfig, PbxConfigError, parse_pbx_config
from adapters.pbx.errors import CapacityExceeded, PbxUnavailable
from adapters.pbx.originate import AttemptState, EndCause, Originator, OriginateRequest, Progress, Recheck
from adapters.pbx.sip_ua import SipUserAgent
from dialer.attempt_state import AttemptStates
from dialer.errors import ApiError
from dialer.model import AttemptRecord, CallProgress, Principal

if TYPE_CHECKING:
    from dialer.services import Services

log = structlog.get_logger("adapters.pbx.service")

PBX_ACTOR = Principal(user_id=0, name="pbx-ua", role="pbx", creditors=frozenset())


class PbxServiceUnavailable(ApiError):
    status, problem_id, title = 503, "pbx-unavailable", "Click-to-dial unavailable"


class VaultSink:
    """Streams a recording into the vault's `ingest` (one forward-only body) as it is made.

    The vault sees the streaming WAV header (sizes 0xFFFFFFFF: read to end of file) while
    the call runs; `seal` hands it the final header and the duration, and the vault
    re-seals the recording with them before it commits (`Vault.ingest(finalize=…)`), so
    the stored file is an exact standard WAV."""

    def __init__(self, vault: Any, request: Any, actor: Any, max_chunks: int = 16) -> None:
        self._vault, self._request, self._actor = vault, request, actor
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=max_chunks)
        self._task: asyncio.Task[Any] | None = None
        self._final: tuple[bytes, float | None] | None = None

    async def _body(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self._queue.get()
            if chunk is None:
                return
            yield chunk

    async def _put(self, item: bytes | None) -> None:
        if self._task is None:
            self._task = asyncio.create_task(
                self._vault.ingest(self._request, self._body(), self._actor, finalize=lambda: self._final),
                name="pbx-vault-ingest",
            )
        put = asyncio.ensure_future(self._queue.put(item))
        await asyncio.wait([put, self._task], return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()
        if self._task.done() and item is not None:
            self._task.result()  # raises the vault's error
            raise RuntimeError("the vault finished reading before the recording ended")

    async def write(self, chunk: bytes) -> None:
        await self._put(chunk)

    async def seal(self, *, final_header: bytes, duration: float) -> str | None:
        self._final = (final_header, duration)  # read by the vault once the body has ended
        await self._put(None)
        assert self._task is not None
        result = await self._task
        return str(result.recording.recording_id)

    async def abort(self, reason: str) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()  # the vault aborts its temporary: nothing half-written
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass


class SipUaPbx:
    """The `Pbx` port over `SipUserAgent`: originate() starts a job and returns at once."""

    def __init__(self, services: Services, cfg: PbxConfig, ua: SipUserAgent) -> None:
        self.services = services
        self.cfg = cfg
        self.ua = ua
        self.limiter = BridgeLimiter(cfg.max_bridged_calls)
        self.originator = Originator(
            ua, self.limiter, agent_ring_timeout=cfg.agent_ring_timeout, callee_ring_timeout=cfg.callee_ring_timeout,
            clock=lambda: services.clock.now().astimezone(timezone.utc),
        )
        self.states = AttemptStates(services.store, services.clock)
        self._jobs: set[asyncio.Task[Any]] = set()

    # the Gate asks before deciding (dialer.usecases: request_dial)
    def admit(self) -> None:
        if not self.ua.registered:
            health = self.ua.health()
            raise PbxServiceUnavailable(
                "未注册到 PBX，暂不能点击拨号 / not registered on the PBX: click-to-dial is unavailable",
                details={"pbx": health["server"], "error": health["error"]},
            )
        if self.limiter.in_use >= self.limiter.max_calls:
            raise PbxServiceUnavailable(
                f"同时通话数已达上限 {self.limiter.max_calls}，请稍后再拨 / "
                f"all {self.limiter.max_calls} call slots are busy, try again shortly",
                details={"max_bridged_calls": self.limiter.max_calls},
            )

    def health(self) -> dict[str, Any]:
        return {"mode": "sip_ua", **self.ua.health(), "calls": self.limiter.in_use, "max_bridged_calls": self.limiter.max_calls}

    async def originate(self, attempt: AttemptRecord) -> None:
        extension = self.cfg.extensions.get(attempt.agent_id)
        try:
            if extension is None:
                raise PbxUnavailable(f"坐席 {attempt.agent_id} 没有分机 / agent {attempt.agent_id} has no extension ([pbx.extensions])")
            slot = self.originator.reserve()
        except (PbxUnavailable, CapacityExceeded) as exc:
            now = self._now()
            await self._record(attempt, Progress(attempt.attempt_id, AttemptState.ORIGINATING, now))
            await self._record(
                attempt, Progress(attempt.attempt_id, AttemptState.ENDED, now, cause=EndCause.FAILED, detail=exc.reason),
                release=True,
            )
            return
        job = asyncio.create_task(self._run(slot, attempt, extension), name=f"pbx-originate-{attempt.attempt_id}")
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _run(self, slot: Any, attempt: AttemptRecord, extension: str) -> None:
        structlog.contextvars.bind_contextvars(attempt_id=attempt.attempt_id)
        req = OriginateRequest(
            attempt_id=attempt.attempt_id, agent_extension=extension, callee_number=attempt.number,
            case_id=attempt.case_id, agent_id=attempt.agent_id,
            # the SIP gate's contract: agent, case and the line presented (the agent's extension)
            callee_headers={
                "X-Agent-ID": attempt.agent_id,
                "X-Case-ID": attempt.case_id,
                "P-Asserted-Identity": f"<sip:{extension}@{self.ua.config.server}>",
            },
        )

        async def redecide(_r: OriginateRequest) -> Recheck:
            decision = await self.services.gate.recheck_attempt(attempt.attempt_id, PBX_ACTOR)
            return Recheck(decision.allowed, None if decision.allowed else decision.rule_id, None if decision.allowed else decision.reason)

        connected = False

        async def report(p: Progress) -> None:
            nonlocal connected
            if p.state is AttemptState.CONNECTED:
                connected = True
                await self.states.mark_connected(attempt)
            # released in the same transaction as the `ended` row: whoever sees the end
            # sees the attempt no longer counting
            await self._record(
                attempt, p, release=p.state is AttemptState.ENDED and not p.callee_dialled, case_flags=connected
            )

        async def sink_factory(_r: OriginateRequest) -> Any:
            vault = self.services.vault
            if vault is None:
                return None
            from recordings.model import Actor, IngestRequest, Link

            return VaultSink(
                vault,
                IngestRequest(
                    source_kind="attempt", source_id=attempt.attempt_id, started_at=self._now(), media_type="audio/wav",
                    link=Link(creditor=attempt.creditor, case_id=attempt.case_id, agent=attempt.agent_id, number=attempt.number),
                ),
                Actor("pbx-ua", "pbx"),
            )

        await self.originator.run(slot, req, redecide=redecide, report=report, sink_factory=sink_factory)

    # persistence -------------------------------------------------------------------
    def _now(self) -> datetime:
        return self.services.clock.now().astimezone(timezone.utc)

    async def _record(self, attempt: AttemptRecord, p: Progress, *, release: bool = False, case_flags: bool = False) -> None:
        progress = CallProgress(
            p.attempt_id, str(p.state), p.at, cause=str(p.cause) if p.cause else None, rule_id=p.rule_id,
            detail=p.detail, recording_id=p.recording_id,
        )
        await self.states.record_progress(attempt, progress, release=release, case_flags=case_flags)

    async def drain(self, timeout: float = 10.0) -> None:
        if self._jobs:
            done, pending = await asyncio.wait(list(self._jobs), timeout=timeout)
            for job in pending:
                job.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)


@asynccontextmanager
async def open_pbx(services: Services) -> AsyncIterator[Any]:
    """Extension (dialer/bootstrap.py): `[pbx] mode = "sip_ua"` registers on the PBX and
    attaches it as the gate's PBX; "none" (default) leaves authorise-then-dial."""
    from dialer.errors import ConfigError

    try:
        cfg = parse_pbx_config(services.config.section("pbx"), services.config.section("sip"))
    except PbxConfigError as exc:
        raise ConfigError(f"{services.config.source}: {exc}") from exc
    if cfg.mode != "sip_ua":
        yield None
        return
    assert cfg.ua is not None
    validity = services.config.gate.attempt_validity_s
    if cfg.agent_ring_timeout + 10 > validity:
        # the SIP gate matches the debtor leg to the reservation only while it is valid
        raise ConfigError(
            f"{services.config.source}: pbx.agent_ring_timeout ({cfg.agent_ring_timeout:g} s) must be at least 10 s "
            f"shorter than gate.attempt_validity_s ({validity} s)"
        )
    if cfg.gil_switch_ms:
        # RTP relaying is many short wake-ups on several threads: with CPython's default
        # 5 ms GIL hand-over the relayed audio queues behind whoever holds the GIL.
        sys.setswitchinterval(cfg.gil_switch_ms / 1000)
    ua = SipUserAgent(cfg.ua)
    pbx = SipUaPbx(services, cfg, ua)
    services.attach_pbx(pbx)
    stop = asyncio.Event()
    try:
        await ua.start()
    except PbxUnavailable as exc:
        # The service still starts: dials are refused with 503 and the reason, and we
        # keep trying to register in the background.
        log.error("pbx.unavailable", reason=exc.reason)
    keeper = asyncio.create_task(_keep_registered(ua, stop), name="pbx-register-keeper")
    try:
        yield pbx
    finally:
        stop.set()
        await pbx.drain()
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        await ua.stop()


async def _keep_registered(ua: SipUserAgent, stop: asyncio.Event) -> None:
    delay = 2.0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
            return
        except TimeoutError:
            pass
        if ua.registered or ua.state == "registered":
            delay = 2.0
            continue
        if ua.state in ("failed", "stopped"):
            try:
                await ua.start()
                log.info("pbx.reconnected")
                delay = 2.0
            except PbxUnavailable:
                delay = min(delay * 2, 60.0)
