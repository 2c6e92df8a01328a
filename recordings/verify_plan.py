"""Which recordings an incremental `dialgate recordings verify` reads back, and where a
run resumes. Pure: the caller lists recordings and keeps the state (a small JSON file).

A run reads:

* every recording stored since the last *completed* run (``last_complete``: the
  ``created_at`` high-water mark it reached), so nothing new goes unchecked;
* plus a rolling sample of the older ones: the next `sample` recordings in id order
  after ``cursor``, wrapping around, so that running once a day with
  ``sample = ceil(total / N)`` re-reads the whole archive every N days.

The planned ids are stored before the first is read; `done` advances after each one,
so a run that is interrupted resumes where it stopped instead of starting again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Iterable, Sequence

STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Run:
    started_at: datetime
    high_water: datetime | None  # largest created_at among the new recordings planned
    ids: tuple[str, ...]
    new: int  # the first `new` ids are new recordings; the rest the sample
    cursor_after: str | None  # the sample's last id: the next run's cursor
    done: int = 0
    failed: tuple[str, ...] = ()
    bytes_done: int = 0


@dataclass(frozen=True, slots=True)
class VerifyState:
    last_complete: datetime | None = None
    cursor: str | None = None
    run: Run | None = None
    history: tuple[dict[str, Any], ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        run = None
        if self.run is not None:
            r = self.run
            run = {
                "started_at": r.started_at.isoformat(),
                "high_water": r.high_water.isoformat() if r.high_water else None,
                "ids": list(r.ids),
                "new": r.new,
                "cursor_after": r.cursor_after,
                "done": r.done,
                "failed": list(r.failed),
                "bytes_done": r.bytes_done,
            }
        return {
            "v": STATE_VERSION,
            "last_complete": self.last_complete.isoformat() if self.last_complete else None,
            "cursor": self.cursor,
            "run": run,
            "history": list(self.history[-30:]),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VerifyState:
        if data.get("v") != STATE_VERSION:
            raise ValueError(f"unsupported verify state version {data.get('v')!r}")
        raw = data.get("run")
        run = None
        if raw is not None:
            run = Run(
                started_at=datetime.fromisoformat(raw["started_at"]),
                high_water=datetime.fromisoformat(raw["high_water"]) if raw.get("high_water") else None,
                ids=tuple(raw["ids"]),
                new=int(raw["new"]),
                cursor_after=raw.get("cursor_after"),
                done=int(raw["done"]),
                failed=tuple(raw.get("failed", ())),
                bytes_done=int(raw.get("bytes_done", 0)),
            )
        last = data.get("last_complete")
        return cls(
            last_complete=datetime.fromisoformat(last) if last else None,
            cursor=data.get("cursor"),
            run=run,
            history=tuple(data.get("history", ())),
        )


def sample_size(total: int, full_every_days: int) -> int:
    """Recordings to sample per daily run so the whole archive is re-read every N days."""
    if full_every_days < 1:
        raise ValueError("full_every_days must be at least 1")
    return math.ceil(total / full_every_days)


def plan(
    recordings: Iterable[tuple[str, datetime]],
    state: VerifyState,
    now: datetime,
    *,
    sample: int,
    full: bool = False,
) -> Run:
    """A new run over (recording_id, created_at) pairs: new since the last completed
    run (all of them with `full` or on the first run), then `sample` older ones."""
    items = sorted(recordings)
    since = None if full else state.last_complete
    new = [(rid, at) for rid, at in items if since is None or at > since]
    new_ids = {rid for rid, _ in new}
    older = [rid for rid, _ in items if rid not in new_ids]
    picked: list[str] = []
    if older and sample > 0:
        start = 0
        if state.cursor is not None:
            start = next((i for i, rid in enumerate(older) if rid > state.cursor), 0)
        for k in range(min(sample, len(older))):
            picked.append(older[(start + k) % len(older)])
    high_water = max((at for _, at in new), default=state.last_complete)
    return Run(
        started_at=now,
        high_water=high_water,
        ids=tuple(rid for rid, _ in new) + tuple(picked),
        new=len(new),
        cursor_after=picked[-1] if picked else state.cursor,
    )


def advance(run: Run, recording_id: str, ok: bool, nbytes: int) -> Run:
    """The run after one more recording was read back."""
    assert run.ids[run.done] == recording_id, "recordings are verified in plan order"
    return replace(
        run,
        done=run.done + 1,
        failed=run.failed if ok else run.failed + (recording_id,),
        bytes_done=run.bytes_done + nbytes,
    )


def complete(state: VerifyState, run: Run, finished_at: datetime, seconds: float) -> VerifyState:
    """The state once every planned recording was read: the next run starts after
    this one's high-water mark and sample."""
    entry = {
        "started_at": run.started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "checked": run.done,
        "new": run.new,
        "sampled": len(run.ids) - run.new,
        "failed": list(run.failed),
        "bytes": run.bytes_done,
        "seconds": round(seconds, 3),
    }
    return VerifyState(
        last_complete=run.high_water,
        cursor=run.cursor_after,
        run=None,
        history=state.history + (entry,),
    )


def remaining(run: Run) -> Sequence[str]:
    return run.ids[run.done :]
