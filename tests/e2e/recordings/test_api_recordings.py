"""The recordings API end to end: upload, retrieval with Range and the access log,
creditor scoping, holds, purge under dual control, the register, the gate's check."""

from __future__ import annotations

import io
import wave
from datetime import datetime

from recordings.testing import wav_stream

PROBLEM = "application/problem+json"


def wav(seconds: float = 3.0, tone: float = 440.0) -> bytes:
    return b"".join(wav_stream(seconds, tone_hz=tone))


async def stream(data: bytes, piece: int = 10_000):
    for i in range(0, len(data), piece):
        yield data[i : i + piece]


async def test_the_pbx_uploads_a_call_and_it_is_linked_to_the_case_agent_and_number(api) -> None:
    attempt = await api.dial("C-1", "13800000001")
    audio = wav(4.0)
    r = await api.upload(stream(audio), attempt_id=attempt, duration=4)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["state"] == "stored" and body["retain_until"] == "2028-11-23"  # 730 days after 2026-11-24 (2028 has a 29 February)
    import hashlib

    assert body["sha256"] == hashlib.sha256(audio).hexdigest()
    again = await api.upload(audio, attempt_id=attempt)
    assert again.status_code == 200 and again.json()["recording_id"] == body["recording_id"]

    listed = (await api.get("/v1/cases/C-1/recordings", "qa-a")).json()
    [rec] = listed["recordings"]
    assert (rec["creditor"], rec["case_id"], rec["agent"], rec["number"]) == ("bank-a", "C-1", "col-a", "138****0001")
    assert "13800000001" not in (await api.get("/v1/recordings", "comp-a")).text


async def test_uploads_of_other_types_or_too_large_are_refused_and_store_nothing(api) -> None:
    attempt = await api.dial("C-1", "13800000001")
    r = await api.upload(wav(1), attempt_id=attempt, content_type="video/mp4")
    assert r.status_code == 415 and r.headers["content-type"].startswith(PROBLEM)
    r = await api.upload(b"definitely not a RIFF file", attempt_id=attempt)
    assert r.status_code == 415 and "not audio/wav" in r.json()["detail"]
    big = b"".join(wav_stream(300.0))  # 9.6 MB: over the 8 MiB limit
    r = await api.upload(big, attempt_id=attempt)
    assert r.status_code == 413, r.text
    r = await api.upload(stream(big), attempt_id=attempt)  # chunked: no Content-Length
    assert r.status_code == 413, r.text
    assert (await api.get("/v1/recordings", "admin")).json()["recordings"] == []
    blobs = list((api.data_dir / "recordings" / "blobs").rglob("*.dgr"))
    temps = list((api.data_dir / "recordings" / "tmp").iterdir())
    assert blobs == [] and temps == []
    assert (await api.upload(wav(1), attempt_id=attempt, who="qa-a")).status_code == 403


async def test_a_recording_of_an_unknown_call_is_kept_for_admins_to_link(api) -> None:
    r = await api.upload(wav(2), call_id="3848276298220188511@10.0.0.9", started_at="2026-11-24T09:58:00+08:00")
    assert r.status_code == 201 and r.json()["state"] == "unmatched"
    rid = r.json()["recording_id"]
    assert (await api.get("/v1/recordings", "qa-a")).json()["recordings"] == []
    unmatched = (await api.get("/v1/recordings", "admin", params={"state": "unmatched"})).json()["recordings"]
    assert [u["recording_id"] for u in unmatched] == [rid]
    assert (await api.get(f"/v1/recordings/{rid}", "qa-a")).status_code == 404
    attempt = await api.dial("C-2", "13700000003")
    r = await api.post(f"/v1/recordings/{rid}/link", "admin", {"attempt_id": attempt})
    assert r.status_code == 200 and r.json()["case_id"] == "C-2"
    audio = await api.get(f"/v1/recordings/{rid}/audio", "qa-a", params={"reason": "关联后复核 review after link"})
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF"


