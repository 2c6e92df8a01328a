"""The gate against a real SQLite file: fail-closed, pending authorisations for the SIP
gate, the decision-log hash chain and `dialgate audit verify`, migrations."""

from __future__ import annotations

import asyncio
import json
from contextlib import AbstractAsyncContextManager
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, func, insert, select, text, update

from adapters.db import tables
from adapters.db.migrate import head_revision, upgrade
from adapters.db.store import SqlAlchemyCaseStore
from dialer.chain import canonical_json, chain_hash
from dialer.services import Services
from dialer.audit import verify
from dialer.auth import add_user
from dialer.config import build_config
from dialer.evidence import EvidenceKey
from dialer.errors import InvalidImport
from dialer.imports import parse_cases_payload
from dialer.model import Principal
from dialer.usecases import RequestDial
from tests.support.harness import REPO
from tests.support.builders import one_case
from tests.support.serving import one_case_gate, store_url


@pytest.fixture
async def gate(tmp_path: Path) -> AsyncIterator[tuple[Services, dict[str, Principal]]]:
    async with _serving(tmp_path) as served:
        yield served


@pytest.fixture(params=["sqlite", "postgresql"])
async def gate_on_either(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Services, dict[str, Principal]]]:
    """`gate` on the SQLite file and on PostgreSQL."""
    async with store_url(request.param, "gate") as url, _serving(tmp_path, url) as served:
        yield served


def _serving(tmp_path: Path, url: str | None = None) -> AbstractAsyncContextManager[tuple[Services, dict[str, Principal]]]:
    return one_case_gate(
        tmp_path, url, creditor="bank-s", case_id="S-1", number="13800000077",
        users=(("col-s", "collector"), ("pbx-s", "pbx"), ("data-s", "data")),
        store={"busy_timeout_ms": 200, "timeout_s": 2.0},
        # An event bus is configured (open_services starts none), so the store keeps events.
        config={"mqtt": {"url": "mqtt://127.0.0.1:1883"}},
    )


async def _count(svc: Services, table: Any) -> int:
    async with svc.store.read() as uow:
        return (await uow.conn.execute(select(func.count()).select_from(table))).scalar_one()


def _dial(users: dict[str, Principal], **kw: Any) -> RequestDial:
    base = dict(actor=users["col-s"], case_id="S-1", number="13800000077", agent_id="col-s")
    return RequestDial(**{**base, **kw})


# -- fail closed --------------------------------------------------------------------
async def test_a_locked_store_answers_a_block_with_store_unavailable_and_reserves_nothing(gate: Any) -> None:
    svc, users = gate
    path = svc.config.store.url.split(":///", 1)[1]
    locker = sqlite3.connect(path, isolation_level=None, timeout=0.1)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        result = await svc.gate.request_dial(_dial(users))
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert result.allowed is False
    assert result.decision.rule_id == "system.store_unavailable"
    assert result.attempt is None
    assert await _count(svc, tables.attempts) == 0
    # With the store back, the same dial is decided normally.
    assert (await svc.gate.request_dial(_dial(users))).allowed is True


# -- pending authorisations (SIP gate) ---------------------------------------------
async def test_an_allowed_invite_arriving_again_after_its_lifetime_is_a_logged_603_not_a_second_302(
    gate_on_either: Any,
) -> None:
    svc, users = gate_on_either
    clock = svc.gate.clock
    invite = _dial(users, actor=users["pbx-s"], channel="sip", match_pending=True, request_key="c-1;t-1;7")
    first = await svc.gate.request_dial(invite)
    clock.set(clock.now() + timedelta(seconds=5))
    retried = await svc.gate.request_dial(invite)  # a retransmission, or the proxy's retry at another gate
    clock.set(clock.now() + timedelta(seconds=60))
    late = await svc.gate.request_dial(invite)
    assert first.allowed and retried.allowed and retried.replayed and retried.decision_id == first.decision_id
    assert not late.allowed and late.decision.rule_id == "sip.invite_replayed"
    assert first.attempt is not None and late.record.attempt_id == first.attempt.attempt_id
    assert await _count(svc, tables.attempts) == 1
    async with svc.store.read() as uow:
        rows = (await uow.conn.execute(select(tables.decisions.c.allowed).order_by(tables.decisions.c.at))).all()
    assert [r[0] for r in rows] == [True, False]


