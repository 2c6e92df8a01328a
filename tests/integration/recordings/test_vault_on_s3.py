"""The vault on a real S3 server (SeaweedFS on loopback, started by the `seaweed`
fixture): round trip, ranged reads, tampering, Object Lock retention and legal holds
as the server enforces them, destruction per lock mode."""

from __future__ import annotations

import hashlib
import io
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from adapters.storage.jsonrepo import JsonFileRecordingRepository
from adapters.storage.keys import KeyFileKeyProvider
from adapters.storage.s3 import S3BlobStore, lock_until, parse_store_url
from recordings.errors import BlobLocked, ConfigError, IntegrityError
from recordings.testing import ADMIN, PBX, QA_A, request, wav_size, wav_stream
from recordings.vault import Vault
from recordings import envelope

MARKER = b"S3-PLAINTEXT-MARKER-\x91\x07\xee-DIALGATE"
MiB = 1024 * 1024


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def make_vault(tmp_path: Path, store: S3BlobStore, clock=utcnow) -> Vault:
    keys = KeyFileKeyProvider(tmp_path / "keys" / "recordings.keys")
    for scope in ("bank-a", "_unmatched"):
        keys.create(scope)
    return Vault(JsonFileRecordingRepository(tmp_path / "meta.json"), store, keys, clock=clock)


def whole(seconds: float, **kw) -> bytes:
    return b"".join(wav_stream(seconds, **kw))


def objects(store: S3BlobStore) -> list[str]:
    resp = store.client.list_objects_v2(Bucket=store.bucket, Prefix=store.prefix + "/")
    return [o["Key"] for o in resp.get("Contents", [])]


def versions(store: S3BlobStore) -> list[dict]:
    return store.client.list_object_versions(Bucket=store.bucket, Prefix=store.prefix + "/").get("Versions", [])


async def test_a_recording_larger_than_several_parts_goes_up_as_one_object_and_comes_back_whole(seaweed, tmp_path) -> None:
    store = seaweed.store()
    vault = make_vault(tmp_path, store)
    seconds = 12 * 60  # 23 MB of audio: five 5 MiB parts
    rec = (await vault.ingest(request("s3-rt-1"), wav_stream(seconds, tone_hz=440, marker=MARKER), PBX)).recording
    assert rec.size == wav_size(seconds)
    assert objects(store) == [f"{store.prefix}/{rec.recording_id[:2]}/{rec.recording_id}.dgr"]
    head = store.client.head_object(Bucket=store.bucket, Key=store.object_key(rec.recording_id))
    assert head["ContentLength"] == rec.blob_size and head["ETag"].endswith('-5"')  # multipart, 5 parts
    stored = store.client.get_object(Bucket=store.bucket, Key=store.object_key(rec.recording_id))["Body"].read()
    assert MARKER not in stored and stored.startswith(envelope.MAGIC)
    back = await vault.open_audio(rec.recording_id, QA_A, reason="QA 抽检")
    assert back.read_all() == whole(seconds, tone_hz=440, marker=MARKER)
    assert [r.ok for r in await vault.verify(ADMIN)] == [True]
    assert store.temporaries() == []  # the multipart upload was completed, none left open


async def test_a_short_recording_is_one_put_and_reads_back(seaweed, tmp_path) -> None:
    store = seaweed.store()
    vault = make_vault(tmp_path, store)
    rec = (await vault.ingest(request("s3-rt-2"), wav_stream(3.0, tone_hz=300), PBX)).recording
    head = store.client.head_object(Bucket=store.bucket, Key=store.object_key(rec.recording_id))
    assert "-" not in head["ETag"]  # a single PUT, not a multipart upload
    back = await vault.open_audio(rec.recording_id, QA_A, reason="QA 抽检")
    assert hashlib.sha256(back.read_all()).hexdigest() == rec.sha256


