"""The case history is hash-chained per case: `dialgate audit verify` names an edited,
deleted or inserted entry; a decision names the history position it was decided on."""

from __future__ import annotations

import json

from sqlalchemy import delete, select, update

from adapters.db import tables
from dialer.audit import verify
from gate_api_support import Api


async def _some_history(api: Api) -> None:
    r = await api.dial("col-a", "C-1", "13800000001")
    aid = r.json()["attempt_id"]
    await api.post(f"/v1/attempts/{aid}/outcome", "col-a",
                   {"disposition": "connected_self", "result": "dispute", "note": "否认欠款"})
    r = await api.post("/v1/cases/C-1/flags/dispute/lift", "sup-a", {"reason": "银行核实"})
    assert r.status_code == 200, r.text


async def _rows(api: Api) -> list[dict]:
    async with api.svc.store.read() as uow:
        h = tables.case_history.c
        rows = await uow.conn.execute(select(tables.case_history).where(h.case_id == "C-1").order_by(h.seq))
        return [dict(r) for r in rows.mappings()]


async def _sql(api: Api, stmt: object) -> None:
    async with api.svc.store.write() as uow:
        await uow.conn.execute(stmt)


async def test_an_untouched_history_verifies_and_counts_every_entry(api: Api) -> None:
    await _some_history(api)
    report = await verify(api.svc.store)
    assert report.ok, report.to_dict()
    async with api.svc.store.read() as uow:
        n = len([r async for r in uow.cases.iterate_history()])
    assert report.history_entries == n > 3


async def test_an_edited_history_entry_is_named_by_case_and_seq(api: Api) -> None:
    await _some_history(api)
    rows = await _rows(api)
    lifted = next(r for r in rows if r["source"] == "api")
    body = json.loads(lifted["record"])
    body["reason"] = "nobody lifted this"
    await _sql(api, update(tables.case_history).where(tables.case_history.c.id == lifted["id"])
               .values(record=json.dumps(body)))
    (p,) = (await verify(api.svc.store)).problems
    assert (p.chain, p.kind, p.seq) == ("history:bank-a/C-1", "edited", lifted["seq"])


async def test_an_edited_mirrored_column_is_detected_too(api: Api) -> None:
    await _some_history(api)
    rows = await _rows(api)
    await _sql(api, update(tables.case_history).where(tables.case_history.c.id == rows[1]["id"]).values(actor="x"))
    (p,) = (await verify(api.svc.store)).problems
    assert (p.kind, p.seq) == ("edited", rows[1]["seq"])
    assert "actor" in p.detail


async def test_a_deleted_entry_in_the_middle_is_named(api: Api) -> None:
    await _some_history(api)
    rows = await _rows(api)
    await _sql(api, delete(tables.case_history).where(tables.case_history.c.id == rows[1]["id"]))
    (p,) = (await verify(api.svc.store)).problems
    assert (p.chain, p.kind, p.seq) == ("history:bank-a/C-1", "deleted", rows[1]["seq"])


async def test_a_deleted_last_entry_is_caught_by_the_head_on_the_case_row(api: Api) -> None:
    await _some_history(api)
    rows = await _rows(api)
    await _sql(api, delete(tables.case_history).where(tables.case_history.c.id == rows[-1]["id"]))
    (p,) = (await verify(api.svc.store)).problems
    assert (p.chain, p.kind, p.seq) == ("history:bank-a/C-1", "deleted", rows[-1]["seq"])


async def test_a_deleted_whole_history_is_caught(api: Api) -> None:
    await _some_history(api)
    await _sql(api, delete(tables.case_history).where(tables.case_history.c.case_id == "C-1"))
    problems = (await verify(api.svc.store)).problems
    assert [(p.chain, p.kind, p.seq) for p in problems] == [("history:bank-a/C-1", "deleted", 1)]


async def test_a_decision_names_the_history_position_it_was_decided_on(api: Api) -> None:
    await _some_history(api)
    r = await api.dial("col-a", "C-1", "13900000002")
    assert r.status_code == 201, r.text
    aid = r.json()["attempt_id"]
    case = (await api.get("/v1/cases/C-1", "comp-a")).json()
    (record,) = [a["decision"] for a in case["attempts"] if a["attempt_id"] == aid]
    seq = record["inputs_used"]["case_history_seq"]
    rows = await _rows(api)
    assert seq == rows[-1]["seq"]
    # The entry at that position is the last change before the decision: the lift.
    assert json.loads(rows[-1]["record"])["source_ref"] == "POST /v1/cases/C-1/flags/dispute/lift"


async def test_an_entry_rehashed_without_the_evidence_key_is_detected(api: Api) -> None:
    """A database writer who edits the last entry and recomputes its link as plain
    SHA-256 (and moves the case row's head to it) still fails: links are HMACs under a
    key that is not in the database."""
    from dialer.chain import chain_hash

    await _some_history(api)
    rows = await _rows(api)
    last = rows[-1]
    body = json.loads(last["record"])
    body["reason"] = "nobody lifted this"
    record = json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    forged = chain_hash(last["prev_hash"], record)
    await _sql(api, update(tables.case_history).where(tables.case_history.c.id == last["id"])
               .values(record=record, hash=forged))
    await _sql(api, update(tables.cases).where(tables.cases.c.case_id == "C-1").values(history_hash=forged))
    (p,) = (await verify(api.svc.store)).problems
    assert (p.chain, p.kind, p.seq) == ("history:bank-a/C-1", "edited", last["seq"])
