"""The SQLite write group's memo (chain heads, users by name): a unit of work never
reads a stale value from it — not after another unit of the same group changed the
user, and not after a unit that appended to a chain was rolled back."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from adapters.db.migrate import upgrade
from adapters.db.store import SqlAlchemyCaseStore
from dialer.audit import verify
from dialer.config import build_config
from dialer.model import DecisionRecord

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)


async def _open(tmp_path: Path) -> SqlAlchemyCaseStore:
    cfg = build_config({"paths": {"data_dir": str(tmp_path)}})
    store = SqlAlchemyCaseStore(cfg.store)
    await store.__aenter__()
    await upgrade(store)
    return store


def _decision(decision_id: str) -> DecisionRecord:
    return DecisionRecord(
        decision_id=decision_id, kind="dial", at=NOW, evaluated_at=NOW, user="pbx", agent_id="col-m", channel="sip",
        creditor="bank-m", case_id="M-1", number_masked="138****0001", attempt_id=None, allowed=False,
        rule_id="cap.number_hourly", reason="cap.number_hourly: 2 of 2", reason_zh="已达上限", next_allowed_at=None,
        policy_version="v1", checks=({"rule_id": "cap.number_hourly", "passed": False, "detail": "", "detail_zh": ""},),
    )


async def _in_one_group(store: SqlAlchemyCaseStore, units: list[Any]) -> list[Any]:
    """Run `units` (each `async fn(uow)`) as units of work of ONE write group: the first
    holds the write lock until the others are queued behind it, in order. Returns what
    each returned (or the exception it raised)."""
    inside, release = asyncio.Event(), asyncio.Event()
    groups: list[Any] = []

    async def run(i: int, unit: Any) -> Any:
        try:
            async with store.write() as uow:
                groups.append(store._group)  # noqa: SLF001 - which group ran it is the test's precondition
                result = await unit(uow)
                if i == 0:
                    inside.set()
                    await release.wait()
                return result
        except Exception as exc:  # noqa: BLE001 - reported to the test
            return exc

    tasks = [asyncio.create_task(run(0, units[0]))]
    await inside.wait()
    for i, unit in enumerate(units[1:], 1):
        tasks.append(asyncio.create_task(run(i, unit)))
        await asyncio.sleep(0)  # queued on the write lock in this order
    release.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert len(groups) == len(units) and all(g is groups[0] for g in groups), "the units did not share one group"
    return results


async def test_a_user_changed_by_one_unit_is_read_fresh_by_the_next_unit_of_the_same_group(tmp_path: Path) -> None:
    store = await _open(tmp_path)
    try:
        async with store.write() as uow:
            await uow.users.add("col-m", "collector", frozenset({"bank-m"}), "h-col-m", NOW)

        async def look(uow: Any) -> Any:
            return await uow.users.by_name("col-m")

        async def grant(uow: Any) -> None:
            await uow.users.grant("col-m", "bank-n")

        before, same, _, after = await _in_one_group(store, [look, look, grant, look])
        assert before.creditors == same.creditors == frozenset({"bank-m"})
        assert after.creditors == frozenset({"bank-m", "bank-n"})
        async with store.write() as uow:  # and in the next group
            assert (await uow.users.by_name("col-m")).creditors == frozenset({"bank-m", "bank-n"})
    finally:
        await store.__aexit__(None, None, None)


async def test_an_append_rolled_back_with_its_unit_is_not_the_chain_head_of_the_next_unit(tmp_path: Path) -> None:
    store = await _open(tmp_path)
    try:
        async def append(decision_id: str, fail: bool = False) -> Any:
            async def unit(uow: Any) -> Any:
                record = await uow.decisions.append(_decision(decision_id))
                if fail:
                    raise RuntimeError("the unit fails after its append")
                return record

            return unit

        first, failed, third, fourth = await _in_one_group(
            store, [await append("d-1"), await append("d-2", fail=True), await append("d-3"), await append("d-4")]
        )
        assert isinstance(failed, RuntimeError)
        assert [(r.seq, r.prev_hash) for r in (third, fourth)] == [(2, first.hash), (3, third.hash)]
        report = await verify(store)
        assert report.ok, report
        async with store.write() as uow:  # the next group reads the head from the table
            fifth = await uow.decisions.append(_decision("d-5"))
        assert (fifth.seq, fifth.prev_hash) == (4, fourth.hash)
        assert (await verify(store)).ok
    finally:
        await store.__aexit__(None, None, None)