async def test_range_reads_decrypt_only_what_they_ask_for_across_part_boundaries(seaweed, tmp_path) -> None:
    store = seaweed.store()
    vault = make_vault(tmp_path, store)
    seconds = 6 * 60
    plain = whole(seconds, tone_hz=523)
    rec = (await vault.ingest(request("s3-range-1"), wav_stream(seconds, tone_hz=523), PBX)).recording
    last = await vault.open_audio(rec.recording_id, QA_A, reason="seek", byte_range="bytes=-32000")
    assert (last.start, last.end) == (len(plain) - 32000, len(plain) - 1)
    assert last.read_all() == plain[-32000:]
    # 5 MiB of ciphertext is the first part boundary: read across it
    a, b = 5 * MiB - 70_000, 5 * MiB + 70_000
    mid = await vault.open_audio(rec.recording_id, QA_A, reason="seek", byte_range=f"bytes={a}-{b}")
    assert mid.read_all() == plain[a : b + 1]
    first = await vault.open_audio(rec.recording_id, QA_A, reason="seek", byte_range="bytes=0-43")
    assert first.read_all() == plain[:44]


async def test_a_flipped_byte_in_the_object_is_refused_and_verify_reports_it(seaweed, tmp_path) -> None:
    store = seaweed.store(object_lock="off")
    vault = make_vault(tmp_path, store)
    seconds = 60.0
    plain = whole(seconds, tone_hz=700)
    rec = (await vault.ingest(request("s3-tamper-1"), wav_stream(seconds, tone_hz=700), PBX)).recording
    key = store.object_key(rec.recording_id)
    blob = bytearray(store.client.get_object(Bucket=store.bucket, Key=key)["Body"].read())
    _, _, header_len = envelope.read_header(io.BytesIO(bytes(blob)))
    stride = envelope.CHUNK_SIZE + envelope.TAG_SIZE
    blob[header_len + 3 * stride + 100] ^= 0x01  # inside chunk 3
    store.client.put_object(Bucket=store.bucket, Key=key, Body=bytes(blob))
    [result] = await vault.verify(ADMIN)
    assert not result.ok and "chunk 3" in result.problem
    with pytest.raises(IntegrityError):
        s = await vault.open_audio(rec.recording_id, QA_A, reason="seek", byte_range=f"bytes={3 * 65536}-{3 * 65536 + 10}")
        s.read_all()
    ok = await vault.open_audio(rec.recording_id, QA_A, reason="seek", byte_range="bytes=0-65535")
    assert ok.read_all() == plain[:65536]  # untouched chunks still read
    store.client.put_object(Bucket=store.bucket, Key=key, Body=bytes(blob[:-1]))  # truncated by one byte
    [result] = await vault.verify(ADMIN)
    assert not result.ok


async def test_object_lock_keeps_each_recording_in_compliance_mode_until_its_retention_ends(seaweed, tmp_path) -> None:
    store = seaweed.store()
    vault = make_vault(tmp_path, store)
    rec = (await vault.ingest(request("s3-lock-1"), wav_stream(2.0), PBX)).recording
    state = store.lock_state(rec.recording_id)
    assert state["mode"] == "COMPLIANCE"
    assert state["retain_until"] == lock_until(rec.retain_until)
    assert rec.retain_until >= rec.started_at.date() + timedelta(days=730)
    key = store.object_key(rec.recording_id)
    [version] = store.client.list_object_versions(Bucket=store.bucket, Prefix=key)["Versions"]
    # The bucket's own credentials cannot delete it or shorten the lock ...
    with pytest.raises(Exception) as refused:
        store.client.delete_object(Bucket=store.bucket, Key=key, VersionId=version["VersionId"])
    assert "AccessDenied" in str(refused.value)
    with pytest.raises(Exception):
        store.client.put_object_retention(
            Bucket=store.bucket, Key=key,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": utcnow() + timedelta(days=1)},
        )
    # ... nor can the vault's store, which says why
    with pytest.raises(BlobLocked):
        store.delete(rec.recording_id)
    # A plain DELETE only hides the object behind a marker: the recording still plays.
    store.client.delete_object(Bucket=store.bucket, Key=key)
    back = await vault.open_audio(rec.recording_id, QA_A, reason="complaint 投诉核查")
    assert hashlib.sha256(back.read_all()).hexdigest() == rec.sha256
    assert [r.ok for r in await vault.verify(ADMIN)] == [True]


