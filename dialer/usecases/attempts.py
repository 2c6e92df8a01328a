"""Attempt state the gate changes on its own: authorisations the PBX never placed expire."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from dialer import attempt_state
from dialer.usecases.base import GateBase

# How long a request identity answers its retries: far beyond any PBX's or client's retry.
REQUEST_RETENTION = timedelta(hours=24)


class AttemptUseCases(GateBase):
    async def expire_attempts(self) -> int:
        """Mark authorised attempts the PBX never placed as expired (they still count)."""
        now = self._now()
        n = 0
        while True:
            # Small transactions: a click-to-dial waiting behind the write lock should not
            # wait for a thousand expiries at once.
            async with self.store.write() as uow:
                batch = await uow.attempts.expired(now, limit=50)
                for a in batch:
                    n += await attempt_state.mark_expired(uow, a, at=now)
            if len(batch) < 50:
                break
            await asyncio.sleep(0)
        while True:  # the same small transactions for request identities past their retention
            async with self.store.write() as uow:
                gone = await uow.attempts.forget_requests(now - REQUEST_RETENTION, limit=500)
            if gone < 500:
                return n
            await asyncio.sleep(0)
