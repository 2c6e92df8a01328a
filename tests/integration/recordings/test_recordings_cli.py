"""`dialgate keys …` and `dialgate recordings …` against a real data directory."""

from __future__ import annotations

import json
import stat
import wave
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dialer.cli import users_app
from dialer.recordings_cli import keys_app, recordings_app
from recordings.testing import wav_stream

runner = CliRunner()


@pytest.fixture
def cfg(tmp_path) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(
        f'[paths]\ndata_dir = "{tmp_path / "var"}"\n\n'
        '[recordings]\nretention = "730d"\n\n[recordings.creditors.bank-b]\nretention = "1095d"\n'
    )
    return p


def keys(*args: str, token: str | None = None):
    return runner.invoke(keys_app, list(args), env={"DIALGATE_TOKEN": token or ""})


def rec(*args: str, token: str | None = None):
    return runner.invoke(recordings_app, list(args), env={"DIALGATE_TOKEN": token or ""})


def user(cfg: Path, name: str, role: str, *creditors: str) -> str:
    """A user of the service (`dialgate users add`); their token."""
    r = runner.invoke(users_app, ["add", "--name", name, "--role", role, "-c", str(cfg),
                                  *(a for c in creditors for a in ("--creditor", c))])
    assert r.exit_code == 0, r.output
    return r.output.strip().splitlines()[-1]


def write_wav(path: Path, seconds: float, tone: float) -> bytes:
    data = b"".join(wav_stream(seconds, tone_hz=tone))
    path.write_bytes(data)
    return data


def ingest(cfg: Path, wav: Path, source: str, *extra: str) -> dict:
    """Ingest a call of 2024-01-05 and let two years pass: retention runs from the day of
    upload at the earliest, so the test moves the stored date back as time would."""
    r = rec("ingest", str(wav), "--attempt-id", source, "--started-at", "2024-01-05T10:00:00+08:00", "-c", str(cfg), *extra)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    if "--started-at" not in extra:
        _set_retain_until(cfg, out["recording_id"], "2026-01-04")
        out["ingested_retain_until"], out["retain_until"] = out["retain_until"], "2026-01-04"
    return out


def _set_retain_until(cfg: Path, recording_id: str, day: str) -> None:
    import sqlite3

    db = sqlite3.connect(cfg.parent / "var" / "dialgate.db")
    db.execute("UPDATE recordings SET retain_until = ? WHERE recording_id = ?", (day, recording_id))
    db.commit()
    db.close()


def test_keys_init_writes_a_private_key_file_and_prints_no_key_material(cfg, tmp_path) -> None:
    r = keys("init", "-c", str(cfg), "--creditor", "bank-a")
    assert r.exit_code == 0, r.output
    scopes = [line.split("\t")[0] for line in r.output.splitlines()]
    assert scopes == ["bank-a", "bank-b", "_unmatched"]
    key_file = tmp_path / "var" / "keys" / "recordings.keys"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    material = json.loads(key_file.read_text())["scopes"]["bank-a"]
    secret = next(iter(material["keys"].values()))["key"]
    assert secret not in r.output