async def test_sip_gate_consumes_a_click_to_dial_authorisation_without_counting_again(gate: Any) -> None:
    svc, users = gate
    first = await svc.gate.request_dial(_dial(users))
    assert first.allowed and first.attempt is not None
    sip = await svc.gate.request_dial(_dial(users, actor=users["pbx-s"], channel="sip", match_pending=True))
    assert sip.allowed and sip.reused
    assert sip.attempt is not None and sip.attempt.attempt_id == first.attempt.attempt_id
    assert sip.decision_id == first.decision_id
    assert await _count(svc, tables.attempts) == 1
    async with svc.store.read() as uow:
        assert (await uow.attempts.get(first.attempt.attempt_id)).state == "dialing"  # type: ignore[union-attr]
    # Consumed once: the next SIP request is decided (and counted) afresh.
    again = await svc.gate.request_dial(_dial(users, actor=users["pbx-s"], channel="sip", match_pending=True))
    assert again.allowed and not again.reused
    assert await _count(svc, tables.attempts) == 2


async def test_sip_gate_matches_an_authorisation_by_attempt_id(gate: Any) -> None:
    svc, users = gate
    first = await svc.gate.request_dial(_dial(users))
    sip = await svc.gate.request_dial(_dial(
        users, actor=users["pbx-s"], channel="sip", match_pending=True, attempt_id=first.attempt.attempt_id))
    assert sip.reused and sip.attempt.attempt_id == first.attempt.attempt_id


async def test_an_expired_authorisation_is_not_matched(gate: Any) -> None:
    svc, users = gate
    await svc.gate.request_dial(_dial(users))
    svc.clock.advance(seconds=svc.config.gate.attempt_validity_s + 1)
    sip = await svc.gate.request_dial(_dial(users, actor=users["pbx-s"], channel="sip", match_pending=True))
    assert not sip.reused
    assert await svc.gate.expire_attempts() == 1
    async with svc.store.read() as uow:
        states = sorted(r[0] for r in await uow.conn.execute(select(tables.attempts.c.state)))
    assert states == ["dialing", "expired"]


async def test_expiry_marks_every_stale_authorisation_in_small_batches(gate: Any) -> None:
    svc, users = gate
    now = svc.clock.now()
    async with svc.store.write() as uow:
        case_pk = (await uow.cases.get("bank-s", "S-1")).pk  # type: ignore[union-attr]
        for i in range(120):
            await uow.conn.execute(insert(tables.attempts).values(
                id=f"stale-{i}", case_pk=case_pk, creditor="bank-s", case_id="S-1", number="+8613800000077",
                relation="self", agent_id="col-s", channel="api", state="authorised",
                at=now - timedelta(hours=1), valid_until=now - timedelta(minutes=58), decision_id=f"d-{i}",
                connected=False))
    assert await svc.gate.expire_attempts() == 120
    async with svc.store.read() as uow:
        states = {r[0] for r in await uow.conn.execute(select(tables.attempts.c.state))}
        events = (await uow.conn.execute(select(func.count()).select_from(tables.outbox).where(
            tables.outbox.c.type == "attempt.state"))).scalar_one()
    assert states == {"expired"}
    assert events == 120


# -- case ids -----------------------------------------------------------------------
async def test_an_import_naming_a_stored_case_in_another_letter_case_is_refused_whole_on_either_engine(
    gate_on_either: Any,
) -> None:
    svc, users = gate_on_either
    before = await _count(svc, tables.cases)
    rows = [one_case("S-2", "bank-s", "col-s", "13800000078"), one_case("s-1", "bank-s", "col-s", "13800000077")]
    with pytest.raises(InvalidImport) as caught:
        await svc.gate.import_cases(users["data-s"], parse_cases_payload({"cases": rows}, svc.region_of))
    assert [(e["row"], e["field"]) for e in caught.value.errors] == [(2, "case_id")]
    assert await _count(svc, tables.cases) == before
    # The stored case keeps being the only one its number reaches.
    assert (await svc.gate.request_dial(_dial(users, case_id="", channel="sip", match_pending=True))).allowed


# -- decision log chain -------------------------------------------------------------
async def _decide(svc: Services, users: dict[str, Principal], n: int) -> None:
    for _ in range(n):
        await svc.gate.request_dial(_dial(users))
        svc.clock.advance(minutes=1)


