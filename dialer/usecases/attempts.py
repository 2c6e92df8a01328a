"""Attempt state the gate changes on its own: authorisations the PBX never placed expire."""

from __future__ import annotations

import asyncio

from dialer import attempt_state
from dialer.usecases.base import GateBase


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
                    await attempt_state.mark_expired(uow, a, at=now)
            n += len(batch)
            if len(batch) < 50:
                return n
            await asyncio.sleep(0)
