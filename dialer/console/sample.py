"""Sample data for the in-memory console: the phase-1 browser harness, unit tests, and
`python -m dialer.console.sample` to look at the console without the service.

Two creditors (bank-a, bank-b), users of every console role, a few hundred blocked
decisions over the last 30 days, a case with a timeline, a recording (a generated
WAV tone), a pending purge request, health items.
"""

from __future__ import annotations

import io
import math
import random
import struct
import wave
from datetime import date, datetime, time, timedelta
from hashlib import sha256
from zoneinfo import ZoneInfo

from dialer.console.memory import InMemoryConsoleQueries
from dialer.console.ports import (
    CaseEvent,
    CaseView,
    CheckView,
    ContactView,
    DecisionDetail,
    DecisionRow,
    HealthItem,
    LegalHoldView,
    OutcomeView,
    Principal,
    PurgeView,
    RecordingView,
    TimelineEntry,
)

TZ = ZoneInfo("Asia/Shanghai")
RULES = (
    ("window.night", "outside the calling window (08:00-21:00)", "不在允许拨打时段（08:00-21:00）"),
    ("cap.number_daily", "4 calls to this number today already", "该号码今日已拨打 4 次"),
    ("cap.number_hourly", "2 calls to this number within the hour", "该号码一小时内已拨打 2 次"),
    ("case.dispute", "the debtor disputes the debt", "债务人对债务有争议"),
    ("case.paused", "the creditor paused the case", "委托方已暂停催收"),
    ("contact.not_listed", "the number is not on the case's list", "号码不在案件号码清单内"),
    ("agent.not_assigned", "the agent is not assigned to the case", "催收员未被分配此案件"),
)
TOKENS = {
    "compliance-a": "tok-compliance-a-0123456789",
    "supervisor-a": "tok-supervisor-a-0123456789",
    "qa-a": "tok-qa-a-0123456789",
    "compliance-b": "tok-compliance-b-0123456789",
    "admin": "tok-admin-0123456789",
    "collector-a": "tok-collector-a-0123456789",
}


def tone_wav(seconds: float, rate: int = 8000, freq: float = 440.0) -> bytes:
    """A mono 16-bit PCM WAV of a sine tone, `seconds` long."""
    n = int(seconds * rate)
    frames = b"".join(struct.pack("<h", int(6000 * math.sin(2 * math.pi * freq * i / rate))) for i in range(n))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return buf.getvalue()


def masked(n: int) -> str:
    return f"138****{n:04d}"


