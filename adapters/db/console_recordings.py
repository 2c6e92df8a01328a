"""The web console's recordings pages over the vault (`recordings.vault.Vault`): a case's
recordings, one recording, its access log and audio, the destruction register and purge
approvals, with the vault's errors mapped to the console's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from adapters.db.console_base import ConsoleState
from dialer.console.ports import (
    AccessLogEntry,
    AudioSlice,
    DestructionEntry,
    Forbidden,
    NotFound,
    Page,
    Principal,
    PurgeView,
    RecordingFilter,
    RecordingView,
    Refused,
)
from dialer.masking import mask_text


class RecordingQueries(ConsoleState):
    """The vault reads and purge approvals of `SqlAlchemyConsoleQueries`."""

    # -- recordings (the vault) ------------------------------------------------------------------
    def _need_vault(self) -> Any:
        if self.vault is None:
            raise Refused("the recordings vault is not enabled on this service", "本服务未启用录音库")
        return self.vault

    async def case_recordings(self, who: Principal, creditor: str, case_id: str, flt: RecordingFilter) -> Sequence[RecordingView]:
        from recordings.model import RecordingFilter as VaultFilter

        vault = self._need_vault()
        if not who.sees(creditor):
            raise NotFound(f"no case {case_id}", f"没有案件 {case_id}")
        start = datetime.combine(flt.date_from, datetime.min.time(), flt.tz) if flt.date_from else None
        end = datetime.combine(flt.date_to + timedelta(days=1), datetime.min.time(), flt.tz) if flt.date_to else None
        exact = _as_e164(flt.number)
        vflt = VaultFilter(
            creditors=frozenset({creditor}), case_id=case_id, agent=flt.agent or None,
            started_from=start, started_to=end,
        )
        recs = await _vault_call(vault.list(actor(who), vflt, number=exact))
        out = []
        for r in recs:
            v = _recording(r)
            if flt.number and not exact and flt.number not in (v.number_masked or ""):
                continue
            if end is not None and v.started_at >= end:
                continue
            out.append(v)
        return sorted(out, key=lambda v: v.started_at, reverse=True)

    async def recording(self, who: Principal, recording_id: str) -> RecordingView:
        if not who.may("recordings"):
            raise Forbidden("recordings are for qa, compliance and supervisors", "录音仅供质检、合规和主管调阅")
        rec = await _vault_call(self._need_vault().get(recording_id, actor(who)))
        if rec.state == "destroyed" or not (rec.creditor and who.sees(rec.creditor)):
            raise NotFound(f"no recording {recording_id}", f"没有录音 {recording_id}")
        return _recording(rec, held=await self.vault.is_held(rec))

    async def access_log(self, who: Principal, recording_id: str) -> Sequence[AccessLogEntry]:
        await self.recording(who, recording_id)
        entries = await _vault_call(self._need_vault().access_log(recording_id, actor(who)))
        out = [
            AccessLogEntry(at=e.at, user=e.user, reason=mask_text(e.reason), byte_range=f"{e.range_start}-{e.range_end}",
                           client=e.client)
            for e in entries
        ]
        return sorted(out, key=lambda e: e.at, reverse=True)

    async def read_audio(
        self, who: Principal, recording_id: str, *, reason: str, start: int | None, end: int | None, client: str | None
    ) -> AudioSlice:
        rec = await self.recording(who, recording_id)
        rng = None
        if start is not None or end is not None:
            rng = (start or 0, rec.size - 1 if end is None else min(end, rec.size - 1))
        stream = await _vault_call(
            self._need_vault().open_audio(recording_id, actor(who), reason=reason, byte_range=rng, client=client)
        )
        return _slice(stream)

    async def destruction_register(self, who: Principal, cursor: str | None, limit: int) -> Page:
        entries = await _vault_call(self._need_vault().destruction_register(actor(who)))
        rows = sorted((_destruction(e) for e in entries), key=lambda e: e.seq, reverse=True)
        if cursor:
            try:
                if not cursor.isdigit() or len(cursor) > 18:
                    raise ValueError(cursor)
                below = int(cursor)
            except ValueError as exc:
                raise NotFound("not a page cursor the console made", "不是控制台生成的分页位置") from exc
            rows = [e for e in rows if e.seq < below]
        items = rows[:limit]
        return Page(items=tuple(items), next_cursor=str(items[-1].seq) if len(rows) > limit else None)

    async def pending_purges(self, who: Principal) -> Sequence[PurgeView]:
        vault = self._need_vault()
        if hasattr(vault, "pending_purges"):
            purges = await _vault_call(vault.pending_purges(actor(who)))
        else:  # an older vault core: its repository lists them
            purges = await vault.repo.pending_purges()
        out = []
        for p in purges:
            view = await self._purge_view(who, p)
            if view is not None:
                out.append(view)
        return out

    async def _purge_view(self, who: Principal, p: Any) -> PurgeView | None:
        creditors: set[str] = set()
        for rid in p.recording_ids:
            rec = await self.vault.repo.get(rid)
            if rec is not None and rec.creditor:
                creditors.add(rec.creditor)
        if not all(who.sees(c) for c in creditors):
            return None
        return PurgeView(
            purge_id=p.purge_id, requested_by=p.requested_by, requested_at=p.requested_at, state=p.state,
            recording_ids=tuple(p.recording_ids), creditors=tuple(sorted(creditors)), approved_by=p.approved_by,
        )

    async def approve_purge(self, who: Principal, purge_id: str) -> PurgeView:
        vault = self._need_vault()
        p = await _vault_call(vault.get_purge(purge_id, actor(who)))
        if await self._purge_view(who, p) is None:
            raise NotFound(f"no purge request {purge_id}", f"没有销毁申请 {purge_id}")
        done = await _vault_call(vault.approve_purge(purge_id, actor(who)))
        return PurgeView(
            purge_id=done.purge_id, requested_by=done.requested_by, requested_at=done.requested_at, state=done.state,
            recording_ids=tuple(done.recording_ids), approved_by=done.approved_by,
        )


# -- vault glue --------------------------------------------------------------------------------
def actor(who: Principal) -> Any:
    from recordings.model import Actor

    return Actor(user=who.name, role=who.role, creditors=None if who.role == "admin" else frozenset(who.creditors))


def _as_e164(text: str | None) -> str | None:
    """A full number typed in the filter, as E.164 (the vault matches numbers by digest)."""
    if not text or "*" in text or len([c for c in text if c.isdigit()]) < 11:
        return None
    from policy import NumberFormatError, normalize_number

    try:
        return normalize_number(text, "CN")
    except NumberFormatError:
        return None


async def _vault_call(awaitable: Any) -> Any:
    from recordings import errors as ve

    try:
        return await awaitable
    except ve.NotFound as exc:
        raise NotFound(str(exc), str(exc)) from exc
    except ve.DualControlViolation as exc:
        raise Refused(
            "dual control: the person who requested a purge cannot approve it",
            "双人控制：申请人不能批准自己的销毁申请",
        ) from exc
    except ve.Forbidden as exc:
        raise Forbidden(str(exc), str(exc)) from exc
    except ve.VaultError as exc:
        raise Refused(str(exc), str(exc)) from exc


def _recording(r: Any, held: bool | None = None) -> RecordingView:
    return RecordingView(
        recording_id=r.recording_id, creditor=r.creditor or "", case_id=r.case_id,
        attempt_id=r.source_id if r.source_kind == "attempt" else None, agent_id=r.agent,
        number_masked=r.number_masked, started_at=r.started_at, duration_s=float(r.duration_s or 0),
        content_type=r.media_type, size=int(r.size), sha256=r.sha256, retain_until=r.retain_until,
        legal_hold=bool(r.hold) if held is None else held, state=r.state,
    )


def _slice(stream: Any) -> AudioSlice:
    import asyncio

    async def body() -> AsyncIterator[bytes]:
        # Decryption is CPU work on a file: one chunk at a time off the event loop.
        it = iter(stream.chunks)
        try:
            while True:
                chunk = await asyncio.to_thread(next, it, None)
                if chunk is None:
                    return
                yield chunk
        finally:
            stream.close()

    return AudioSlice(
        content_type=stream.recording.media_type, total_size=stream.total, start=stream.start, end=stream.end, body=body()
    )


def _destruction(e: Any) -> DestructionEntry:
    return DestructionEntry(
        seq=e.seq, recording_id=e.recording_id, creditor=e.creditor or "", case_id=e.case_id, sha256=e.sha256,
        retain_until=e.retain_until, operator=e.operator, approver=e.approver, destroyed_at=e.destroyed_at,
        method=e.method, entry_hash=e.entry_hash,
    )