async def test_an_overwrite_by_someone_with_write_access_is_a_new_version_the_vault_ignores(seaweed, tmp_path) -> None:
    store = seaweed.store()
    vault = make_vault(tmp_path, store)
    rec = (await vault.ingest(request("s3-overwrite-1"), wav_stream(20.0, tone_hz=990), PBX)).recording
    key = store.object_key(rec.recording_id)
    original = store.client.get_object(Bucket=store.bucket, Key=key)["Body"].read()
    forged = bytearray(original)
    forged[-100] ^= 0xFF
    store.client.put_object(Bucket=store.bucket, Key=key, Body=bytes(forged))  # accepted: versioning keeps both
    assert len(versions(store)) == 2
    assert [r.ok for r in await vault.verify(ADMIN)] == [True]  # the original is read, not the forgery
    await vault.place_hold(rec.recording_id, ADMIN, "诉讼 lawsuit")
    assert store.lock_state(rec.recording_id)["legal_hold"] is True  # held: the original version
    [orig] = [v for v in versions(store) if not v["IsLatest"]]
    assert store.client.get_object_legal_hold(
        Bucket=store.bucket, Key=key, VersionId=orig["VersionId"]
    )["LegalHold"]["Status"] == "ON"


async def test_linking_to_a_creditor_with_longer_retention_extends_the_lock(seaweed, tmp_path) -> None:
    from recordings.model import Link
    from recordings.retention import RetentionPolicy

    store = seaweed.store()
    vault = make_vault(tmp_path, store)
    vault.retention = RetentionPolicy.from_config("730d", {"bank-a": "1095d"})
    req = request("s3-link-1")
    unmatched = req.__class__(**{**{f: getattr(req, f) for f in req.__dataclass_fields__}, "link": Link(None, None, None, None)})
    rec = (await vault.ingest(unmatched, wav_stream(2.0), PBX)).recording
    before = store.lock_state(rec.recording_id)["retain_until"]
    linked = await vault.link(rec.recording_id, ADMIN, Link("bank-a", "C-9", "agent-1", "+8613800000009"))
    after = store.lock_state(rec.recording_id)["retain_until"]
    assert linked.retain_until > rec.retain_until
    assert after == lock_until(linked.retain_until) and after > before


async def test_legal_holds_are_mirrored_onto_the_object_and_block_its_deletion(seaweed, tmp_path) -> None:
    store = seaweed.store()
    vault = make_vault(tmp_path, store)
    one = (await vault.ingest(request("s3-hold-1"), wav_stream(1.0), PBX)).recording
    two = (await vault.ingest(request("s3-hold-2"), wav_stream(1.0), PBX)).recording
    assert one.case_id == two.case_id
    await vault.place_hold(one.recording_id, ADMIN, "诉讼 lawsuit")
    assert store.lock_state(one.recording_id)["legal_hold"] is True
    assert store.lock_state(two.recording_id)["legal_hold"] is False
    await vault.place_case_hold(one.creditor, one.case_id, ADMIN, "投诉 complaint")
    assert store.lock_state(two.recording_id)["legal_hold"] is True
    three = (await vault.ingest(request("s3-hold-3"), wav_stream(1.0), PBX)).recording
    assert store.lock_state(three.recording_id)["legal_hold"] is True  # the case is held: so is its new recording
    await vault.release_case_hold(one.creditor, one.case_id, ADMIN, "结案 case closed")
    # the recording's own hold stays; the others were held only through the case
    assert [store.lock_state(r.recording_id)["legal_hold"] for r in (one, two, three)] == [True, False, False]
    await vault.release_hold(one.recording_id, ADMIN, "结案 case closed")
    assert store.lock_state(one.recording_id)["legal_hold"] is False


