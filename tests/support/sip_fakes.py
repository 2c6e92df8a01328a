"""In-memory SIP authorizers for the listener's tests and the benchmark (no database).

:class:`RecordingSipAuthorizer` keeps every question it was asked (``asked``) and
answers with a function of the question. :class:`HourlyCapSipAuthorizer` is a tiny
stand-in for the real policy: it allows a number ``per_hour`` times and then blocks it
with ``cap.number_hourly``, counting only allowed attempts, like the real use case.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Awaitable, Callable

from adapters.sip.gate import SipDialAnswer, SipDialInput

Decide = Callable[[SipDialInput], SipDialAnswer | Awaitable[SipDialAnswer]]


def allow_all(invite: SipDialInput) -> SipDialAnswer:
    return SipDialAnswer(allowed=True, rule_id="allow", reason="Allowed", reason_zh="允许", attempt_id=f"att-{invite.call_id[:24]}")


class RecordingSipAuthorizer:
    """Records every SipDialInput it is asked about, answers with ``decide``."""

    def __init__(self, decide: Decide = allow_all) -> None:
        self._decide = decide
        self.asked: list[SipDialInput] = []
        self.changed = asyncio.Event()

    async def authorize(self, invite: SipDialInput) -> SipDialAnswer:
        self.asked.append(invite)
        self.changed.set()
        result = self._decide(invite)
        if isinstance(result, SipDialAnswer):
            return result
        return await result


class HourlyCapSipAuthorizer:
    """Allow each number ``per_hour`` times, then block with ``cap.number_hourly``."""

    def __init__(self, per_hour: int = 2, retry_after: int = 3600) -> None:
        self.per_hour = per_hour
        self.retry_after = retry_after
        self.attempts: dict[str, list[str]] = {}
        self.asked: list[SipDialInput] = []
        self._ids = itertools.count(1)

    async def authorize(self, invite: SipDialInput) -> SipDialAnswer:
        self.asked.append(invite)
        done = self.attempts.setdefault(invite.number, [])
        if invite.attempt_id and invite.attempt_id in done:
            return SipDialAnswer(True, "allow", "Pre-authorised attempt", "预授权的呼叫", attempt_id=invite.attempt_id)
        if len(done) >= self.per_hour:
            return SipDialAnswer(
                allowed=False,
                rule_id="cap.number_hourly",
                reason=f"Number already called {len(done)} times within the hour (limit {self.per_hour})",
                reason_zh=f"该号码一小时内已呼叫{len(done)}次（上限{self.per_hour}次）",
                retry_after=self.retry_after,
            )
        attempt = f"att-{next(self._ids):06d}"
        done.append(attempt)
        return SipDialAnswer(True, "allow", "Allowed", "允许", attempt_id=attempt)
