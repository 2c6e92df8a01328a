"""What the SIP listener's parts share: its counters (:class:`SipStats`), one INVITE
being decided (:class:`Decision`), and :class:`ListenerState`, the attributes
:class:`~adapters.sip.server.SipServer` sets up and its INVITE path
(:class:`~adapters.sip.invites.InviteDecisions`) reads and updates, declared once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any

from adapters.sip.config import SipConfig
from adapters.sip.gate import SipDialAuthorizer, SipDialInput
from adapters.sip.message import SipMessage
from adapters.sip.transaction import InviteTransaction, InviteTransactionTable

OVERLOAD_LOG_EVERY = 1.0  # seconds between sip.overloaded lines (each counts the INVITEs shed)


@dataclass
class SipStats:
    datagrams: int = 0
    tcp_messages: int = 0
    parse_errors: int = 0
    dropped: int = 0  # malformed and not answerable, or responses
    invites: int = 0
    decisions: int = 0
    retransmissions: int = 0
    overloaded: int = 0  # INVITEs refused with 503 because too many decisions were in flight
    untrusted: int = 0  # datagrams and TCP connections from outside [sip] trusted_peers, dropped
    authorizer_failures: int = 0


@dataclass(slots=True)
class Decision:
    """One INVITE being decided: what its answer needs."""

    msg: SipMessage
    txn: InviteTransaction
    source: tuple[Any, ...]
    dial: SipDialInput | None
    started: float
    task: asyncio.Task[Any] | None = None
    timer: asyncio.TimerHandle | None = None  # 100 Trying, then the time-out
    late: bool = False  # answered by the time-out; the authorizer still runs


class ListenerState:
    """The listener's state shared by its parts; ``SipServer.__init__`` sets it (what
    each attribute means is said there)."""

    _config: SipConfig
    _authorizer: SipDialAuthorizer
    _timeout: float
    _max_pending: int
    _shed_after: float
    _queued: float
    _oldest: deque[Decision]
    _pending: int
    _shed_logged_at: float
    _shed_unlogged: int
    stalled: bool
    transactions: InviteTransactionTable
    stats: SipStats
    _tasks: set[asyncio.Task[Any]]


__all__ = ["OVERLOAD_LOG_EVERY", "Decision", "ListenerState", "SipStats"]