def test_a_legal_hold_refuses_deletion_even_without_retention(seaweed) -> None:
    store = seaweed.store()
    w = store.begin("heldblob0001")  # no retain_until: no retention lock
    w.write(b"ciphertext" * 10)
    w.sync()
    w.publish()
    store.set_legal_hold("heldblob0001", True)
    with pytest.raises(BlobLocked):
        store.delete("heldblob0001")
    store.set_legal_hold("heldblob0001", False)
    assert store.delete("heldblob0001") is True
    assert objects(store) == []
    # every version is gone, not hidden behind a delete marker
    assert versions(store) == []


async def _purge_after_retention(vault: Vault, rec, later: datetime):
    vault.clock = lambda: later
    plan = await vault.request_purge(ADMIN)
    assert [r.recording_id for r in plan.due] == [rec.recording_id]
    from recordings.testing import COMPLIANCE

    return await vault.approve_purge(plan.request.purge_id, COMPLIANCE)


async def test_governance_mode_lets_an_approved_purge_delete_the_object_at_once(seaweed, tmp_path) -> None:
    store = seaweed.store(object_lock="governance")
    vault = make_vault(tmp_path, store)
    rec = (await vault.ingest(request("s3-purge-g"), wav_stream(1.0), PBX)).recording
    assert store.lock_state(rec.recording_id)["mode"] == "GOVERNANCE"
    with pytest.raises(Exception):  # without the bypass the lock holds
        key = store.object_key(rec.recording_id)
        [v] = store.client.list_object_versions(Bucket=store.bucket, Prefix=key)["Versions"]
        store.client.delete_object(Bucket=store.bucket, Key=key, VersionId=v["VersionId"])
    done = await _purge_after_retention(vault, rec, utcnow() + timedelta(days=800))
    assert done.destroyed == (rec.recording_id,)
    assert objects(store) == [] and versions(store) == []


async def test_compliance_mode_purge_crypto_shreds_and_leaves_the_locked_ciphertext_to_expire(seaweed, tmp_path) -> None:
    store = seaweed.store()
    vault = make_vault(tmp_path, store)
    rec = (await vault.ingest(request("s3-purge-c"), wav_stream(1.0), PBX)).recording
    later = utcnow() + timedelta(days=800)  # the vault's clock; the server's lock runs on real time
    done = await _purge_after_retention(vault, rec, later)
    assert done.destroyed == (rec.recording_id,)
    gone = await vault.repo.get(rec.recording_id)
    assert gone.state == "destroyed" and gone.wrapped_key is None  # unreadable from now on
    assert objects(store) == [store.object_key(rec.recording_id)]  # the lock kept the ciphertext
    report = await vault.recover()
    assert report["locked"] == 1 and report["destroyed"] == 0


def test_a_bucket_without_object_lock_is_refused_unless_lock_is_off(seaweed) -> None:
    from adapters.storage.filesystem import StorageError

    bucket = seaweed.shared_bucket(object_lock=False)
    with pytest.raises(StorageError, match="Object Lock"):
        S3BlobStore.from_settings(seaweed.settings(bucket)).check()
    S3BlobStore.from_settings(seaweed.settings(bucket, object_lock="off")).check()


def test_store_urls_name_a_bucket_and_a_prefix() -> None:
    assert parse_store_url("s3://dialgate-rec/prod/recordings/") == ("dialgate-rec", "prod/recordings")
    assert parse_store_url("s3://dialgate-rec") == ("dialgate-rec", "")
    with pytest.raises(ConfigError, match="recordings.store"):
        parse_store_url("s3:/dialgate-rec")
    assert lock_until(date(2028, 12, 7)) == datetime(2028, 12, 8, tzinfo=timezone.utc)