def test_ingest_fetch_list_verify_round_trip(cfg, tmp_path) -> None:
    keys("init", "-c", str(cfg), "--creditor", "bank-a")
    wav = tmp_path / "call.wav"
    audio = write_wav(wav, 5.0, 520)
    out = ingest(cfg, wav, "att-cli-1", "--creditor", "bank-a", "--case", "A-1", "--agent", "ag-1", "--number", "+8613800000001")
    # A call of 2024 uploaded today is kept 730 days from today, not from 2024.
    floor = (datetime.now(timezone.utc).date() + timedelta(days=730)).isoformat()
    assert out["created"] and out["ingested_retain_until"] == floor
    again = ingest(cfg, wav, "att-cli-1", "--creditor", "bank-a")
    assert again["recording_id"] == out["recording_id"] and not again["created"]

    listed = rec("list", "--json", "--case", "A-1", "-c", str(cfg))
    [row] = [json.loads(line) for line in listed.output.splitlines()]
    assert row["number"] == "138****0001" and "+8613800000001" not in listed.output

    target = tmp_path / "out" / "fetched.wav"
    target.parent.mkdir()
    sun = user(cfg, "comp-sun", "compliance", "bank-a")
    r = rec("fetch", out["recording_id"], "-o", str(target), "--reason", "投诉核查 complaint check", "-c", str(cfg),
            token=sun)
    assert r.exit_code == 0, r.output
    assert target.read_bytes() == audio and stat.S_IMODE(target.stat().st_mode) == 0o600
    with wave.open(str(target)) as w:
        assert w.getnframes() == 40000
    no_reason = rec("fetch", out["recording_id"], "-o", str(tmp_path / "x.wav"), "--reason", " ", "-c", str(cfg),
                    token=sun)
    assert no_reason.exit_code == 2 and "reason" in no_reason.output and not (tmp_path / "x.wav").exists()

    v = rec("verify", "-c", str(cfg))
    assert v.exit_code == 0 and "1 checked, 0 failed" in v.output
    assert "destruction register chain: 完整 / OK" in v.output


def test_verify_exits_1_and_names_a_tampered_recording(cfg, tmp_path) -> None:
    keys("init", "-c", str(cfg), "--creditor", "bank-a")
    wav = tmp_path / "call.wav"
    write_wav(wav, 3.0, 700)
    good = ingest(cfg, wav, "att-good", "--creditor", "bank-a")
    bad = ingest(cfg, wav, "att-bad", "--creditor", "bank-a")
    blob = next((tmp_path / "var" / "recordings" / "blobs").rglob(f"{bad['recording_id']}.dgr"))
    data = bytearray(blob.read_bytes())
    data[500] ^= 0x40
    blob.write_bytes(bytes(data))
    v = rec("verify", "-c", str(cfg))
    assert v.exit_code == 1
    lines = v.output.splitlines()
    assert f"OK  \t{good['recording_id']}" in lines
    assert any(line.startswith(f"FAIL\t{bad['recording_id']}") for line in lines)


def test_an_unmatched_recording_is_kept_and_listed(cfg, tmp_path) -> None:
    keys("init", "-c", str(cfg))
    wav = tmp_path / "orphan.wav"
    write_wav(wav, 1.0, 300)
    r = rec("ingest", str(wav), "--call-id", "a84b4c76e66710@pbx.example", "--started-at", "2026-11-23T10:00:00+08:00", "-c", str(cfg))
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["state"] == "unmatched"
    listed = rec("list", "--unmatched", "--json", "-c", str(cfg))
    assert json.loads(listed.output)["state"] == "unmatched"


def test_purge_from_the_cli_needs_a_second_person_and_rotation_keeps_audio_readable(cfg, tmp_path) -> None:
    keys("init", "-c", str(cfg), "--creditor", "bank-a")
    wav = tmp_path / "old.wav"
    audio = write_wav(wav, 2.0, 440)
    keep = ingest(cfg, wav, "att-keep", "--creditor", "bank-a", "--started-at", "2026-11-01T10:00:00+08:00")
    old = ingest(cfg, wav, "att-old", "--creditor", "bank-a")

    wang, sun, li = user(cfg, "ops-wang", "admin"), user(cfg, "comp-sun", "compliance", "bank-a"), user(
        cfg, "qa-li", "qa", "bank-a")
    assert keys("rotate", "--creditor", "bank-a", "-c", str(cfg), token=sun).exit_code == 2  # an admin's work
    rot = keys("rotate", "--creditor", "bank-a", "-c", str(cfg), token=wang)
    assert rot.exit_code == 0 and "2 data keys rewrapped" in rot.output, rot.output
    ret = keys("retire", "--creditor", "bank-a", "--grace-minutes", "0", "-c", str(cfg), token=wang)
    assert ret.exit_code == 0 and "retired 2" in ret.output, ret.output  # key ids start with the date
    dry = rec("purge", "--dry-run", "-c", str(cfg), token=wang)
    assert dry.exit_code == 0 and f"due\t{old['recording_id']}" in dry.output
    req = rec("purge", "--request", "-c", str(cfg), token=wang)
    assert req.exit_code == 0, req.output
    purge_id = req.output.split("purge ")[1].split()[0]
    same = rec("purge", "--approve", purge_id, "-c", str(cfg), token=wang)  # the requester: an admin, not a witness
    assert same.exit_code == 2 and "may not approve" in same.output
    ok = rec("purge", "--approve", purge_id, "-c", str(cfg), token=sun)
    assert ok.exit_code == 0 and f"destroyed\t{old['recording_id']}" in ok.output

    target = tmp_path / "keep.wav"
    r = rec("fetch", keep["recording_id"], "-o", str(target), "--reason", "after purge", "-c", str(cfg), token=li)
    assert r.exit_code == 0 and target.read_bytes() == audio
    gone = rec("fetch", old["recording_id"], "-o", str(tmp_path / "gone.wav"), "--reason", "x", "-c", str(cfg), token=li)
    assert gone.exit_code == 2 and "destroyed" in gone.output