async def test_audio_needs_a_reason_supports_ranges_and_every_access_is_logged(api) -> None:
    attempt = await api.dial("C-1", "13800000001")
    audio = wav(5.0, 330)
    rid = (await api.upload(audio, attempt_id=attempt)).json()["recording_id"]
    path = f"/v1/recordings/{rid}/audio"

    no_reason = await api.get(path, "qa-a")
    assert no_reason.status_code == 400 and no_reason.json()["type"].endswith("/reason-required")

    whole = await api.get(path, "qa-a", params={"reason": "周检 weekly QA"})
    assert whole.status_code == 200 and whole.content == audio
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(whole.content)) as w:
        assert w.getnframes() == 40000

    part = await api.get(path, "sup-a", params={"reason": "投诉 complaint 77"}, headers={"Range": "bytes=70000-70999"})
    assert part.status_code == 206 and part.content == audio[70000:71000]
    assert part.headers["content-range"] == f"bytes 70000-70999/{len(audio)}"
    tail = await api.get(path, "comp-a", params={"reason": "seek end"}, headers={"Range": "bytes=-32000"})
    assert tail.status_code == 206 and tail.content == audio[-32000:]
    bad = await api.get(path, "qa-a", params={"reason": "range probe"}, headers={"Range": f"bytes={len(audio)}-"})
    assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{len(audio)}"

    log = (await api.get(f"/v1/recordings/{rid}/access-log", "comp-a")).json()["entries"]
    assert [(e["user"], e["reason"], e["range_start"], e["range_end"], e["client"]) for e in log] == [
        ("qa-a", "周检 weekly QA", 0, len(audio) - 1, "10.1.2.3"),
        ("sup-a", "投诉 complaint 77", 70000, 70999, "10.1.2.3"),
        ("comp-a", "seek end", len(audio) - 32000, len(audio) - 1, "10.1.2.3"),
    ]


async def test_another_creditors_user_gets_404_everywhere_and_a_collector_403(api) -> None:
    attempt = await api.dial("C-1", "13800000001")
    rid = (await api.upload(wav(1), attempt_id=attempt)).json()["recording_id"]
    for path, params in ((f"/v1/recordings/{rid}", {}), (f"/v1/recordings/{rid}/audio", {"reason": "curious"}),
                         (f"/v1/recordings/{rid}/access-log", {}), ("/v1/cases/C-1/recordings", {})):
        r = await api.get(path, "qa-b", params=params)
        assert r.status_code == 404, (path, r.text)
        assert r.headers["content-type"].startswith(PROBLEM)
    assert (await api.post(f"/v1/recordings/{rid}/legal-hold", "comp-b", {"reason": "x"})).status_code == 404
    assert (await api.get("/v1/recordings", "qa-b")).json()["recordings"] == []
    assert (await api.get(f"/v1/recordings/{rid}/audio", "col-a", params={"reason": "x"})).status_code == 403
    assert (await api.get(f"/v1/recordings/{rid}/access-log", "comp-a")).json()["entries"] == []


async def test_filters_find_recordings_by_agent_number_and_date(api) -> None:
    now = api.clock.now()
    api.clock.set(datetime.fromisoformat("2026-11-20T10:00:00+08:00"))
    a1 = await api.dial("C-1", "13800000001")
    r1 = (await api.upload(wav(1), attempt_id=a1)).json()["recording_id"]
    api.clock.set(datetime.fromisoformat("2026-11-23T10:00:00+08:00"))
    a2 = await api.dial("C-2", "13700000003")
    r2 = (await api.upload(wav(1), attempt_id=a2, started_at="2026-11-23T10:00:30+08:00")).json()["recording_id"]
    api.clock.set(now)

    async def ids(**params):
        r = await api.get("/v1/recordings", "comp-a", params=params)
        assert r.status_code == 200, r.text
        return [x["recording_id"] for x in r.json()["recordings"]]

    assert await ids(number="13700000003") == [r2]
    assert await ids(number="+8613800000001") == [r1]
    assert await ids(agent="col-a") == [r1, r2]
    assert await ids(**{"from": "2026-11-22T00:00:00+08:00"}) == [r2]
    assert await ids(to="2026-11-22T00:00:00+08:00") == [r1]
    r = await api.get("/v1/recordings", "comp-a", params={"from": "yesterday"})
    assert r.status_code == 400 and "from" in r.json()["detail"]