def seed(q: InMemoryConsoleQueries, today: date, *, blocked: int = 240, rng_seed: int = 8) -> InMemoryConsoleQueries:
    rng = random.Random(rng_seed)
    users = {
        "compliance-a": Principal("u-ca", "compliance-a", "compliance", frozenset({"bank-a"})),
        "supervisor-a": Principal("u-sa", "supervisor-a", "supervisor", frozenset({"bank-a"})),
        "qa-a": Principal("u-qa", "qa-a", "qa", frozenset({"bank-a"})),
        "compliance-b": Principal("u-cb", "compliance-b", "compliance", frozenset({"bank-b"})),
        "admin": Principal("u-ad", "admin", "admin", frozenset()),
        "collector-a": Principal("u-co", "collector-a", "collector", frozenset({"bank-a"})),
    }
    for name, p in users.items():
        q.add_user(TOKENS[name], p)

    agents = [f"agent-{i:02d}" for i in range(1, 9)]
    weights = [6, 1, 1, 3, 1, 1, 2, 1]  # agent-01 keeps hitting rules: the heat map shows it
    for i in range(blocked):
        day = today - timedelta(days=rng.randrange(30))
        at = datetime.combine(day, time(8), TZ) + timedelta(seconds=rng.randrange(13 * 3600))
        rule, why, why_zh = RULES[rng.choices(range(len(RULES)), weights=[5, 3, 3, 2, 1, 1, 1])[0]]
        creditor = "bank-a" if i % 5 else "bank-b"
        agent = rng.choices(agents, weights=weights)[0]
        case_id = f"A-{1000 + i % 12}" if creditor == "bank-a" else f"B-{2000 + i % 4}"
        nxt = at + timedelta(hours=rng.randrange(1, 14)) if rule.startswith(("window", "cap")) else None
        _add_decision(q, f"d-{i:05d}", at, creditor, case_id, agent, masked(i % 50), False, rule, why, why_zh, nxt)

    # A case with a full story.
    t0 = datetime.combine(today - timedelta(days=3), time(9, 30), TZ)
    _add_decision(q, "d-allow-1", t0, "bank-a", "A-1001", "agent-01", masked(1), True, "allow", "allowed", "允许", None)
    _add_decision(q, "d-allow-2", t0 + timedelta(days=1), "bank-a", "A-1001", "agent-01", masked(2), True, "allow", "allowed", "允许", None)
    blocked_at = t0 + timedelta(days=1, hours=12)
    _add_decision(
        q, "d-night-1", blocked_at, "bank-a", "A-1001", "agent-01", masked(1), False, "window.night",
        RULES[0][1], RULES[0][2], datetime.combine(blocked_at.date() + timedelta(days=1), time(8), TZ),
    )
    audio = tone_wav(6.0)
    rec = RecordingView(
        recording_id="rec-a1", creditor="bank-a", case_id="A-1001", attempt_id="att-1", agent_id="agent-01",
        number_masked=masked(1), started_at=t0 + timedelta(seconds=5), duration_s=6.0, content_type="audio/wav",
        size=len(audio), sha256=sha256(audio).hexdigest(), retain_until=today + timedelta(days=730), legal_hold=True,
    )
    q.recordings[rec.recording_id] = (rec, audio)
    old_audio = tone_wav(1.0, freq=330)
    old = RecordingView(
        recording_id="rec-old", creditor="bank-a", case_id="A-1002", attempt_id="att-0", agent_id="agent-02",
        number_masked=masked(7), started_at=datetime.combine(today - timedelta(days=800), time(10), TZ), duration_s=1.0,
        content_type="audio/wav", size=len(old_audio), sha256=sha256(old_audio).hexdigest(),
        retain_until=today - timedelta(days=70),
    )
    q.recordings[old.recording_id] = (old, old_audio)
    q.purges["purge-1"] = PurgeView(
        purge_id="purge-1", requested_by="supervisor-a", requested_at=datetime.combine(today, time(9), TZ),
        state="pending", recording_ids=("rec-old",), creditors=("bank-a",),
    )
    q.cases[("bank-a", "A-1001")] = CaseView(
        creditor="bank-a", case_id="A-1001", debtor_name="张三", status="active", follow_up="promise_to_pay",
        next_action_date=today + timedelta(days=4), flags=("complaint_risk",),
        legal_hold=LegalHoldView("complaint 投诉 #77", "supervisor-a", t0 + timedelta(days=2)),
        commission_start=today - timedelta(days=60), commission_end=today + timedelta(days=120),
        assigned_agent="agent-01", amount_due="12,345.67", overdue_days=95,
        contacts=(
            ContactView(masked(1), "self", "张三"),
            ContactView(masked(2), "family", "李四"),
            ContactView(masked(3), "third_party", None, "valid", True),
            ContactView(masked(4), "work", None, "invalid"),
        ),
        timeline=(
            TimelineEntry(
                blocked_at, "d-night-1", None, "agent-01", masked(1), False, "window.night", RULES[0][1], RULES[0][2]
            ),
            TimelineEntry(
                t0 + timedelta(days=1), "d-allow-2", "att-2", "agent-01", masked(2), True, "allow", "", "",
                OutcomeView("connected_third_party", "none", "家属表示会转告。", t0 + timedelta(days=1, minutes=3)),
            ),
            TimelineEntry(
                t0, "d-allow-1", "att-1", "agent-01", masked(1), True, "allow", "", "",
                OutcomeView(
                    "connected_self", "promise_to_pay", "客户承诺下周五还款 2000 元。", t0 + timedelta(minutes=4),
                    promise_amount="2000.00", promise_date=today + timedelta(days=5),
                ),
                ("rec-a1",),
            ),
        ),
        events=(CaseEvent(t0 + timedelta(days=2), "supervisor-a", "flag + complaint_risk"),),
    )
    q.cases[("bank-a", "A-1002")] = CaseView(
        "bank-a", "A-1002", "王五", "paused", None, None, (), None, None, None, None, None, None, (), ()
    )
    q.cases[("bank-b", "B-2001")] = CaseView(
        "bank-b", "B-2001", "赵六", "active", "waiting", today, (), None, None, None, "agent-02", "500.00", 40,
        (ContactView(masked(9), "self", "赵六"),), (),
    )
    q.health_items = [
        HealthItem("store", "ok", "sqlite"),
        HealthItem("vault", "ok", "2 recordings"),
        HealthItem("sip", "off", "not configured"),
        HealthItem("mqtt", "degraded", "reconnecting"),
        HealthItem("leader", "ok", "this instance leads; store primary"),
        HealthItem("audit_chain", "ok", "chain verified"),
    ]
    return q


def _add_decision(
    q: InMemoryConsoleQueries, did: str, at: datetime, creditor: str, case_id: str, agent: str, number: str,
    allowed: bool, rule: str, why: str, why_zh: str, nxt: datetime | None,
) -> None:
    checks = tuple(
        CheckView(r, passed=(r != rule), detail=(w if r == rule else "ok"), detail_zh=(wz if r == rule else "通过"))
        for r, w, wz in RULES
    )
    row = DecisionRow(did, at, creditor, case_id, agent, number, "api", allowed, rule, why, why_zh, nxt, "policy-2026.11.1")
    q.decisions.append(
        DecisionDetail(
            row=row, user=agent, checks=checks, evaluated_at=at,
            inputs_used={"now": at.isoformat(), "callee_tz": "Asia/Shanghai", "history": {"number_today": 4, "number_last_hour": 1}},
            attempt_id=("att-" + did) if allowed else None, record_hash=sha256(did.encode()).hexdigest(),
        )
    )


def main() -> None:  # pragma: no cover - manual look at the console
    import os
    import tempfile
    from pathlib import Path

    import uvicorn
    from fastapi import FastAPI

    from dialer.console import ConsoleSettings, console_router, load_or_create_secret

    q = seed(InMemoryConsoleQueries(), datetime.now(TZ).date())
    app = FastAPI()
    secret = load_or_create_secret(Path(tempfile.mkdtemp()), {})
    app.include_router(console_router(q, ConsoleSettings(secret=secret)))
    print("tokens:", TOKENS)
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8088")))


if __name__ == "__main__":  # pragma: no cover
    main()