async def _sql(svc: Services, stmt: Any) -> None:
    async with svc.store.write() as uow:
        await uow.conn.execute(stmt)


async def test_an_untouched_chain_verifies(gate: Any) -> None:
    svc, users = gate
    await _decide(svc, users, 5)
    report = await verify(svc.store)
    assert report.ok and report.chains == {"bank-s": 5}


async def test_verify_names_the_first_edited_record(gate: Any) -> None:
    svc, users = gate
    await _decide(svc, users, 5)
    await _sql(svc, update(tables.decisions).where(tables.decisions.c.seq == 3).values(rule_id="allow"))
    await _sql(svc, update(tables.decisions).where(tables.decisions.c.seq == 4).values(
        record=text("replace(record, 'limit reached', 'fine')")))
    (p,) = (await verify(svc.store)).problems
    assert (p.kind, p.seq) == ("edited", 3)


async def test_verify_names_an_edited_record_whose_json_was_rewritten(gate: Any) -> None:
    svc, users = gate
    await _decide(svc, users, 4)
    await _sql(svc, update(tables.decisions).where(tables.decisions.c.seq == 4).values(
        record=text("replace(record, 'limit reached', 'fine')")))
    (p,) = (await verify(svc.store)).problems
    assert (p.kind, p.seq) == ("edited", 4)


async def test_verify_names_a_deleted_record(gate: Any) -> None:
    svc, users = gate
    await _decide(svc, users, 5)
    await _sql(svc, tables.decisions.delete().where(tables.decisions.c.seq == 3))
    (p,) = (await verify(svc.store)).problems
    assert (p.kind, p.seq) == ("deleted", 3)


async def test_verify_names_records_deleted_from_the_end(gate: Any) -> None:
    svc, users = gate
    await _decide(svc, users, 5)
    await _sql(svc, tables.decisions.delete().where(tables.decisions.c.seq >= 4))
    (p,) = (await verify(svc.store)).problems
    assert (p.kind, p.seq) == ("deleted", 4)


async def test_verify_names_an_inserted_forged_record(gate: Any) -> None:
    svc, users = gate
    await _decide(svc, users, 5)
    async with svc.store.write() as uow:
        rows = (await uow.conn.execute(select(tables.decisions).order_by(tables.decisions.c.seq))).mappings().all()
        # The forger renumbers the later rows' columns and slips a well-formed record in at seq 3.
        for r in reversed(rows[2:]):
            await uow.conn.execute(update(tables.decisions).where(tables.decisions.c.id == r["id"]).values(seq=r["seq"] + 1))
        body = json.loads(rows[2]["record"])
        body.update(decision_id="forged-0000", rule_id="allow", allowed=True, prev_hash=rows[1]["hash"])
        record = canonical_json(body)
        await uow.conn.execute(insert(tables.decisions).values(
            chain="bank-s", seq=3, decision_id="forged-0000", kind="dial", at=rows[2]["at"], creditor="bank-s",
            case_id="S-1", agent_id="col-s", allowed=True, rule_id="allow", attempt_id=rows[2]["attempt_id"],
            record=record, prev_hash=rows[1]["hash"], hash=svc.store.evidence.link(rows[1]["hash"], record.encode())))
    # Even a forger holding the key is caught: the next record links past the forged one.
    (p,) = (await verify(svc.store)).problems
    assert (p.kind, p.seq, p.decision_id) == ("inserted", 3, "forged-0000")


async def _sql_rows(svc: Services, stmt: Any) -> list[Any]:
    async with svc.store.read() as uow:
        return list((await uow.conn.execute(stmt)).all())


async def _flip_to_allowed(svc: Services, seq: int, rehash: Any, *, flip: bool = True) -> None:
    """What a database writer does to turn a blocked dial into an allowed one: edit the
    record and its columns, then recompute this hash, the next records' and the head."""
    async with svc.store.write() as uow:
        d = tables.decisions.c
        rows = (await uow.conn.execute(select(tables.decisions).order_by(d.seq))).mappings().all()
        prev = rows[seq - 2]["hash"] if seq > 1 else "0" * 64
        for r in rows[seq - 1:]:
            body = json.loads(r["record"])
            if r["seq"] == seq and flip:
                body.update(allowed=True, rule_id="allow")
            body["prev_hash"] = prev
            record = canonical_json(body)
            digest = rehash(prev, record)
            await uow.conn.execute(update(tables.decisions).where(d.id == r["id"]).values(
                record=record, prev_hash=prev, hash=digest, allowed=body["allowed"], rule_id=body["rule_id"]))
            prev = digest
        await uow.conn.execute(update(tables.chain_heads).values(hash=prev))