def test_a_wrong_config_key_is_refused_with_its_path(tmp_path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text('[recordings]\nretension = "730d"\n')
    r = rec("list", "-c", str(p))
    assert r.exit_code == 2 and "recordings.retension" in r.output


def test_verify_exits_1_when_the_destruction_register_was_edited(cfg, tmp_path) -> None:
    import sqlite3

    keys("init", "-c", str(cfg), "--creditor", "bank-a")
    wav = tmp_path / "old.wav"
    write_wav(wav, 1.0, 440)
    ingest(cfg, wav, "att-reg-1", "--creditor", "bank-a")
    ingest(cfg, wav, "att-reg-2", "--creditor", "bank-a")
    req = rec("purge", "--request", "-c", str(cfg), token=user(cfg, "ops-wang", "admin"))
    purge_id = req.output.split("purge ")[1].split()[0]
    sun = user(cfg, "comp-sun", "compliance", "bank-a")
    assert rec("purge", "--approve", purge_id, "-c", str(cfg), token=sun).exit_code == 0
    db = sqlite3.connect(tmp_path / "var" / "dialgate.db")
    db.execute("UPDATE recording_destruction_register SET approver = 'nobody' WHERE seq = 1")
    db.commit()
    db.close()
    v = rec("verify", "-c", str(cfg))
    assert v.exit_code == 1 and "edited: record 1 (" in v.output and "does not match its MAC" in v.output
    assert "destruction register chain: 已被篡改 / BROKEN" in v.output


def test_ingesting_a_file_for_a_known_attempt_links_it_to_the_case(cfg, tmp_path) -> None:
    import asyncio

    from adapters.db.migrate import upgrade
    from dialer.bootstrap import make_store
    from dialer.config import load_config
    from dialer.model import AttemptRecord
    from sqlalchemy import insert

    from adapters.db import tables

    async def seed() -> None:
        async with make_store(load_config(cfg)) as store:
            await upgrade(store)
            at = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)
            async with store.write() as uow:
                await uow.cases.ensure_creditor("bank-a")
                pk = (await uow.conn.execute(insert(tables.cases).values(
                    creditor="bank-a", case_id="K-7", debtor_name="赵六", status="active", flags="",
                    follow_up_status="new", event_seq=0, created_at=at, updated_at=at))).inserted_primary_key[0]
                await uow.attempts.add(AttemptRecord(
                    attempt_id="att-known-1", case_pk=pk, creditor="bank-a", case_id="K-7", number="+8613800000007",
                    relation="self", agent_id="ag-9", channel="api", state="authorized", at=at,
                    valid_until=at, decision_id="d-1"))

    asyncio.run(seed())
    wav = tmp_path / "known.wav"
    write_wav(wav, 1.0, 480)
    r = rec("ingest", str(wav), "--attempt-id", "att-known-1", "-c", str(cfg))
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    # From the attempt's day (2026-11-23), but never earlier than the upload's day + 730.
    floor = (datetime.now(timezone.utc).date() + timedelta(days=730)).isoformat()
    assert out["state"] == "stored" and out["retain_until"] == max("2028-11-22", floor)
    far = rec("ingest", str(wav), "--attempt-id", "att-known-1", "--started-at", "2001-01-01T10:00:00+08:00",
              "-c", str(cfg))
    assert far.exit_code == 2 and "started_at" in far.output
    [row] = [json.loads(x) for x in rec("list", "--json", "--case", "K-7", "-c", str(cfg)).output.splitlines()]
    assert (row["creditor"], row["agent"], row["number"]) == ("bank-a", "ag-9", "138****0007")
    unknown = rec("ingest", str(wav), "--attempt-id", "att-unknown", "-c", str(cfg))
    assert unknown.exit_code == 2 and "--started-at" in unknown.output

    orphan = rec("ingest", str(wav), "--call-id", "lost@pbx", "--started-at", "2026-11-23T10:00:00+08:00", "-c", str(cfg))
    rid = json.loads(orphan.output)["recording_id"]
    linked = rec("link", rid, "--attempt-id", "att-known-1", "-c", str(cfg), token=user(cfg, "ops-wang", "admin"))
    assert linked.exit_code == 0 and "bank-a/K-7" in linked.output, linked.output
    assert rec("list", "--unmatched", "--json", "-c", str(cfg)).output == ""


