"""The web console's health strip: store, vault, SIP listener, MQTT, leadership, holiday
arrangements, and the decision log's hash-chain verification run in a child process."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

from adapters.db.console_base import ConsoleState
from dialer.console.ports import HealthItem
from policy.text import Text


AUDIT_EVERY_S = 600.0
AUDIT_TIMEOUT_S = 600.0


class HealthQueries(ConsoleState):
    """The health items of `SqlAlchemyConsoleQueries`."""

    # -- health ------------------------------------------------------------------------------
    async def health(self) -> Sequence[HealthItem]:
        """Store (a ping), vault (its blob directory), SIP listener and MQTT (whatever the
        composition root put on `services.sip` / `services.mqtt`: a `health()` returning
        (status, detail) or a bool; absent means not enabled), and the decision log's
        hash-chain verification, run in the background at most every AUDIT_EVERY_S and
        shown from its last result so no page waits for a full walk of the log."""
        if self._health is not None:
            return await self._health()
        items = [await self._store_health(), await self._vault_health()]
        for name in ("sip", "mqtt"):
            items.append(await component_health(name, getattr(self.services, name, None)))
        items.append(await self._leader_health())
        items.append(self._audit_health())
        items.append(self._holidays_health())
        return items

    def _holidays_health(self) -> HealthItem:
        # The statutory days block without the year's arrangement: degraded, not down.
        from dialer.holidays_cli import arrangement_health

        report = arrangement_health(self.services.policies, self.services.clock.now())
        if report is None:
            return HealthItem("holidays", "off", "no creditor uses cn_holidays")
        if report["status"] == "ok":
            return HealthItem("holidays", "ok", f"arrangements known up to {report['arranged_until']}")
        return HealthItem("holidays", "degraded", Text(report["detail"], report["detail_zh"]).line())

    async def _leader_health(self) -> HealthItem:
        """Which instance runs the relay, sweeps, inbox and PBX user agent, and whether
        the store answering is the primary (a standby cannot take a decision)."""
        leadership = getattr(self.services, "leadership", None)
        if leadership is None:
            return HealthItem("leader", "off", "not enabled")
        try:
            view = await asyncio.wait_for(leadership.describe(), timeout=2.0)
        except Exception as exc:  # noqa: BLE001 - the strip reports, never raises
            return HealthItem("leader", "down", type(exc).__name__)
        store = {True: "store primary", False: "store is a standby", None: "store role unknown"}[view.get("store_primary")]
        if view.get("is_leader"):
            return HealthItem("leader", "ok" if view.get("store_primary") else "down", f"this instance leads; {store}")
        if view.get("leader"):
            return HealthItem("leader", "ok" if view.get("store_primary") else "down", f"led by {view['leader']}; {store}")
        return HealthItem("leader", "degraded", f"no leader elected yet; {store}")

    async def _store_health(self) -> HealthItem:
        try:
            await asyncio.wait_for(self.store.ping(), timeout=2.0)
            return HealthItem("store", "ok", "reachable")
        except Exception as exc:  # noqa: BLE001 - the strip reports, never raises
            return HealthItem("store", "down", type(exc).__name__)

    async def _vault_health(self) -> HealthItem:
        if self.vault is None:
            return HealthItem("vault", "off", "not enabled")
        check = getattr(self.services.gate, "recordings", None)
        if check is None or not hasattr(check, "available"):
            return HealthItem("vault", "ok", "enabled")
        try:
            ok = await asyncio.wait_for(check.available(), timeout=2.0)
        except Exception as exc:  # noqa: BLE001
            return HealthItem("vault", "down", type(exc).__name__)
        # The same check the gate makes before every dial: no recording, no call.
        if not ok:
            return HealthItem("vault", "down", "calls are refused")
        watch = getattr(self.services, "recording_watch", None)
        if watch is not None:
            try:
                missing = await asyncio.wait_for(watch.open_count(), timeout=2.0)
            except Exception as exc:  # noqa: BLE001
                return HealthItem("vault", "degraded", f"completeness unknown: {type(exc).__name__}")
            if missing:
                return HealthItem("vault", "degraded", f"{missing} connected calls without a recording")
        return HealthItem("vault", "ok", "recording possible")

    async def audit_verified(self) -> Any:
        """The running (or last) chain verification's report, awaited; None if none started."""
        return await self._audit_task if self._audit_task is not None else None

    async def _verify_chain(self) -> Any:
        return await _verify_off_loop(self.store)

    def _audit_health(self) -> HealthItem:
        now = time.monotonic()
        if self._audit_task is None or (self._audit_task.done() and now - self._audit_at > AUDIT_EVERY_S):
            self._audit_at = now
            self._audit_task = asyncio.create_task(self._verify_chain(), name="console-audit-verify")
        task = self._audit_task
        if not task.done():
            return self._audit_last or HealthItem("audit_chain", "checking", "verifying the decision log's hash chains")
        if task.cancelled() or task.exception() is not None:
            exc = None if task.cancelled() else task.exception()
            self._audit_last = HealthItem("audit_chain", "down", f"verification failed: {type(exc).__name__}")
        else:
            report = task.result()
            if report.ok:
                n = sum(report.chains.values())
                self._audit_last = HealthItem("audit_chain", "ok", f"{n} records verified")
            else:
                first = report.problems[0]
                self._audit_last = HealthItem(
                    "audit_chain", "down", f"{first.kind} at {first.chain} seq {first.seq}: {first.detail}"
                )
        return self._audit_last