async def test_purge_under_dual_control_spares_held_recordings_and_writes_the_register(api) -> None:
    a1, a2, a3 = (await api.dial("C-1", "13800000001"), await api.dial("C-2", "13700000003"),
                  await api.dial("C-2", "13700000003"))
    gone = (await api.upload(wav(1), attempt_id=a1)).json()
    held = (await api.upload(wav(1), attempt_id=a2)).json()["recording_id"]
    case_held = (await api.upload(wav(1), attempt_id=a3)).json()["recording_id"]
    await api.dial("C-1", "13800000001")  # a case hold also covers later recordings
    r = await api.post(f"/v1/recordings/{held}/legal-hold", "comp-a", {"reason": "投诉 complaint #5"})
    assert r.status_code == 200 and r.json()["legal_hold"]["by"] == "comp-a"
    assert (await api.post(f"/v1/recordings/{held}/legal-hold", "comp-a", {"reason": " "})).status_code == 400

    api.clock.advance(days=731)  # kept until 2028-11-23: due from the day after
    dry = await api.post("/v1/purges", "admin", {"dry_run": True})
    assert dry.status_code == 200 and dry.json()["purge"] is None
    assert {x["recording_id"] for x in dry.json()["due"]} == {gone["recording_id"], case_held}

    req = await api.post("/v1/purges", "admin", {})
    assert req.status_code == 201, req.text
    purge_id = req.json()["purge"]["purge_id"]
    # the hold comes after the request, before approval: still protects
    r = await api.post("/v1/cases/C-2/legal-hold", "sup-a", {"reason": "诉讼 lawsuit 2026-9"})
    assert r.status_code == 200, r.text
    case = (await api.get("/v1/cases/C-2/recordings", "qa-a")).json()
    assert case["legal_hold"]["reason"] == "诉讼 lawsuit 2026-9"
    assert {x["recording_id"]: x["held_by_case"] for x in case["recordings"]} == {held: True, case_held: True}

    assert (await api.post(f"/v1/purges/{purge_id}/approve", "admin")).status_code == 403
    assert (await api.post(f"/v1/purges/{purge_id}/approve", "admin2")).status_code == 403
    ok = await api.post(f"/v1/purges/{purge_id}/approve", "comp-a")
    assert ok.status_code == 200, ok.text
    assert ok.json()["destroyed"] == [gone["recording_id"]] and ok.json()["skipped"] == [case_held]
    assert (await api.post(f"/v1/purges/{purge_id}/approve", "sup-a")).status_code == 409

    audio = await api.get(f"/v1/recordings/{gone['recording_id']}/audio", "qa-a", params={"reason": "after purge"})
    assert audio.status_code == 404 or audio.status_code == 410
    for rid in (held, case_held):
        assert (await api.get(f"/v1/recordings/{rid}/audio", "qa-a", params={"reason": "still here"})).status_code == 200

    reg = (await api.get("/v1/destruction-register", "comp-a")).json()
    assert reg["chain_ok"] is True
    [entry] = reg["entries"]
    assert (entry["recording_id"], entry["sha256"], entry["operator"], entry["approver"], entry["case_id"]) == (
        gone["recording_id"], gone["sha256"], "admin", "comp-a", "C-1")
    assert (await api.get("/v1/destruction-register", "comp-b")).json()["entries"] == []


async def test_no_working_vault_means_no_call(api) -> None:
    # The gate trusts a "can record" for recorder_check_ttl_s (1 s); this test is
    # about the vault's answer, not that cache, so every dial asks again.
    api.svc.gate.recorder_check_ttl_s = 0.0
    assert (await api.post("/v1/dials", "col-a", {"case_id": "C-1", "number": "13800000001", "agent_id": "col-a"})).status_code == 201
    api.svc.vault.keys.destroy("_unmatched")
    r = await api.post("/v1/dials", "col-a", {"case_id": "C-1", "number": "13800000001", "agent_id": "col-a"})
    assert r.status_code == 403, r.text
    assert "recording" in r.text