async def test_a_decision_flipped_to_allowed_and_rehashed_without_the_key_is_detected(gate: Any) -> None:
    svc, users = gate
    await _decide(svc, users, 5)
    blocked = await _sql_rows(svc, select(tables.decisions.c.seq).where(tables.decisions.c.allowed.is_(False)))
    await _flip_to_allowed(svc, blocked[0][0], chain_hash)
    (p,) = (await verify(svc.store)).problems
    assert (p.kind, p.seq) == ("edited", blocked[0][0])


async def test_a_decision_flipped_and_rechained_under_another_key_is_detected_at_the_head(gate: Any) -> None:
    svc, users = gate
    await _decide(svc, users, 5)
    other = EvidenceKey(b"not the service's key, 32 bytes!")
    await _flip_to_allowed(svc, 1, lambda prev, record: other.link(prev, record.encode()))
    (p,) = (await verify(svc.store)).problems
    assert (p.kind, p.seq) == ("edited", 1)


async def test_the_tail_deleted_and_the_head_rolled_back_to_a_stored_hash_is_detected(gate: Any) -> None:
    svc, users = gate
    await _decide(svc, users, 5)
    kept = await _sql_rows(svc, select(tables.decisions.c.seq, tables.decisions.c.hash).where(
        tables.decisions.c.seq == 4))
    await _sql(svc, tables.decisions.delete().where(tables.decisions.c.seq == 5))
    await _sql(svc, update(tables.chain_heads).values(seq=kept[0][0], hash=kept[0][1]))
    (p,) = (await verify(svc.store)).problems
    assert p.kind == "edited" and "head" in p.detail


async def test_a_chain_written_before_the_key_keeps_verifying_and_continues_keyed(gate: Any) -> None:
    svc, users = gate
    await _decide(svc, users, 3)
    # Rewrite the chain as an earlier build left it: SHA-256 links, a head without MAC.
    await _flip_to_allowed(svc, 1, chain_hash, flip=False)
    await _sql(svc, update(tables.chain_heads).values(keyed_from=None, mac=None))
    assert [p.kind for p in (await verify(svc.store)).problems] == ["unkeyed"]
    async with svc.store.write() as uow:
        assert await uow.decisions.anchor() == 1
    await _decide(svc, users, 2)
    report = await verify(svc.store)
    assert report.ok and report.chains == {"bank-s": 5}
    [head] = await _sql_rows(svc, select(tables.chain_heads.c.keyed_from))
    assert head[0] == 4
    # The keyed records bind the old ones: an old record edited and re-hashed in the old
    # scheme breaks the first keyed record, which cannot be re-MACed without the key.
    await _flip_to_allowed(svc, 3, chain_hash)
    (p,) = (await verify(svc.store)).problems
    assert (p.kind, p.seq) == ("edited", 4)


@pytest.mark.slow
async def test_audit_verify_command_exits_1_and_names_the_record(gate: Any) -> None:
    svc, users = gate
    await _decide(svc, users, 3)
    await _sql(svc, update(tables.decisions).where(tables.decisions.c.seq == 2).values(agent_id="someone-else"))
    cfg = Path(svc.config.paths.data_dir) / "c.toml"
    cfg.write_text(f'[paths]\ndata_dir = "{svc.config.paths.data_dir}"\n[store]\nurl = "{svc.config.store.url}"\n',
                   encoding="utf-8")  # the data dir holds the evidence key
    done = subprocess.run([sys.executable, "-m", "dialer.cli", "audit", "verify", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 1, done.stderr
    assert "TAMPERED chain bank-s: record seq 2" in done.stdout
    assert "edited" in done.stdout


# -- migrations ---------------------------------------------------------------------
def _queried_metadata() -> MetaData:
    """Every table the service's code queries, the PBX progress rows and the MQTT call
    map included: all in adapters/db/tables.py, all built by migrations, none at start-up."""
    combined = MetaData()
    for table in tables.metadata.tables.values():
        table.to_metadata(combined)
    return combined


async def _schema_diff(url: str) -> list[Any]:
    cfg = build_config({"store": {"url": url}})
    queried = _queried_metadata()
    assert {"pbx_attempt_progress", "mqtt_pbx_calls"} <= set(queried.tables)
    async with SqlAlchemyCaseStore(cfg.store) as store:
        assert await upgrade(store) == head_revision()
        assert await upgrade(store) == head_revision()  # idempotent
        async with store.engine.connect() as conn:
            diffs = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), queried))
    # Other components (the recordings vault) add their own tables and indexes by their
    # own revisions ("remove_*" from this metadata's point of view); everything declared
    # here must exist as declared.
    return [d for d in diffs if not (isinstance(d, tuple) and str(d[0]).startswith("remove_"))]


