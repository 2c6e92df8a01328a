"""In-memory implementations of the vault's ports, for tests and single-process tools.

`InMemoryRecordingRepository` can dump and load its whole state as JSON
(`snapshot` / `restore`), which `adapters.storage.jsonrepo` uses to persist it.
"""

from __future__ import annotations

import base64
import io
import os
import secrets
from dataclasses import asdict, fields, replace
from datetime import date, datetime, timezone
from typing import Any, BinaryIO, Iterable, Sequence

from recordings.errors import AlreadyDestroyed, Conflict, DuplicateSource, KeyDestroyed, NoSuchKey, RecordingHeld
from recordings.keywrap import LocalWrapping
from recordings.model import (
    AccessEntry,
    CaseHold,
    DestructionEntry,
    LegalHold,
    PurgeRequest,
    Recording,
    RecordingEvent,
    RecordingFilter,
    RegisterHead,
)
from recordings.ports import StoredBlob


class InMemoryRecordingRepository:
    def __init__(self) -> None:
        self.recordings: dict[str, Recording] = {}
        self.case_holds: dict[tuple[str, str], CaseHold] = {}
        self.access: list[AccessEntry] = []
        self.purges: dict[str, PurgeRequest] = {}
        self.register: list[DestructionEntry] = []
        self.head: RegisterHead | None = None
        # Events written with each change, in commit order (the SQL repository's outbox).
        self.events: list[RecordingEvent] = []

    def _changed(self) -> None:
        """Hook for persistent subclasses: called after every successful mutation."""

    async def add(self, recording: Recording, events: Sequence[RecordingEvent] = ()) -> None:
        for r in self.recordings.values():
            if (r.source_kind, r.source_id) == (recording.source_kind, recording.source_id):
                raise DuplicateSource(
                    "该来源的录音已存在 / a recording with this source id exists",
                    source_id=recording.source_id,
                )
        if recording.recording_id in self.recordings:
            raise Conflict("录音编号重复 / duplicate recording id")
        self.recordings[recording.recording_id] = recording
        self.events.extend(events)
        self._changed()

    async def get(self, recording_id: str) -> Recording | None:
        return self.recordings.get(recording_id)

    async def by_source(self, source_kind: str, source_id: str) -> Recording | None:
        for r in self.recordings.values():
            if (r.source_kind, r.source_id) == (source_kind, source_id):
                return r
        return None

    async def find(self, flt: RecordingFilter) -> list[Recording]:
        out = []
        for r in self.recordings.values():
            if flt.creditors is not None and r.creditor not in flt.creditors:
                continue
            if flt.case_id is not None and r.case_id != flt.case_id:
                continue
            if flt.agent is not None and r.agent != flt.agent:
                continue
            if flt.number_digest is not None and r.number_digest != flt.number_digest:
                continue
            if flt.started_from is not None and r.started_at < flt.started_from:
                continue
            if flt.started_to is not None and r.started_at >= flt.started_to:
                continue
            if flt.state is not None and r.state != flt.state:
                continue
            if not flt.include_destroyed and r.state == "destroyed":
                continue
            out.append(r)
        out.sort(key=lambda r: (r.started_at, r.recording_id))
        return out if flt.limit is None else out[: flt.limit]

    async def update(self, recording: Recording, events: Sequence[RecordingEvent] = ()) -> None:
        current = self.recordings.get(recording.recording_id)
        if current is None:
            raise KeyError(recording.recording_id)
        if current.state == "destroyed":
            raise AlreadyDestroyed(f"录音已销毁 / recording {recording.recording_id} was destroyed")
        self.recordings[recording.recording_id] = recording.evolve(hold=current.hold)
        self.events.extend(events)
        self._changed()

    async def set_hold(self, recording_id: str, hold: LegalHold | None) -> Recording | None:
        current = self.recordings.get(recording_id)
        if current is None or current.state == "destroyed":
            return None
        self.recordings[recording_id] = current = current.evolve(hold=hold)
        self._changed()
        return current

    async def destroy(
        self, recording: Recording, entry: DestructionEntry, events: Sequence[RecordingEvent] = (),
        head: RegisterHead | None = None,
    ) -> None:
        if any(e.seq == entry.seq for e in self.register):
            raise Conflict("登记表序号已被占用 / register sequence taken")
        current = self.recordings.get(recording.recording_id)
        if current is not None and current.state == "destroyed":
            raise AlreadyDestroyed(f"录音已销毁 / recording {recording.recording_id} was destroyed")
        if current is not None and (
            current.hold is not None
            or (current.creditor is not None and current.case_id is not None
                and (current.creditor, current.case_id) in self.case_holds)
        ):
            raise RecordingHeld(f"录音处于法律保全中 / recording {recording.recording_id} is on legal hold")
        self.recordings[recording.recording_id] = recording
        self.register.append(entry)
        if head is not None:
            self.head = head
        self.events.extend(events)
        self._changed()

    async def put_case_hold(self, hold: CaseHold) -> None:
        self.case_holds[(hold.creditor, hold.case_id)] = hold
        self._changed()

    async def delete_case_hold(self, creditor: str, case_id: str) -> bool:
        found = self.case_holds.pop((creditor, case_id), None) is not None
        self._changed()
        return found

    async def case_hold(self, creditor: str, case_id: str) -> CaseHold | None:
        return self.case_holds.get((creditor, case_id))

    async def append_access(self, entry: AccessEntry) -> None:
        self.access.append(entry)
        self._changed()

    async def access_log(self, recording_id: str) -> list[AccessEntry]:
        return [a for a in self.access if a.recording_id == recording_id]

    async def add_purge(self, purge: PurgeRequest) -> None:
        self.purges[purge.purge_id] = purge
        self._changed()

    async def get_purge(self, purge_id: str) -> PurgeRequest | None:
        return self.purges.get(purge_id)

    async def update_purge(self, purge: PurgeRequest) -> None:
        self.purges[purge.purge_id] = purge
        self._changed()

    async def claim_purge(self, purge_id: str, approver: str, at: datetime) -> PurgeRequest | None:
        purge = self.purges.get(purge_id)
        if purge is None or purge.state != "pending":
            return None
        claimed = replace(purge, state="approved", approved_by=approver, approved_at=at)
        self.purges[purge_id] = claimed
        self._changed()
        return claimed

    async def register_head(self) -> RegisterHead | None:
        return self.head

    async def anchor_register_head(self, head: RegisterHead) -> bool:
        if self.head is not None and self.head.mac is not None:
            return False
        self.head = head
        self._changed()
        return True

    async def pending_purges(self) -> list[PurgeRequest]:
        return sorted((p for p in self.purges.values() if p.state == "pending"), key=lambda p: p.requested_at)

    async def last_destruction(self) -> DestructionEntry | None:
        return self.register[-1] if self.register else None

    async def destruction_register(self) -> list[DestructionEntry]:
        return list(self.register)

    # -- persistence -------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "recordings": [_dump(r) for r in self.recordings.values()],
            "case_holds": [_dump(h) for h in self.case_holds.values()],
            "access": [_dump(a) for a in self.access],
            "purges": [_dump(p) for p in self.purges.values()],
            "register": [_dump(e) for e in self.register],
            "register_head": _dump(self.head) if self.head is not None else None,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.recordings = {r.recording_id: r for r in (_load(Recording, d) for d in state["recordings"])}
        self.case_holds = {(h.creditor, h.case_id): h for h in (_load(CaseHold, d) for d in state["case_holds"])}
        self.access = [_load(AccessEntry, d) for d in state["access"]]
        self.purges = {p.purge_id: p for p in (_load(PurgeRequest, d) for d in state["purges"])}
        self.register = [_load(DestructionEntry, d) for d in state["register"]]
        head = state.get("register_head")  # absent in files written before heads
        self.head = _load(RegisterHead, head) if head else None


