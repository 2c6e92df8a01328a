"""A real `dialgate serve` process for the console's browser tests, seeded the way an
operator would: users with `dialgate users add`, then the HTTP API (case import, dials,
an outcome, a recording uploaded as the PBX would).

Calling window: bank-a's window is the whole day (policy config), so the seeded dials
decide the same way whatever time the tests run; blocks come from the hourly cap, an
unassigned agent and a number not on the case's list.
"""

from __future__ import annotations

import io
import math
import os
import socket
import sqlite3
import struct
import subprocess
import sys
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

DIALGATE = str(Path(sys.executable).with_name("dialgate"))
RECORDING_SECONDS = 5.0
USERS = (
    ("comp-a", "compliance", ("bank-a",)),
    ("sup-a", "supervisor", ("bank-a",)),
    ("qa-a", "qa", ("bank-a",)),
    ("data-a", "data", ("bank-a",)),
    ("data-b", "data", ("bank-b",)),
    ("col-a", "collector", ("bank-a",)),
    ("col-a2", "collector", ("bank-a",)),
    ("col-b", "collector", ("bank-b",)),
    ("pbx", "pbx", ("bank-a", "bank-b")),
    ("admin", "admin", ()),
)
CONFIG = """\
[paths]
data_dir = "{data}"

[http]
host = "127.0.0.1"
port = {port}

[log]
level = "warning"
json = true

[policy.creditors.bank-a.window]
start = "00:00"
end = "24:00"
"""