def test_incremental_verify_reads_new_recordings_then_only_newer_ones_and_a_sample(cfg, tmp_path) -> None:
    keys("init", "-c", str(cfg), "--creditor", "bank-a")
    wav = tmp_path / "call.wav"
    write_wav(wav, 2.0, 610)
    for n in range(3):
        ingest(cfg, wav, f"att-inc-{n}", "--creditor", "bank-a")
    first = rec("verify", "-i", "--no-progress", "-c", str(cfg))
    assert first.exit_code == 0, first.output
    assert "3 checked, 0 failed" in first.output and "3 new since the last run, 0 sampled" in first.output
    assert "MiB/s" in first.output and "recordings/s" in first.output
    ingest(cfg, wav, "att-inc-new", "--creditor", "bank-a")
    second = rec("verify", "-i", "--sample", "1", "--no-progress", "-c", str(cfg))
    assert "2 checked, 0 failed" in second.output and "1 new since the last run, 1 sampled" in second.output
    state = json.loads((tmp_path / "var" / "recordings" / "verify-state.json").read_text())
    assert state["run"] is None and [h["checked"] for h in state["history"]] == [3, 2]


def test_incremental_verify_names_a_tampered_new_recording_and_exits_1(cfg, tmp_path) -> None:
    keys("init", "-c", str(cfg), "--creditor", "bank-a")
    wav = tmp_path / "call.wav"
    write_wav(wav, 2.0, 640)
    bad = ingest(cfg, wav, "att-inc-bad", "--creditor", "bank-a")
    blob = next((tmp_path / "var" / "recordings" / "blobs").rglob(f"{bad['recording_id']}.dgr"))
    data = bytearray(blob.read_bytes())
    data[700] ^= 0x01
    blob.write_bytes(bytes(data))
    v = rec("verify", "-i", "--no-progress", "-c", str(cfg))
    assert v.exit_code == 1 and f"FAIL\t{bad['recording_id']}" in v.output