def _encode(v: Any) -> Any:
    if isinstance(v, datetime):
        return {"$dt": v.isoformat()}
    if isinstance(v, date):
        return {"$d": v.isoformat()}
    if isinstance(v, bytes):
        return {"$b": base64.b64encode(v).decode()}
    if isinstance(v, dict):
        return {k: _encode(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_encode(x) for x in v]
    return v


def _decode(v: Any) -> Any:
    if isinstance(v, dict):
        if "$dt" in v:
            return datetime.fromisoformat(v["$dt"])
        if "$d" in v:
            return date.fromisoformat(v["$d"])
        if "$b" in v:
            return base64.b64decode(v["$b"])
        return {k: _decode(x) for k, x in v.items()}
    if isinstance(v, list):
        return tuple(_decode(x) for x in v)
    return v


def _dump(obj: Any) -> dict[str, Any]:
    return _encode(asdict(obj))  # type: ignore[no-any-return]


def _load(cls: type, data: dict[str, Any]) -> Any:
    values = {f.name: _decode(data[f.name]) for f in fields(cls) if f.name in data}
    if cls is Recording and isinstance(values.get("hold"), dict):
        values["hold"] = LegalHold(**values["hold"])
    return cls(**values)


class _MemoryWriter:
    def __init__(self, store: InMemoryBlobStore, key: str) -> None:
        self._store = store
        self._key = key
        self._buf = io.BytesIO()
        self._done = False
        store.temporaries_set.add(key)

    def write(self, data: bytes | memoryview) -> int:
        return self._buf.write(data)

    def sync(self) -> None:
        pass

    def publish(self) -> None:
        self._store.blobs[self._key] = self._buf.getvalue()
        self._store.temporaries_set.discard(self._key)
        self._done = True

    def abort(self) -> None:
        if not self._done:
            self._store.temporaries_set.discard(self._key)
            self._done = True


class InMemoryBlobStore:
    def __init__(self, clock: Any = None) -> None:
        self.blobs: dict[str, bytes] = {}
        self.temporaries_set: set[str] = set()
        self._clock = clock or (lambda: datetime.now(timezone.utc))

    enforces_retention = False
    remote = False
    location = "memory"

    def check(self) -> None:
        return None

    def begin(self, key: str, *, retain_until: date | None = None) -> _MemoryWriter:
        return _MemoryWriter(self, key)

    def set_legal_hold(self, key: str, on: bool) -> None:
        return None

    def extend_retention(self, key: str, retain_until: date) -> None:
        return None

    def open(self, key: str) -> BinaryIO:
        try:
            return io.BytesIO(self.blobs[key])
        except KeyError as exc:
            raise FileNotFoundError(key) from exc

    def size(self, key: str) -> int:
        try:
            return len(self.blobs[key])
        except KeyError as exc:
            raise FileNotFoundError(key) from exc

    def delete(self, key: str) -> bool:
        return self.blobs.pop(key, None) is not None

    def keys(self) -> Iterable[StoredBlob]:
        now = self._clock()
        return [StoredBlob(k, len(v), now) for k, v in self.blobs.items()]

    def temporaries(self) -> list[str]:
        return sorted(self.temporaries_set)

    def clean_temporaries(self, older_than: datetime | None = None) -> int:
        # In memory every temporary belongs to a live writer of this process or to
        # none; a cutoff cannot tell them apart, so only the unconditional form cleans.
        if older_than is not None:
            return 0
        n = len(self.temporaries_set)
        self.temporaries_set.clear()
        return n


class InMemoryKeyProvider(LocalWrapping):
    def __init__(self, clock: Any = None) -> None:
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self.keys: dict[str, dict[str, bytes]] = {}
        self.active_ids: dict[str, str] = {}
        self.destroyed: set[str] = set()
        self.superseded_at: dict[str, dict[str, datetime]] = {}

    def active(self, scope: str) -> tuple[str, bytes]:
        if scope in self.destroyed:
            raise KeyDestroyed(f"委托方 {scope} 的密钥已销毁 / keys of {scope} were destroyed")
        key_id = self.active_ids.get(scope)
        if key_id is None:
            raise NoSuchKey(f"委托方 {scope} 没有密钥 / no key for {scope}: run `dialgate keys init`")
        return key_id, self.keys[scope][key_id]

    def get(self, scope: str, key_id: str) -> bytes:
        if scope in self.destroyed:
            raise KeyDestroyed(f"委托方 {scope} 的密钥已销毁 / keys of {scope} were destroyed")
        try:
            return self.keys[scope][key_id]
        except KeyError as exc:
            raise NoSuchKey(f"密钥 {scope}/{key_id} 不存在 / no key {scope}/{key_id}") from exc

    def create(self, scope: str) -> str:
        if scope in self.active_ids:
            return self.active_ids[scope]
        return self.rotate(scope)

    def rotate(self, scope: str) -> str:
        self.destroyed.discard(scope)
        if scope in self.active_ids:
            self.superseded_at.setdefault(scope, {})[self.active_ids[scope]] = self._clock()
        key_id = f"k{len(self.keys.get(scope, {})) + 1}-{secrets.token_hex(3)}"
        self.keys.setdefault(scope, {})[key_id] = os.urandom(32)
        self.active_ids[scope] = key_id
        return key_id

    def retire(self, scope: str, key_id: str) -> None:
        if self.active_ids.get(scope) == key_id:
            raise ValueError("cannot retire the active key")
        self.keys.get(scope, {}).pop(key_id, None)
        self.superseded_at.get(scope, {}).pop(key_id, None)

    def superseded(self, scope: str) -> dict[str, datetime]:
        return dict(self.superseded_at.get(scope, {}))

    def destroy(self, scope: str) -> None:
        self.keys.pop(scope, None)
        self.active_ids.pop(scope, None)
        self.destroyed.add(scope)

    def scopes(self) -> list[str]:
        return sorted(self.active_ids)