def verify_main() -> None:
    """Child-process entry: read the store's config (JSON) on stdin, walk every chain,
    print the report as JSON. The URL may hold a password, so it never goes in argv."""
    import dataclasses
    import sys

    from adapters.db.store import SqlAlchemyCaseStore
    from dialer.audit import verify
    from dialer.config import StoreConfig
    from dialer.evidence import EvidenceKey

    doc = json.loads(sys.stdin.read())
    key = EvidenceKey(bytes.fromhex(doc.pop("evidence_key")), "parent process")
    cfg = StoreConfig(**doc)

    async def walk() -> Any:
        async with SqlAlchemyCaseStore(cfg, evidence=key) as own:
            return await verify(own)

    report = asyncio.run(walk())
    sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=False))
    del dataclasses


async def _verify_off_loop(store: Any) -> Any:
    """`dialer.audit.verify` in a child process: walking the whole log hashes every
    record in Python, which in this process (even on a thread, holding the GIL) would
    stall the pages for seconds on a large log."""
    import dataclasses
    import sys

    from dialer.audit import Problem, Report, verify

    if store.url in ("sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:"):
        return await verify(store)  # a private in-memory database: only this engine sees it
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from adapters.db.console_health import verify_main; verify_main()",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(json.dumps({**dataclasses.asdict(store.config),
                                         "evidence_key": store.evidence.hand_over()}).encode()),
            timeout=AUDIT_TIMEOUT_S
        )
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"audit verification exited {proc.returncode}: {err.decode(errors='replace')[-300:]}")
    doc = json.loads(out)
    return Report(chains=doc["chains"], problems=[Problem(**p) for p in doc["problems"]])


async def component_health(name: str, obj: Any) -> HealthItem:
    if obj is None:
        return HealthItem(name, "off", "not enabled")
    probe = getattr(obj, "health", None)
    if probe is None:
        return HealthItem(name, "ok", "running")
    try:
        got = probe()
        if asyncio.iscoroutine(got):
            got = await asyncio.wait_for(got, timeout=2.0)
    except Exception as exc:  # noqa: BLE001
        return HealthItem(name, "down", type(exc).__name__)
    if isinstance(got, tuple):
        return HealthItem(name, str(got[0]), str(got[1]) if len(got) > 1 else "")
    if isinstance(got, dict):  # e.g. the MQTT bus: {"ok": bool, "state": …, "last_error": …}
        ok = bool(got.get("ok", got.get("connected", False)))
        detail = str(got.get("state") or "") if ok else str(got.get("last_error") or got.get("state") or "")
        return HealthItem(name, "ok" if ok else "down", detail)
    return HealthItem(name, "ok" if got else "down", "")
