"""INVITE server transactions (RFC 3261 17.2.1) for a redirect server.

A transaction is keyed by the top Via's branch, sent-by and method (17.2.3), and the
Request-URI (so a reused branch for another number is another transaction); an INVITE
whose branch lacks the ``z9hG4bK`` magic cookie is matched the RFC 2543 way, by Call-ID,
CSeq number, From tag and top Via. ACK and CANCEL find their INVITE's transaction by the
same key with the method replaced by INVITE.

The table is bounded (``max_entries``, oldest evicted first) and every completed entry
expires ``ttl`` seconds (Timer H, 64*T1 = 32 s) after its final response, so memory does
not grow with traffic.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Hashable

from adapters.sip.message import SipMessage, SipResponse

MAGIC_COOKIE = "z9hG4bK"
T1 = 0.5
T2 = 4.0
TIMER_H = 64 * T1  # 32 s

Reply = Callable[[SipResponse], None]


def transaction_key(msg: SipMessage, method: str | None = None) -> Hashable:
    """The server-transaction key of a request; ``method`` overrides (ACK/CANCEL → INVITE)."""
    top = msg.vias[0]
    m = method or msg.method or ""
    branch = top.branch
    # The Request-URI is part of the key: ACK (of a non-2xx) and CANCEL repeat the
    # INVITE's, while a new INVITE that reuses a branch for another number must be
    # decided on its own, not answered with the earlier number's cached 302.
    ruri = msg.uri.raw if msg.uri is not None else ""
    if branch and branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE):
        return ("3261", branch, top.sent_by, m, ruri)
    cseq_number, _ = msg.cseq
    return ("2543", msg.call_id, cseq_number, msg.from_.tag, top.sent_by, top.branch, m, ruri)


@dataclass(slots=True)
class InviteTransaction:
    key: Hashable
    request: SipMessage | None  # dropped once final, to keep the table small
    to_tag: str
    reliable: bool  # TCP: no response retransmission
    created: float
    replies: list[Reply] = field(default_factory=list)  # where to send the final answer
    response: SipResponse | None = None
    cancelled: bool = False
    acked: bool = False
    expires: float = 0.0
    _timer: asyncio.TimerHandle | None = None
    _interval: float = T1

    @property
    def final(self) -> bool:
        return self.response is not None


class InviteTransactionTable:
    """Bounded cache of INVITE server transactions, with Timer G response retransmission
    over UDP until the ACK arrives (or Timer H expires)."""

    def __init__(self, *, max_entries: int = 4096, ttl: float = TIMER_H, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._entries: OrderedDict[Hashable, InviteTransaction] = OrderedDict()
        self._max = max_entries
        self._ttl = ttl
        self._clock = clock
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> InviteTransaction | None:
        self._expire()
        return self._entries.get(key)

    def create(self, key: Hashable, request: SipMessage, to_tag: str, reliable: bool, reply: Reply) -> InviteTransaction:
        self._expire()
        while len(self._entries) >= self._max:
            _, old = self._entries.popitem(last=False)
            self._stop_timer(old)
            self.evicted += 1
        txn = InviteTransaction(key=key, request=request, to_tag=to_tag, reliable=reliable, created=self._clock(), replies=[reply])
        self._entries[key] = txn
        return txn

    def complete(self, txn: InviteTransaction, response: SipResponse) -> None:
        """Record the final response, send it to everyone waiting, start Timer G/H."""
        if txn.final:
            return
        txn.response = response
        txn.request = None
        txn.expires = self._clock() + self._ttl
        for reply in txn.replies:
            reply(response)
        del txn.replies[:-1]  # keep the latest return path for retransmissions
        if not txn.reliable and txn.key in self._entries:
            self._arm(txn)

    def retransmission(self, txn: InviteTransaction, reply: Reply) -> None:
        """A retransmitted INVITE: answer from the cache, or wait for the same decision."""
        if txn.response is not None:
            reply(txn.response)
        else:
            txn.replies.append(reply)

    def ack(self, key: Hashable) -> bool:
        txn = self._entries.get(key)
        if txn is None or not txn.final:
            return False
        txn.acked = True
        self._stop_timer(txn)
        return True

    def close(self) -> None:
        for txn in self._entries.values():
            self._stop_timer(txn)
        self._entries.clear()

    # -- internals
    def _expire(self) -> None:
        now = self._clock()
        # Entries are in creation order; completed ones expire in about that order too.
        while self._entries:
            key, txn = next(iter(self._entries.items()))
            if txn.final and txn.expires <= now:
                self._entries.popitem(last=False)
                self._stop_timer(txn)
            elif not txn.final and now - txn.created > 2 * self._ttl:
                # a decision that never finished (should not happen: the server times out)
                self._entries.popitem(last=False)
            else:
                break

    def _arm(self, txn: InviteTransaction) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        txn._timer = loop.call_later(txn._interval, self._fire, txn)

    def _fire(self, txn: InviteTransaction) -> None:
        txn._timer = None
        if txn.acked or txn.response is None or self._clock() >= txn.expires or self._entries.get(txn.key) is not txn:
            return
        for reply in txn.replies:
            reply(txn.response)
        txn._interval = min(txn._interval * 2, T2)
        self._arm(txn)

    @staticmethod
    def _stop_timer(txn: InviteTransaction) -> None:
        if txn._timer is not None:
            txn._timer.cancel()
            txn._timer = None
