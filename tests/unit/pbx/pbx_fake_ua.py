"""An in-memory user agent whose legs follow a script: the Fake of the UserAgent port."""

from __future__ import annotations

import asyncio
import itertools
from typing import Awaitable, Callable, Mapping

from adapters.pbx.audio import RxBuffer, TxBuffer
from adapters.pbx.sip_ua import LegCause, LegState

_ids = itertools.count(1)


class FakeLeg:
    def __init__(self, target: str, role: str, headers: Mapping[str, str]) -> None:
        self.id = f"fake{next(_ids)}"
        self.target, self.role, self.headers = target, role, dict(headers)
        self.rx, self.tx = RxBuffer(), TxBuffer(max_bytes=160 * 1000)
        self.state = LegState.CALLING
        self.cause: LegCause | None = None
        self.detail: str | None = None
        self.hangup_by: str | None = None
        self._answered, self._ended = asyncio.Event(), asyncio.Event()
        self._listeners: list[Callable[[FakeLeg], None]] = []

    @property
    def ended(self) -> bool:
        return self.state is LegState.ENDED

    def on_change(self, listener: Callable[["FakeLeg"], None]) -> None:
        self._listeners.append(listener)

    def _set(self, state: LegState) -> None:
        if self.ended:
            return
        self.state = state
        if state is LegState.ANSWERED:
            self._answered.set()
        if state is LegState.ENDED:
            self._ended.set()
        for listener in self._listeners:
            listener(self)

    # driven by the script
    def ring(self) -> None:
        self._set(LegState.RINGING)

    def answer(self) -> None:
        self._set(LegState.ANSWERED)

    def end(self, cause: LegCause, by: str = "remote") -> None:
        if not self.ended:
            self.cause, self.hangup_by = cause, by
            self._set(LegState.ENDED)

    # the Leg interface
    async def wait_answered(self) -> bool:
        answered = asyncio.ensure_future(self._answered.wait())
        ended = asyncio.ensure_future(self._ended.wait())
        await asyncio.wait([answered, ended], return_when=asyncio.FIRST_COMPLETED)
        answered.cancel()
        ended.cancel()
        return self.state is LegState.ANSWERED

    async def wait_ended(self) -> LegCause:
        await self._ended.wait()
        assert self.cause is not None
        return self.cause

    def write_audio(self, data: bytes) -> None:
        self.tx.write(0, data)

    async def hangup(self, cause: LegCause | None = None) -> None:
        self.end(cause or (LegCause.COMPLETED if self.state is LegState.ANSWERED else LegCause.FAILED), by="local")


Script = Callable[[FakeLeg], Awaitable[None]]


class FakeUserAgent:
    def __init__(self, scripts: dict[str, Script], registered: bool = True, *, ring_before_return: bool = False) -> None:
        self.scripts = scripts
        self.registered = registered
        self.ring_before_return = ring_before_return  # the 180 beats the caller's listener
        self.legs: list[FakeLeg] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def place_call(self, target: str, timeout: float, *, role: str = "callee", headers: Mapping[str, str] | None = None) -> FakeLeg:
        leg = FakeLeg(target, role, headers or {})
        self.legs.append(leg)
        if self.ring_before_return:
            leg.ring()
        self._tasks.append(asyncio.create_task(self.scripts[role](leg)))
        return leg

    def dialled(self, role: str) -> list[FakeLeg]:
        return [leg for leg in self.legs if leg.role == role]


async def answers(leg: FakeLeg) -> None:
    leg.ring()
    await asyncio.sleep(0)
    leg.answer()


def refuses(cause: LegCause) -> Script:
    async def script(leg: FakeLeg) -> None:
        leg.ring()
        await asyncio.sleep(0)
        leg.end(cause)

    return script


async def rings_forever(leg: FakeLeg) -> None:
    leg.ring()