async def test_a_tampered_blob_is_answered_with_an_integrity_error_not_audio(api) -> None:
    attempt = await api.dial("C-1", "13800000001")
    audio = wav(5.0, 610)
    rid = (await api.upload(audio, attempt_id=attempt)).json()["recording_id"]
    [blob] = (api.data_dir / "recordings" / "blobs").rglob(f"{rid}.dgr")
    data = bytearray(blob.read_bytes())
    data[200] ^= 0x01  # inside chunk 0
    blob.write_bytes(bytes(data))
    for headers in ({}, {"Range": "bytes=0-99"}):
        r = await api.get(f"/v1/recordings/{rid}/audio", "qa-a", params={"reason": "audit"}, headers=headers)
        assert r.status_code == 500 and r.json()["type"].endswith("/integrity-error")
        assert audio[44:100] not in r.content


async def test_pending_purges_are_listed_for_the_second_person(api) -> None:
    attempt = await api.dial("C-1", "13800000001")
    await api.upload(wav(1), attempt_id=attempt)
    api.clock.advance(days=731)
    purge_id = (await api.post("/v1/purges", "admin", {})).json()["purge"]["purge_id"]
    listed = (await api.get("/v1/purges", "comp-a")).json()["purges"]
    assert [p["purge_id"] for p in listed] == [purge_id] and listed[0]["requested_by"] == "admin"
    assert (await api.get("/v1/purges", "qa-a")).status_code == 403


async def test_an_upload_that_stalls_is_dropped_and_leaves_nothing(api) -> None:
    import asyncio

    api.svc.recordings_config = __import__("dataclasses").replace(api.svc.recordings_config, upload_idle_timeout_s=0.2)
    attempt = await api.dial("C-1", "13800000001")
    never = asyncio.Event()

    async def stalls():
        yield wav(1)[:20_000]
        await never.wait()  # the PBX goes silent mid-upload
        yield b""

    r = await api.upload(stalls(), attempt_id=attempt)
    assert r.status_code == 408 and r.json()["type"].endswith("/upload-stalled")
    assert list((api.data_dir / "recordings" / "tmp").iterdir()) == []
    assert (await api.get("/v1/recordings", "admin")).json()["recordings"] == []


async def test_the_drop_folder_links_a_file_named_by_attempt_id_to_its_case(api, tmp_path) -> None:
    import os
    from datetime import timedelta

    from adapters.storage.inbox import Inbox, Resolved
    from dialer.vault_extension import AttemptResolver

    attempt = await api.dial("C-2", "13700000003")
    box = tmp_path / "inbox"
    inbox = Inbox(api.svc.vault, box, AttemptResolver(api.svc, Resolved), api.svc.clock.now)
    (box / f"attempt-{attempt}.wav").write_bytes(wav(2))
    old = (api.clock.now() - timedelta(minutes=5)).timestamp()
    os.utime(box / f"attempt-{attempt}.wav", (old, old))
    [out] = await inbox.scan()
    assert out.result == "stored"
    [rec] = (await api.get("/v1/cases/C-2/recordings", "qa-a")).json()["recordings"]
    assert (rec["recording_id"], rec["agent"], rec["number"]) == (out.recording_id, "col-a", "137****0003")
    assert list(box.glob("*.wav")) == []


async def test_another_creditors_approver_gets_404_for_a_purge_request(api) -> None:
    attempt = await api.dial("C-1", "13800000001")
    rid = (await api.upload(wav(1), attempt_id=attempt)).json()["recording_id"]
    api.clock.advance(days=731)
    purge_id = (await api.post("/v1/purges", "admin", {})).json()["purge"]["purge_id"]
    assert (await api.get(f"/v1/purges/{purge_id}", "comp-b")).status_code == 404
    assert (await api.post(f"/v1/purges/{purge_id}/approve", "comp-b")).status_code == 404
    assert (await api.get("/v1/purges", "comp-b")).json()["purges"] == []
    assert (await api.get(f"/v1/recordings/{rid}", "qa-a")).json()["state"] == "stored"


