"""The wired application as handlers, extensions and the CLI see it: `Services`.

`dialer.bootstrap` builds it; the HTTP layer reads it from `app.state.services`
(`dialer.http.deps.Svc`). It lives apart from the composition root so that the routers
the root imports can name its type without importing the root back.

The components an extension starts (the SIP listener, the MQTT bus, the PBX user agent,
the recordings vault, the import jobs) are optional fields: None while not enabled,
set by their extension while it runs; the two that change what the gate does (the PBX,
the recording check) go through `attach_pbx` / `attach_recordings`. Each is typed by
what the application asks of it (a Protocol below), not by the adapter behind it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, Sequence

from dialer.auth import Authenticator
from dialer.config import Config
from dialer.evidence import EvidenceKey
from dialer.ports import CaseStore, Clock, Leadership, Pbx, RecordingStore
from dialer.usecases import Gate
from policy import PolicyBook

if TYPE_CHECKING:
    from dialer.import_jobs import ImportJobs
    from recordings.config import RecordingsConfig
    from recordings.vault import Vault

Role = Literal["primary", "secondary"]


class ServiceStore(CaseStore, Protocol):
    """The case store as the service runs it: opened with `async with`, and declaring
    the capabilities the application branches on instead of having them probed."""

    @property
    def url(self) -> str: ...

    @property
    def evidence(self) -> EvidenceKey:
        """The key the chains are MACed with; the vault seals its register with it."""
        ...

    @property
    def is_postgres(self) -> bool:
        """PostgreSQL: advisory locks, LISTEN/NOTIFY, a leader elected across instances."""
        ...

    @property
    def serialised_writes(self) -> bool:
        """Every write is serialised (one SQLite writer): a dial may resolve its case inside it."""
        ...

    @property
    def events(self) -> bool:
        """Whether units of work keep their outbox events (only when a bus publishes them)."""
        ...

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc: object) -> Any: ...


class Campaign(Leadership, Protocol):
    """Leadership as the service runs it: start-up waits for the first round, and a
    leader whose work failed gives its term up for another instance to try."""

    @property
    def asked(self) -> asyncio.Event:
        """Set once the first campaign round has answered (won or not)."""
        ...

    async def step_down(self, token: int) -> None:
        """Give the term `token` up."""
        ...


class ReportsHealth(Protocol):
    """A component /readyz and the console's health strip ask how it is."""

    def health(self) -> Any:
        """(status, detail), or a mapping of what to report."""
        ...


class PbxLink(Pbx, Protocol):
    """The PBX that places click-to-dial calls (`[pbx] mode = "sip_ua"`)."""

    def health(self) -> dict[str, Any]: ...


class EventBus(Protocol):
    """The MQTT bus (`[mqtt] url`): relays the outbox, answers dial commands."""

    def health(self) -> dict[str, Any]: ...

    def notify(self) -> None:
        """Something was committed: relay soon."""
        ...


class RecordingWatch(Protocol):
    """Connected calls whose recording has not arrived (`[recordings] expect_within`)."""

    async def sweep(self, now: datetime, expect_within: timedelta) -> Sequence[dict[str, Any]]: ...

    async def missing(
        self, creditors: frozenset[str] | None, since: datetime, until: datetime
    ) -> list[dict[str, Any]]:
        """Connected calls dialled in [since, until) whose recording is overdue, oldest first."""
        ...

    async def open_count(self, creditors: frozenset[str] | None = None) -> int: ...


class RecordingsInbox(Protocol):
    """The drop folder the recorder writes finished files into."""

    async def scan(self) -> Sequence[Any]: ...


@dataclass
class Services:
    """What handlers, extensions and the CLI get: the wired application."""

    config: Config
    clock: Clock
    store: ServiceStore
    policies: PolicyBook
    gate: Gate
    auth: Authenticator
    # "primary" runs everything; a "secondary" HTTP worker (dialer/workers.py) leaves
    # the once-per-host extensions to the primary.
    role: Role = "primary"
    # Which instance runs the leader's extensions (dialer/leadership.py); /readyz reports it.
    leadership: Campaign | None = None
    # Optional components: set by their extensions while they run, None when not enabled.
    vault: Vault | None = None
    recordings_config: RecordingsConfig | None = None
    recording_watch: RecordingWatch | None = None
    recordings_inbox: RecordingsInbox | None = None
    sip: ReportsHealth | None = None
    mqtt: EventBus | None = None
    pbx: PbxLink | None = None
    imports: ImportJobs | None = None

    def region_of(self, creditor: str) -> str:
        return self.policies.for_creditor(creditor).default_region

    def attach_pbx(self, pbx: PbxLink | None) -> None:
        """The PBX that places authorised dials from now on (None: authorise only)."""
        from dialer.usecases import NonePbx

        self.pbx = pbx
        self.gate.pbx = pbx if pbx is not None else NonePbx()

    def attach_recordings(self, check: RecordingStore) -> None:
        """What the gate asks before every dial whether a call would be recorded."""
        self.gate.recordings = check

