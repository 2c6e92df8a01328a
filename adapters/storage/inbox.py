"""The drop folder (``[recordings] inbox``) for PBXs that write recordings as files
(Asterisk MixMonitor, FreeSWITCH record_session).

Contract with the PBX — the file name carries the call's identity::

    attempt-<attempt id>.<wav|mp3|ogg>     the gate's attempt id (X-DialGate-Attempt)
    call-<SIP Call-ID>.<wav|mp3|ogg>       the SIP Call-ID
    <id>.<wav|mp3|ogg>                     tried as an attempt id, then as a Call-ID

A file is taken once it has not changed for ``settle`` (the recorder closed it), is
sealed into the vault, and then removed. Files whose call is unknown are ingested as
unmatched, never discarded. Files the vault refuses (not audio, too large) are moved to
``<inbox>/.rejected/`` with a ``.reason`` note, for an admin; a second file for an
already-stored call with different content goes to ``<inbox>/.conflicts/``. Names
starting with ``.`` or ending in ``.part``/``.tmp`` are never touched.
"""

from __future__ import annotations

import asyncio
import os
import re
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol

from recordings.errors import VaultError
from recordings.model import Actor, IngestRequest, Link
from recordings.ports import Clock
from recordings.vault import Vault

MEDIA = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg"}
_NAME = re.compile(r"^(?:(attempt|call)-)?(.+)$")
PIECE = 1024 * 1024  # read off the event loop, one worker-thread hop per MiB


@dataclass(frozen=True, slots=True)
class Resolved:
    """What the service knows about the call a file belongs to."""

    link: Link
    started_at: datetime | None = None
    duration_s: float | None = None


class CallResolver(Protocol):
    async def resolve(self, source_kind: str, source_id: str) -> Resolved | None:
        """The call behind an attempt id or Call-ID; None when unknown."""
        ...


class NoCalls:
    """A resolver that knows no call: everything is kept as unmatched."""

    async def resolve(self, source_kind: str, source_id: str) -> Resolved | None:
        return None


@dataclass(frozen=True, slots=True)
class InboxOutcome:
    file: str
    result: str  # "stored" | "unmatched" | "duplicate" | "conflict" | "rejected"
    recording_id: str | None = None
    detail: str | None = None


async def _pieces(path: Path) -> AsyncIterator[bytes]:
    """The file in 1 MiB pieces, each read in a worker thread: the event loop never
    waits on the disk (the vault seals and writes off the loop too)."""
    f = await asyncio.to_thread(open, path, "rb")
    try:
        while piece := await asyncio.to_thread(f.read, PIECE):
            yield piece
    finally:
        f.close()


def _wav_seconds(path: Path) -> float | None:
    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes() / float(w.getframerate())
    except (wave.Error, EOFError, OSError, ZeroDivisionError):
        return None


class Inbox:
    def __init__(
        self,
        vault: Vault,
        directory: str | os.PathLike[str],
        resolver: CallResolver,
        clock: Clock,
        *,
        settle: timedelta = timedelta(seconds=10),
        actor: Actor = Actor("inbox", "pbx"),
    ) -> None:
        self.vault = vault
        self.dir = Path(directory)
        self.resolver = resolver
        self.clock = clock
        self.settle = settle
        self.actor = actor
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def ready(self) -> list[Path]:
        """Files complete enough to take, oldest first."""
        cutoff = self.clock() - self.settle
        out = []
        for p in self.dir.iterdir():
            name = p.name
            if name.startswith(".") or name.endswith((".part", ".tmp")) or not p.is_file():
                continue
            if p.suffix.lower() not in MEDIA:
                continue
            mtime = datetime.fromtimestamp(p.stat().st_mtime, timezone.utc)
            if mtime <= cutoff:
                out.append((mtime, p))
        return [p for _, p in sorted(out)]

    async def scan(self) -> list[InboxOutcome]:
        return [await self.take(p) for p in self.ready()]

    async def take(self, path: Path) -> InboxOutcome:
        m = _NAME.match(path.stem)
        assert m is not None
        kind, source_id = m.group(1), m.group(2)
        resolved: Resolved | None = None
        if kind is None:
            for k in ("attempt", "call"):
                resolved = await self.resolver.resolve(k, source_id)
                if resolved is not None:
                    kind = k
                    break
            kind = kind or "call"
        else:
            resolved = await self.resolver.resolve(kind, source_id)
        mtime = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
        seconds = _wav_seconds(path) if path.suffix.lower() == ".wav" else None
        started = (resolved.started_at if resolved and resolved.started_at else None) or (
            mtime - timedelta(seconds=seconds or 0)
        )
        req = IngestRequest(
            source_kind=kind,
            source_id=source_id,
            started_at=started,
            media_type=MEDIA[path.suffix.lower()],
            duration_s=(resolved.duration_s if resolved and resolved.duration_s is not None else seconds),
            link=resolved.link if resolved else Link(),
            attempt_at=resolved.started_at if resolved is not None and kind == "attempt" else None,
        )
        try:
            result = await self.vault.ingest(req, _pieces(path), self.actor)
        except VaultError as exc:
            await asyncio.to_thread(self._set_aside, path, ".rejected", f"{exc.error_id}: {exc.message}")
            return InboxOutcome(path.name, "rejected", None, exc.message)
        rec = result.recording
        if not result.created and rec.size != path.stat().st_size:
            await asyncio.to_thread(self._set_aside, path, ".conflicts", f"already stored as {rec.recording_id}")
            return InboxOutcome(path.name, "conflict", rec.recording_id, "a different file for a stored call")
        path.unlink()
        state = rec.state if result.created else "duplicate"
        return InboxOutcome(path.name, state, rec.recording_id)

    def _set_aside(self, path: Path, folder: str, reason: str) -> None:
        target_dir = self.dir / folder
        target_dir.mkdir(mode=0o700, exist_ok=True)
        target = target_dir / path.name
        os.replace(path, target)
        (target_dir / (path.name + ".reason")).write_text(reason + "\n", encoding="utf-8")