def tone_wav(seconds: float, rate: int = 8000) -> bytes:
    n = int(seconds * rate)
    frames = b"".join(struct.pack("<h", int(5000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(n))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def case_doc(case_id: str, creditor: str, agent: str, *contacts: tuple[str, str]) -> dict[str, Any]:
    return {
        "case_id": case_id, "creditor": creditor, "debtor_name": "张三", "status": "active",
        "commission_start": "2026-01-01", "commission_end": "2030-12-31", "assigned_agent": agent,
        "flags": [], "amount_due": "1000.00", "overdue_days": 40,
        "contacts": [{"number": n, "relation": r} for n, r in contacts],
    }


@dataclass
class Served:
    base: str
    proc: subprocess.Popen[bytes]
    tokens: dict[str, str]
    log_path: Path
    attempts: list[str] = field(default_factory=list)
    recording_id: str | None = None
    recording_error: str | None = None
    old_recording_id: str | None = None
    purge_id: str | None = None

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def blocked_api(self, who: str = "comp-a", **params: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.base}/v1/blocked-dials", params={"limit": "1000", **params}, headers=self.auth(who), timeout=10)
        assert r.status_code == 200, r.text
        items = [i for i in r.json()["items"] if i["kind"] == "dial"]
        return sorted(items, key=lambda i: (i["at"], i["seq"]), reverse=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def run_cli(*args: str, env: dict[str, str]) -> str:
    out = subprocess.run([DIALGATE, *args], capture_output=True, text=True, timeout=60, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"dialgate {' '.join(args)} failed: {out.stderr[-2000:]}")
    return out.stdout


def start(tmp: Path) -> Served:
    port = free_port()
    cfg = tmp / "config.toml"
    cfg.write_text(CONFIG.format(data=(tmp / "var").as_posix(), port=port))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIALGATE_")}
    tokens = {}

    def add(name: str, role: str, creditors: tuple[str, ...]) -> None:
        args = ["users", "add", "--name", name, "--role", role, "--config", str(cfg)]
        for c in creditors:
            args += ["--creditor", c]
        tokens[name] = run_cli(*args, env=env).strip().splitlines()[-1]

    add(*USERS[0])  # creates and migrates the database
    with ThreadPoolExecutor(max_workers=4) as pool:
        for f in [pool.submit(add, *u) for u in USERS[1:]]:
            f.result()
    log_path = tmp / "serve.log"
    # The server holds its own copy of the log's descriptor; ours closes once it started.
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([DIALGATE, "serve", "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT, env=env)
    served = Served(f"http://127.0.0.1:{port}", proc, tokens, log_path)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"dialgate serve exited with {proc.returncode}: {log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{served.base}/readyz", headers=served.auth("pbx"), timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            served.stop()
            raise RuntimeError(f"dialgate serve not ready after 60 s: {log_path.read_text()[-3000:]}")
        time.sleep(0.1)  # polling a readiness endpoint: the process gives no other signal
    try:
        seed(served)
    except BaseException:
        served.stop()  # a failed seed must not leave the server running after the tests
        raise
    return served


def seed(s: Served) -> None:
    with httpx.Client(base_url=s.base, timeout=30) as c:
        r = c.post("/v1/cases:import", headers=s.auth("data-a"), json={"cases": [
            case_doc("C-1", "bank-a", "col-a", ("13800000001", "self"), ("13900000002", "family")),
            case_doc("C-2", "bank-a", "col-a2", ("13700000003", "self")),
        ]})
        assert r.status_code == 200, r.text
        r = c.post("/v1/cases:import", headers=s.auth("data-b"), json={"cases": [
            case_doc("B-1", "bank-b", "col-b", ("18600000006", "self")),
        ]})
        assert r.status_code == 200, r.text

        def dial(who: str, case_id: str, number: str) -> httpx.Response:
            return c.post("/v1/dials", headers=s.auth(who), json={"case_id": case_id, "number": number, "agent_id": who})

        for _ in range(3):  # two allowed, then cap.number_hourly
            r = dial("col-a", "C-1", "13800000001")
            if r.status_code == 201:
                s.attempts.append(r.json()["attempt_id"])
        assert len(s.attempts) == 2, "bank-a's whole-day window should allow the first two dials"
        for _ in range(2):
            assert dial("col-a", "C-2", "13700000003").status_code == 403  # not assigned
            assert dial("col-a2", "C-2", "13600000000").status_code == 403  # not on the list
        dial("col-b", "B-1", "18600000006")
        r = c.post(f"/v1/attempts/{s.attempts[0]}/outcome", headers=s.auth("col-a"), json={
            "disposition": "connected_self", "result": "promise_to_pay", "note": "客户承诺周五还款 500 元",
            "promise": {"amount": "500.00", "date": "2030-01-04"},
        })
        assert r.status_code in (200, 201), r.text
        started = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
        r = c.post(
            "/v1/recordings",
            params={"attempt_id": s.attempts[0], "started_at": started, "duration": str(RECORDING_SECONDS)},
            headers={**s.auth("pbx"), "Content-Type": "audio/wav"},
            content=tone_wav(RECORDING_SECONDS),
        )
        if r.status_code == 201:
            s.recording_id = r.json()["recording_id"]
        else:
            s.recording_error = f"POST /v1/recordings answered {r.status_code}: {r.text[:300]}"
            return
        # A call whose retention has run out: the operator (admin) asks for its
        # destruction; the second person approves in the console. Retention runs from
        # the upload at the earliest, so the stored date is moved back as years would.
        r = c.post(
            "/v1/recordings",
            params={"attempt_id": s.attempts[1], "duration": "1.0"},
            headers={**s.auth("pbx"), "Content-Type": "audio/wav"},
            content=tone_wav(1.0),
        )
        assert r.status_code == 201, r.text
        s.old_recording_id = r.json()["recording_id"]
        db = sqlite3.connect(s.log_path.parent / "var" / "dialgate.db", timeout=30)
        with db:
            db.execute("UPDATE recordings SET retain_until = '2025-05-31' WHERE recording_id = ?", (s.old_recording_id,))
        db.close()
        r = c.post("/v1/purges", headers=s.auth("admin"), json={"creditor": "bank-a"})
        assert r.status_code == 201, r.text
        s.purge_id = r.json()["purge"]["purge_id"]
        assert [d["recording_id"] for d in r.json()["due"]] == [s.old_recording_id]
