"""`InMemoryConsoleQueries`: the console's port over plain Python lists.

Used by the console's unit tests and the phase-1 browser harness, and as the
executable description of the contract the store-backed adapter must meet: scope by
creditor on every call, `NotFound` for ids out of scope, keyset paging newest first,
dual control on purge approval, an access-log entry for every audio read.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime

from dialer.console.ports import (
    AccessLogEntry,
    AudioSlice,
    BlockedDialFilter,
    BlockedSummary,
    CaseView,
    DecisionDetail,
    DecisionRow,
    DestructionEntry,
    FilterOptions,
    Forbidden,
    HealthItem,
    NotFound,
    Page,
    Principal,
    PurgeView,
    RecordingFilter,
    RecordingView,
    Refused,
    WorklistItem,
)


@dataclass
class InMemoryConsoleQueries:
    tokens: dict[str, Principal] = field(default_factory=dict)
    signed_out_sids: set[str] = field(default_factory=set)
    decisions: list[DecisionDetail] = field(default_factory=list)
    cases: dict[tuple[str, str], CaseView] = field(default_factory=dict)
    recordings: dict[str, tuple[RecordingView, bytes]] = field(default_factory=dict)
    access: dict[str, list[AccessLogEntry]] = field(default_factory=lambda: defaultdict(list))
    register: list[DestructionEntry] = field(default_factory=list)
    purges: dict[str, PurgeView] = field(default_factory=dict)
    health_items: list[HealthItem] = field(default_factory=list)
    now: Callable[[], datetime] | None = None
    worklist_items: list[WorklistItem] = field(default_factory=list)

    # -- users -------------------------------------------------------------------
    def add_user(self, token: str, principal: Principal) -> Principal:
        self.tokens[token] = principal
        return principal

    async def authenticate(self, token: str) -> Principal | None:
        return self.tokens.get(token)

    async def principal(self, user_id: str) -> Principal | None:
        return next((p for p in self.tokens.values() if p.user_id == user_id), None)

    async def sign_out(self, sid: str, until: float) -> None:
        self.signed_out_sids.add(sid)

    async def signed_out(self, sid: str, user_id: str | None = None, issued_at: int = 0) -> bool:
        return sid in self.signed_out_sids

    # -- blocked dials -----------------------------------------------------------
    def _blocked(self, who: Principal, flt: BlockedDialFilter) -> list[DecisionRow]:
        if flt.creditor is not None and not who.sees(flt.creditor):
            raise NotFound(f"no creditor {flt.creditor}", f"没有委托方 {flt.creditor}")
        start, end = flt.bounds()
        rows = [
            d.row
            for d in self.decisions
            if not d.row.allowed
            and who.sees(d.row.creditor)
            and (flt.creditor is None or d.row.creditor == flt.creditor)
            and (flt.agent is None or d.row.agent_id == flt.agent)
            and (flt.rule_id is None or d.row.rule_id == flt.rule_id)
            and (flt.case_id is None or d.row.case_id == flt.case_id)
            and (start is None or d.row.at >= start)
            and (end is None or d.row.at < end)
        ]
        rows.sort(key=lambda r: (r.at, r.decision_id), reverse=True)
        return rows

    async def filter_options(self, who: Principal) -> FilterOptions:
        seen = [d.row for d in self.decisions if who.sees(d.row.creditor)]
        creditors = {c for c, _ in self.cases if who.sees(c)} | {r.creditor for r in seen}
        return FilterOptions(
            creditors=tuple(sorted(creditors)),
            agents=tuple(sorted({r.agent_id for r in seen})),
            rule_ids=tuple(sorted({r.rule_id for r in seen if not r.allowed})),
        )

    async def blocked_dials(self, who: Principal, flt: BlockedDialFilter, cursor: str | None, limit: int) -> Page:
        rows = self._blocked(who, flt)
        if cursor:
            at_s, _, did = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
            key = (datetime.fromisoformat(at_s), did)
            rows_after = [r for r in rows if (r.at, r.decision_id) < key]
        else:
            rows_after = rows
        items = rows_after[:limit]
        nxt = None
        if len(rows_after) > limit:
            last = items[-1]
            nxt = base64.urlsafe_b64encode(f"{last.at.isoformat()}|{last.decision_id}".encode()).decode()
        return Page(items=tuple(items), next_cursor=nxt, total=len(rows))

    async def export_blocked_dials(self, who: Principal, flt: BlockedDialFilter) -> AsyncIterator[DecisionRow]:
        for row in self._blocked(who, flt):
            yield row

    async def blocked_summary(self, who: Principal, flt: BlockedDialFilter) -> BlockedSummary:
        by_day: dict[tuple[date, str], int] = defaultdict(int)
        by_agent: dict[tuple[str, str], int] = defaultdict(int)
        for r in self._blocked(who, flt):
            by_day[(r.at.astimezone(flt.tz).date(), r.rule_id)] += 1
            by_agent[(r.agent_id, r.rule_id)] += 1
        return BlockedSummary(
            by_day_rule=tuple((d, r, n) for (d, r), n in sorted(by_day.items())),
            by_agent_rule=tuple((a, r, n) for (a, r), n in sorted(by_agent.items())),
        )

    async def decision(self, who: Principal, decision_id: str) -> DecisionDetail:
        for d in self.decisions:
            if d.row.decision_id == decision_id and who.sees(d.row.creditor):
                return d
        raise NotFound(f"no decision {decision_id}", f"没有决定 {decision_id}")

    # -- cases and recordings ----------------------------------------------------
    async def case(self, who: Principal, creditor: str, case_id: str) -> CaseView:
        c = self.cases.get((creditor, case_id))
        if c is None or not who.sees(creditor):
            raise NotFound(f"no case {case_id}", f"没有案件 {case_id}")
        return c

    async def worklist(self, who: Principal) -> list[WorklistItem]:
        return [i for i in self.worklist_items if who.sees(i.creditor)]

    async def case_recordings(
        self, who: Principal, creditor: str, case_id: str, flt: RecordingFilter
    ) -> Sequence[RecordingView]:
        await self.case(who, creditor, case_id)
        out = []
        for rec, _ in self.recordings.values():
            if rec.creditor != creditor or rec.case_id != case_id or rec.state != "stored":
                continue
            local = rec.started_at.astimezone(flt.tz).date()
            if flt.agent and rec.agent_id != flt.agent:
                continue
            if flt.number and flt.number not in (rec.number_masked or ""):
                continue
            if flt.date_from and local < flt.date_from:
                continue
            if flt.date_to and local > flt.date_to:
                continue
            out.append(rec)
        return sorted(out, key=lambda r: r.started_at, reverse=True)

    async def recording(self, who: Principal, recording_id: str) -> RecordingView:
        if not who.may("recordings"):
            raise Forbidden("recordings are for qa, compliance and supervisors", "录音仅供质检、合规和主管调阅")
        got = self.recordings.get(recording_id)
        if got is None or not who.sees(got[0].creditor) or got[0].state != "stored":
            raise NotFound(f"no recording {recording_id}", f"没有录音 {recording_id}")
        return got[0]

    async def access_log(self, who: Principal, recording_id: str) -> Sequence[AccessLogEntry]:
        await self.recording(who, recording_id)
        return sorted(self.access[recording_id], key=lambda e: e.at, reverse=True)

    async def read_audio(
        self, who: Principal, recording_id: str, *, reason: str, start: int | None, end: int | None, client: str | None
    ) -> AudioSlice:
        rec = await self.recording(who, recording_id)
        if not reason.strip():
            raise Refused("an access reason is required", "必须填写借阅原因")
        data = self.recordings[recording_id][1]
        size = len(data)
        s = 0 if start is None else start
        e = size - 1 if end is None else min(end, size - 1)
        if s >= size or s > e:
            raise Refused(f"range {start}-{end} is outside 0-{size - 1}", f"范围 {start}-{end} 超出 0-{size - 1}")
        at = self.now() if self.now else datetime.now().astimezone()
        self.access[recording_id].append(
            AccessLogEntry(at=at, user=who.name, reason=reason, byte_range=f"{s}-{e}", client=client)
        )

        async def body() -> AsyncIterator[bytes]:
            for i in range(s, e + 1, 65536):
                yield data[i : min(e + 1, i + 65536)]

        return AudioSlice(content_type=rec.content_type, total_size=size, start=s, end=e, body=body())

    # -- destruction -------------------------------------------------------------
    async def destruction_register(self, who: Principal, cursor: str | None, limit: int) -> Page:
        rows = sorted((e for e in self.register if who.sees(e.creditor)), key=lambda e: e.seq, reverse=True)
        if cursor:
            rows = [e for e in rows if e.seq < int(cursor)]
        items = rows[:limit]
        nxt = str(items[-1].seq) if len(rows) > limit else None
        return Page(items=tuple(items), next_cursor=nxt, total=None)

    async def pending_purges(self, who: Principal) -> Sequence[PurgeView]:
        return [
            p
            for p in self.purges.values()
            if p.state == "pending" and all(who.sees(c) for c in p.creditors)
        ]

    async def approve_purge(self, who: Principal, purge_id: str) -> PurgeView:
        p = self.purges.get(purge_id)
        if p is None or not all(who.sees(c) for c in p.creditors):
            raise NotFound(f"no purge request {purge_id}", f"没有销毁申请 {purge_id}")
        if not who.may("purge_approve"):
            raise Forbidden("only a supervisor or compliance officer approves purges", "只有主管或合规人员可以批准销毁")
        if p.state != "pending":
            raise Refused(f"purge {purge_id} is {p.state}, not pending", f"销毁申请 {purge_id} 状态为 {p.state}，不是待批准")
        if p.requested_by == who.name:
            raise Refused(
                "dual control: the person who requested a purge cannot approve it",
                "双人控制：申请人不能批准自己的销毁申请",
            )
        at = self.now() if self.now else datetime.now().astimezone()
        done = replace(p, state="done", approved_by=who.name)
        self.purges[purge_id] = done
        for rid in p.recording_ids:
            rec, _ = self.recordings[rid]
            self.recordings[rid] = (replace(rec, state="destroyed"), b"")
            self.register.append(
                DestructionEntry(
                    seq=len(self.register) + 1,
                    recording_id=rid,
                    creditor=rec.creditor,
                    case_id=rec.case_id,
                    sha256=rec.sha256,
                    retain_until=rec.retain_until,
                    operator=p.requested_by,
                    approver=who.name,
                    destroyed_at=at,
                    method="crypto-shred",
                )
            )
        return done

    async def health(self) -> Sequence[HealthItem]:
        return list(self.health_items)