async def test_a_recording_backdated_far_from_its_attempt_is_refused_with_400_naming_started_at(api) -> None:
    attempt = await api.dial("C-1", "13800000001")
    r = await api.upload(wav(1), attempt_id=attempt, started_at="2001-01-01T10:00:00+08:00")
    assert r.status_code == 400 and r.headers["content-type"].startswith(PROBLEM)
    assert "started_at" in r.json()["detail"]
    assert (await api.get("/v1/recordings", "admin")).json()["recordings"] == []


async def test_an_unknown_call_backdated_to_2001_is_not_due_before_its_retention_from_upload(api) -> None:
    r = await api.upload(wav(1), call_id="call-2001@pbx", started_at="2001-01-01T10:00:00+08:00")
    assert r.status_code == 201, r.text
    assert r.json()["retain_until"] == "2028-11-23"  # 730 days from the upload, not from 2001
    assert (await api.post("/v1/purges", "admin", {"dry_run": True})).json()["due"] == []


async def test_numbers_in_access_and_hold_reasons_are_masked_and_card_numbers_never_stored(api) -> None:
    attempt = await api.dial("C-1", "13800000001")
    rid = (await api.upload(wav(1), attempt_id=attempt)).json()["recording_id"]
    reason = "投诉 13912345678 卡 4111111111111111"
    assert (await api.get(f"/v1/recordings/{rid}/audio", "qa-a", params={"reason": reason})).status_code == 200
    r = await api.post(f"/v1/recordings/{rid}/legal-hold", "comp-a", {"reason": reason})
    assert r.status_code == 200 and r.json()["legal_hold"]["reason"] == "投诉 139****5678 卡 ************1111"
    [entry] = (await api.get(f"/v1/recordings/{rid}/access-log", "comp-a")).json()["entries"]
    assert entry["reason"] == "投诉 139****5678 卡 ************1111"
    stored = await api.svc.vault.repo.access_log(rid)
    assert stored[0].reason == "投诉 13912345678 卡 ************1111"  # the card never reached the database


async def test_a_hold_is_released_only_with_a_reason_and_both_ends_are_on_the_audit_log(api) -> None:
    from sqlalchemy import select

    from adapters.db import tables

    rid = (await api.upload(wav(1), attempt_id=await api.dial("C-1", "13800000001"))).json()["recording_id"]
    assert (await api.post(f"/v1/recordings/{rid}/legal-hold", "comp-a", {"reason": "投诉 complaint #7"})).status_code == 200
    for params in ({}, {"reason": "  "}):
        r = await api.delete(f"/v1/recordings/{rid}/legal-hold", "sup-a", params=params)
        assert r.status_code == 400 and "reason" in r.text, r.text
    assert (await api.get(f"/v1/recordings/{rid}", "qa-a")).json()["legal_hold"]["by"] == "comp-a"  # still held
    r = await api.delete(f"/v1/recordings/{rid}/legal-hold", "sup-a", params={"reason": "结案 complaint closed"})
    assert r.status_code == 200 and r.json()["legal_hold"] is None, r.text
    assert (await api.post("/v1/cases/C-1/legal-hold", "sup-a", {"reason": "诉讼 lawsuit 9"})).status_code == 200
    assert (await api.delete("/v1/cases/C-1/legal-hold", "sup-a")).status_code == 400
    assert (await api.delete("/v1/cases/C-1/legal-hold", "comp-a", params={"reason": "撤诉 withdrawn"})).json()["released"]
    async with api.svc.store.read() as uow:
        rows = (await uow.conn.execute(select(tables.audit_log.c.actor, tables.audit_log.c.action, tables.audit_log.c.details)
                                       .where(tables.audit_log.c.action.like("%hold%")).order_by(tables.audit_log.c.id))).all()
    assert [(r[0], r[1]) for r in rows] == [
        ("comp-a", "recording.hold_placed"), ("sup-a", "recording.hold_released"),
        ("sup-a", "case.recordings_hold_placed"), ("comp-a", "case.recordings_hold_released")]
    assert "结案 complaint closed" in str(rows[1][2]) and "撤诉 withdrawn" in str(rows[3][2])