@pytest.mark.slow
def test_ingesting_half_a_gibibyte_to_s3_grows_memory_by_less_than_64_mib(seaweed, tmp_path) -> None:
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    store = seaweed.store()
    settings = {
        "bucket": store.bucket, "prefix": store.prefix, "endpoint": seaweed.endpoint, "region": "us-east-1",
        "access_key": seaweed.access_key, "secret_key": seaweed.secret_key,
    }
    code = f"""
import asyncio, json, sys
from pathlib import Path
sys.path.insert(0, {str(root)!r})
from datetime import datetime, timezone
from adapters.storage.jsonrepo import JsonFileRecordingRepository
from adapters.storage.keys import KeyFileKeyProvider
from adapters.storage.s3 import S3BlobStore, S3Settings
from recordings.testing import PBX, request, wav_stream
from recordings.vault import Vault

def vm(field):
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1]) * 1024

root = Path({str(tmp_path)!r})
keys = KeyFileKeyProvider(root / 'k.keys'); keys.create('bank-a')
blobs = S3BlobStore.from_settings(S3Settings(**json.loads({json.dumps(json.dumps(settings))})))
blobs.check()  # as the service does at start (the client's models are loaded)
vault = Vault(JsonFileRecordingRepository(root / 'm.json'), blobs, keys,
              clock=lambda: datetime.now(timezone.utc), max_size=2**31)
pieces = wav_stream(16800.0)  # 537,600,044 bytes, generated piece by piece
first = next(pieces)
def body():
    yield first
    yield from pieces
before = vm('VmRSS')
rec = asyncio.run(vault.ingest(request('big-s3'), body(), PBX)).recording
print(json.dumps({{'size': rec.size, 'growth': vm('VmHWM') - before}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    fig = json.loads(out.stdout)
    assert fig["size"] == 537_600_044
    assert fig["growth"] < 64 * 1024 * 1024, fig


async def test_a_call_resealed_with_its_final_header_leaves_one_locked_object_and_no_draft(seaweed, tmp_path) -> None:
    from recordings.testing import wav_header

    store = seaweed.store()
    vault = make_vault(tmp_path, store)
    seconds = 200.0  # 6.4 MB: the draft is a multipart upload too
    audio = whole(seconds, tone_hz=880)[44:]
    streaming = b"RIFF\xff\xff\xff\xffWAVE" + wav_header(len(audio))[12:40] + b"\xff\xff\xff\xff"

    def body():
        yield streaming
        for i in range(0, len(audio), 65536):
            yield audio[i : i + 65536]

    rec = (
        await vault.ingest(request("s3-reseal-1"), body(), PBX, finalize=lambda: (wav_header(len(audio)), seconds))
    ).recording
    assert objects(store) == [store.object_key(rec.recording_id)]  # the draft was deleted
    assert len(versions(store)) == 1
    assert store.lock_state(rec.recording_id)["mode"] == "COMPLIANCE"
    back = (await vault.open_audio(rec.recording_id, QA_A, reason="QA 抽检")).read_all()
    assert back == wav_header(len(audio)) + audio and rec.duration_s == seconds
    assert hashlib.sha256(back).hexdigest() == rec.sha256


async def test_a_part_the_server_refuses_fails_the_ingest_and_leaves_no_object_and_no_open_upload(seaweed, tmp_path) -> None:
    from adapters.storage.filesystem import StorageError

    store = seaweed.store()
    real = store.client

    class RefusesThirdPart:
        def __getattr__(self, name):
            return getattr(real, name)

        def upload_part(self, **kw):
            if kw["PartNumber"] == 3:
                raise real.exceptions.ClientError(
                    {"Error": {"Code": "SlowDown", "Message": "injected"}, "ResponseMetadata": {"HTTPStatusCode": 503}},
                    "UploadPart",
                )
            return real.upload_part(**kw)

    store.client = RefusesThirdPart()
    vault = make_vault(tmp_path, store)
    with pytest.raises(StorageError, match="SlowDown"):
        await vault.ingest(request("s3-refused-part"), wav_stream(12 * 60.0), PBX)
    store.client = real
    assert objects(store) == [] and store.temporaries() == []  # the multipart upload was aborted
    assert await vault.list(ADMIN) == []