def test_an_interrupted_incremental_verify_resumes_after_the_last_recording_it_read(cfg, tmp_path) -> None:
    import asyncio

    from dialer.recordings_cli import _verify_incremental, open_vault
    from recordings.model import Actor

    keys("init", "-c", str(cfg), "--creditor", "bank-a")
    wav = tmp_path / "call.wav"
    write_wav(wav, 1.0, 660)
    ids = [ingest(cfg, wav, f"att-res-{n}", "--creditor", "bank-a")["recording_id"] for n in range(4)]
    state = tmp_path / "verify-state.json"
    read: list[str] = []

    class Interrupted(Exception):
        pass

    async def go():
        async with open_vault(cfg) as (vault, _):
            real = vault.verify

            async def verify_then_die(actor, recording_ids=None):
                if len(read) == 2:
                    raise Interrupted  # the operator's Ctrl-C, a lost connection ...
                read.extend(recording_ids)
                return await real(actor, recording_ids)

            vault.verify = verify_then_die
            with pytest.raises(Interrupted):
                await _verify_incremental(vault, Actor("cli", "admin"), state, 30, None, False, False)
            saved = json.loads(state.read_text())["run"]
            assert saved["done"] == 2 and saved["ids"][:2] == read
            vault.verify = real
            return saved, await _verify_incremental(vault, Actor("cli", "admin"), state, 30, None, False, False)

    saved, (results, stats) = asyncio.run(go())
    assert stats["resumed"] and [r.recording_id for r in results] == saved["ids"][2:]
    assert sorted(read + [r.recording_id for r in results]) == sorted(ids)


def test_a_cli_purge_or_fetch_acts_only_as_the_user_its_token_names(cfg, tmp_path) -> None:
    # The second signature and the access log name a real user, never a name as typed.
    keys("init", "-c", str(cfg), "--creditor", "bank-a")
    wav = tmp_path / "old.wav"
    write_wav(wav, 1.0, 440)
    old = ingest(cfg, wav, "att-who-1", "--creditor", "bank-a")
    wang = user(cfg, "ops-wang", "admin")
    purge_id = rec("purge", "--request", "-c", str(cfg), token=wang).output.split("purge ")[1].split()[0]
    for args, token in ((("--approve", purge_id), None), (("--approve", purge_id), "dg_not-a-token")):
        r = rec("purge", *args, "-c", str(cfg), token=token)
        assert r.exit_code == 2 and ("token" in r.output), r.output
    named = rec("purge", "--approve", purge_id, "-u", "comp-sun", "--role", "compliance", "-c", str(cfg), token=wang)
    assert named.exit_code == 2  # no such options: the token says who approves
    collector = user(cfg, "col-x", "collector", "bank-a")
    r = rec("fetch", old["recording_id"], "-o", str(tmp_path / "x.wav"), "--reason", "x", "-c", str(cfg),
            token=collector)
    assert r.exit_code == 2 and not (tmp_path / "x.wav").exists()
    token_file = tmp_path / "sun.token"
    token_file.write_text(user(cfg, "comp-sun", "compliance", "bank-a") + "\n")
    ok = rec("purge", "--approve", purge_id, "--token-file", str(token_file), "-c", str(cfg))
    assert ok.exit_code == 0 and "approved by comp-sun" in ok.output and f"destroyed\t{old['recording_id']}" in ok.output


def test_card_and_id_numbers_in_a_fetch_reason_are_masked_before_the_access_log_keeps_it(cfg, tmp_path) -> None:
    import sqlite3

    keys("init", "-c", str(cfg), "--creditor", "bank-a")
    wav = tmp_path / "call.wav"
    write_wav(wav, 1.0, 520)
    out = ingest(cfg, wav, "att-cli-why", "--creditor", "bank-a", "--case", "A-1")
    r = rec("fetch", out["recording_id"], "-o", str(tmp_path / "f.wav"), "--reason",
            "投诉核查 卡号 4111 1111 1111 1111 身份证11010519491231002X", "-c", str(cfg),
            token=user(cfg, "comp-sun", "compliance", "bank-a"))
    assert r.exit_code == 0, r.output
    db = sqlite3.connect(cfg.parent / "var" / "dialgate.db")
    reasons = [row[0] for row in db.execute("SELECT reason FROM recording_access_log")]
    db.close()
    assert reasons == ["投诉核查 卡号 ************1111 身份证**************002X"]
