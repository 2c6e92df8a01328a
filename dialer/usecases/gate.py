"""`Gate`: the one entry point the HTTP API, the SIP gate, the MQTT command handler, the
CLI and `dialgate simulate` call; its use cases live by command family in this package."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from dialer.ports import CaseStore, Clock, Pbx, RecordingStore
from dialer.usecases.attempts import AttemptUseCases
from dialer.usecases.base import AlwaysRecording, NonePbx
from dialer.usecases.cases import CaseUseCases
from dialer.usecases.dials import DialUseCases
from dialer.usecases.outcomes import OutcomeUseCases
from dialer.usecases.review import ReviewUseCases
from policy import PolicyBook


@dataclass
class Gate(DialUseCases, OutcomeUseCases, CaseUseCases, ReviewUseCases, AttemptUseCases):
    store: CaseStore
    clock: Clock
    policies: PolicyBook
    pbx: Pbx = field(default_factory=NonePbx)
    recordings: RecordingStore = field(default_factory=AlwaysRecording)
    attempt_validity: timedelta = timedelta(seconds=120)
    originate_timeout_s: float = 5.0
    recorder_check_ttl_s: float = 1.0
    _background: set[asyncio.Task[Any]] = field(default_factory=set)
    _recorder_ok_until: float = 0.0
    _window_of: PolicyBook | None = None
    _window_cache: tuple[timedelta, int] = (timedelta(0), 1)
