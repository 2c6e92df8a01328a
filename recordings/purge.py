"""The vault's purge under dual control: plans, requests, approval, crypto-shredding
and the hash-chained destruction register."""

from __future__ import annotations

import builtins
import uuid
from dataclasses import replace

from recordings import events, register
from recordings.errors import (
    AlreadyDestroyed,
    Conflict,
    DualControlViolation,
    Forbidden,
    InvalidRequest,
    NoSuchPurge,
    PurgeNotPending,
    RecordingHeld,
)
from recordings.model import (
    PURGE_APPROVE_ROLES,
    PURGE_REQUEST_ROLES,
    Actor,
    DestructionEntry,
    PurgePlan,
    PurgeRequest,
    Recording,
    RecordingFilter,
    RegisterHead,
)
from recordings.retention import is_due
from recordings.vault_base import VaultBase, require_role


DESTRUCTION_METHOD = "crypto-shred: wrapped data key erased, sealed blob deleted / 数据密钥销毁并删除密文"
_REGISTER_RETRIES = 20  # another process appending to the register at the same moment


class PurgeSteps(VaultBase):
    """Purge and destruction of `recordings.vault.Vault`."""

    # -- purge under dual control ---------------------------------------------------

    async def plan_purge(self, actor: Actor, *, creditor: str | None = None) -> PurgePlan:
        """What is due today (dry run): nothing is stored or destroyed."""
        require_role(actor, PURGE_REQUEST_ROLES, "申请销毁 / request purges")
        today = self.clock().date()
        flt = RecordingFilter(creditors=frozenset({creditor}) if creditor else None, limit=None)
        due: builtins.list[Recording] = []
        held: builtins.list[Recording] = []
        for rec in await self.list(actor, flt):
            if rec.state == "destroyed" or not is_due(rec.retain_until, today):
                continue
            (held if await self.is_held(rec) else due).append(rec)
        return PurgePlan(as_of=today, due=tuple(due), held=tuple(held))

    async def request_purge(self, actor: Actor, *, creditor: str | None = None, dry_run: bool = False) -> PurgePlan:
        """An operator (admin) asks to destroy what is due; a different person approves."""
        plan = await self.plan_purge(actor, creditor=creditor)
        if dry_run:
            return plan
        if not plan.due:
            raise InvalidRequest("没有到期可销毁的录音 / nothing is due for destruction")
        request = PurgeRequest(
            purge_id=uuid.uuid4().hex,
            requested_by=actor.user,
            requested_at=self.clock(),
            as_of=plan.as_of,
            recording_ids=tuple(r.recording_id for r in plan.due),
        )
        await self.repo.add_purge(request)
        return replace(plan, request=request)

    async def get_purge(self, purge_id: str, actor: Actor) -> PurgeRequest:
        require_role(actor, PURGE_REQUEST_ROLES | PURGE_APPROVE_ROLES, "查看销毁申请 / read purges")
        purge = await self.repo.get_purge(purge_id)
        if purge is None or not await self._purge_visible(purge, actor):
            raise NoSuchPurge(f"销毁申请不存在 / no such purge {purge_id}")
        return purge

    async def _purge_visible(self, purge: PurgeRequest, actor: Actor) -> bool:
        """A creditor-scoped user sees a purge only when it covers nothing outside
        their creditors (unmatched recordings belong to none)."""
        if actor.creditors is None:
            return True
        for rid in purge.recording_ids:
            rec = await self.repo.get(rid)
            if rec is not None and rec.creditor is not None and not actor.sees(rec.creditor):
                return False
        return True

    async def pending_purges(self, actor: Actor) -> builtins.list[PurgeRequest]:
        """Purge requests waiting for their second person (those `actor` may see)."""
        require_role(actor, PURGE_REQUEST_ROLES | PURGE_APPROVE_ROLES, "查看销毁申请 / read purges")
        return [p for p in await self.repo.pending_purges() if await self._purge_visible(p, actor)]

    async def approve_purge(self, purge_id: str, actor: Actor) -> PurgeRequest:
        """The second person (supervisor or compliance, not the requester) approves:
        data keys are destroyed, blobs deleted, and each recording is written into the
        destruction register. Recordings held or no longer due are skipped."""
        require_role(actor, PURGE_APPROVE_ROLES, "批准销毁 / approve purges")
        purge = await self.get_purge(purge_id, actor)
        if purge.state != "pending":
            raise PurgeNotPending(f"销毁申请已处理 / purge {purge_id} is {purge.state}")
        if actor.user == purge.requested_by:
            raise DualControlViolation(
                "申请人与批准人须为不同人员 / the approver must be a different person from the requester",
                requested_by=purge.requested_by,
            )
        recs = [await self.repo.get(rid) for rid in purge.recording_ids]
        outside = sorted({r.creditor for r in recs if r is not None and r.creditor is not None and not actor.sees(r.creditor)})
        if outside:
            # All or nothing: an approver witnesses the whole request or none of it.
            # (Unmatched recordings belong to no creditor; any approver may witness them.)
            raise Forbidden(
                f"销毁申请包含您无权查看的委托方 / the purge covers creditors you are not cleared for: {', '.join(outside)}",
                creditors=outside,
            )
        # The claim is the one atomic step: of simultaneous approvals exactly one moves
        # the request out of "pending"; the others are refused before destroying anything.
        claimed = await self.repo.claim_purge(purge_id, actor.user, self.clock())
        if claimed is None:
            raise PurgeNotPending(f"销毁申请已处理 / purge {purge_id} was already approved")
        purge = claimed
        today = self.clock().date()
        destroyed: builtins.list[str] = []
        skipped: builtins.list[str] = []
        for rid, rec in zip(purge.recording_ids, recs):
            if rec is not None:
                rec = await self.repo.get(rid)  # re-read: a hold may have come meanwhile
            if (
                rec is None
                or rec.state == "destroyed"
                or not is_due(rec.retain_until, today)
                or await self.is_held(rec)
            ):
                skipped.append(rid)
                continue
            if await self._destroy(rec, purge, approver=actor.user):
                destroyed.append(rid)
            else:
                skipped.append(rid)
        done = replace(purge, destroyed=tuple(destroyed), skipped=tuple(skipped))
        await self.repo.update_purge(done)
        return done

    async def _destroy(self, rec: Recording, purge: PurgeRequest, *, approver: str) -> bool:
        """Destroy `rec` with its register entry; False when another purge destroyed it
        first. A register seq taken by another process is retried with the new head."""
        for _ in range(_REGISTER_RETRIES):
            try:
                await self._destroy_once(rec, purge, approver=approver)
            except (AlreadyDestroyed, RecordingHeld):
                return False  # destroyed by another purge, or held since our check
            except Conflict:
                continue
            # The key is gone, so the blob is already unreadable; a crash here, or a
            # store lock still running (compliance mode, a lock ending later in UTC than
            # the local day), leaves ciphertext that recover() deletes.
            await self._delete_blob(rec.recording_id)
            return True
        raise Conflict("登记表持续被占用 / the destruction register stayed busy; approve again")

    async def _register_tip(self) -> tuple[int, str, RegisterHead | None]:
        """(last seq, last hash, head): from the head, else (a register kept before
        heads) from its last entry."""
        head = await self.repo.register_head()
        if head is not None:
            return head.seq, head.entry_hash, head
        last = await self.repo.last_destruction()
        return (last.seq, last.entry_hash, None) if last else (0, register.GENESIS, None)

    def _next_head(self, head: RegisterHead | None, seq: int, entry_hash: str) -> RegisterHead:
        if self.sealer is None:
            return RegisterHead(seq, entry_hash, None, None)
        keyed_from = head.keyed_from if head is not None and head.keyed_from is not None else seq
        return RegisterHead(seq, entry_hash, keyed_from, self.sealer.head_mac(register.CHAIN, seq, entry_hash, keyed_from))

    async def anchor_register(self) -> bool:
        """Put a register kept before the evidence key under it: a MAC'd head whose
        next entry is the first keyed one (the entries so far keep their SHA-256)."""
        if self.sealer is None:
            return False
        head = await self.repo.register_head()
        if head is not None and head.mac is not None:
            return False
        last = await self.repo.last_destruction()
        if last is None:
            return False
        keyed_from = last.seq + 1
        mac = self.sealer.head_mac(register.CHAIN, last.seq, last.entry_hash, keyed_from)
        return await self.repo.anchor_register_head(RegisterHead(last.seq, last.entry_hash, keyed_from, mac))

    async def _destroy_once(self, rec: Recording, purge: PurgeRequest, *, approver: str) -> None:
        now = self.clock()
        async with self._register_lock:
            last_seq, last_hash, head = await self._register_tip()
            seq = last_seq + 1
            entry = register.seal(
                DestructionEntry(
                    seq=seq,
                    recording_id=rec.recording_id,
                    case_id=rec.case_id,
                    creditor=rec.creditor,
                    sha256=rec.sha256,
                    retain_until=rec.retain_until,
                    operator=purge.requested_by,
                    approver=approver,
                    purge_id=purge.purge_id,
                    destroyed_at=now,
                    method=DESTRUCTION_METHOD,
                    prev_hash=last_hash,
                    entry_hash="",
                ),
                self.sealer.link if self.sealer is not None else None,
            )
            gone = rec.evolve(state="destroyed", wrapped_key=None, kek_id=None, destroyed_at=now, hold=None)
            await self.repo.destroy(gone, entry, events=(events.purged(rec, entry),),
                                    head=self._next_head(head, seq, entry.entry_hash))

    async def destruction_register(self, actor: Actor) -> builtins.list[DestructionEntry]:
        require_role(actor, PURGE_REQUEST_ROLES | PURGE_APPROVE_ROLES, "查看销毁登记 / read the register")
        entries = await self.repo.destruction_register()
        if actor.creditors is None:
            return entries
        return [e for e in entries if actor.sees(e.creditor)]