async def test_migrations_build_exactly_the_tables_the_code_queries_on_sqlite(tmp_path: Path) -> None:
    assert await _schema_diff(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}") == []


@pytest.mark.postgres
async def test_migrations_build_exactly_the_tables_the_code_queries_on_postgresql(pg_url: str) -> None:
    assert await _schema_diff(pg_url) == []


# -- refusals before the policy (SIP: unknown case or agent) ------------------------
async def test_a_refusal_before_the_policy_is_a_blocked_decision_in_the_log_and_reserves_nothing(gate: Any) -> None:
    svc, users = gate
    admin, _ = await add_user(svc.store, svc.gate.clock, "admin-s", "admin", frozenset())
    compliance, _ = await add_user(svc.store, svc.gate.clock, "comp-s", "compliance", frozenset({"bank-s"}))
    unknown = RequestDial(actor=users["pbx-s"], case_id="", number="13800000099", agent_id="col-s", channel="sip")
    known = RequestDial(actor=users["pbx-s"], case_id="S-404", number="13800000077", agent_id="col-s",
                        channel="sip", creditor="bank-s")
    first = await svc.gate.record_refusal(unknown, "case.not_found", "no case for this number", "找不到案件")
    second = await svc.gate.record_refusal(known, "case.not_found", "no case S-404", "找不到案件")

    seen_by_admin, _ = await svc.gate.blocked_dials(admin)
    seen_by_compliance, _ = await svc.gate.blocked_dials(compliance)
    assert {r.decision_id for r in seen_by_admin} == {first.decision_id, second.decision_id}
    # Only the refusal whose creditor was known is in that creditor's view.
    assert [r.decision_id for r in seen_by_compliance] == [second.decision_id]
    assert first.chain == "-" and first.number_masked == "138****0099" and first.case_id == "-"
    assert second.rule_id == "case.not_found" and second.channel == "sip" and not second.allowed
    assert await _count(svc, tables.attempts) == 0
    assert (await verify(svc.store)).ok


# -- the recorder -------------------------------------------------------------------
class _Recorder:
    """The recording system as the gate sees it: it can record, or it cannot."""

    def __init__(self) -> None:
        self.up = True

    async def available(self) -> bool:
        return self.up


async def test_dials_are_blocked_while_the_recorder_is_down_and_allowed_again_the_moment_it_is_back(gate: Any) -> None:
    svc, users = gate
    recorder = _Recorder()
    svc.gate.recordings = recorder
    svc.gate.recorder_check_ttl_s = 3600.0  # a "yes" may be trusted for long; a "no" never is
    recorder.up = False
    blocked = await svc.gate.request_dial(_dial(users))
    assert not blocked.allowed and blocked.decision.rule_id == "system.recording_unavailable"
    assert await _count(svc, tables.attempts) == 0
    recorder.up = True
    allowed = await svc.gate.request_dial(_dial(users))
    assert allowed.allowed and await _count(svc, tables.attempts) == 1


async def test_a_recorder_that_hangs_counts_as_down(gate: Any) -> None:
    svc, users = gate

    class Hanging:
        async def available(self) -> bool:
            await asyncio.Event().wait()
            return True

    svc.gate.recordings = Hanging()
    result = await asyncio.wait_for(svc.gate.request_dial(_dial(users)), timeout=10)
    assert result.decision.rule_id == "system.recording_unavailable"
