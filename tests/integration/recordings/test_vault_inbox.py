"""The drop folder: files named by attempt id or Call-ID are sealed once complete."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import pytest

from adapters.storage.filesystem import FilesystemBlobStore
from adapters.storage.inbox import Inbox, NoCalls, Resolved
from adapters.storage.jsonrepo import JsonFileRecordingRepository
from adapters.storage.keys import KeyFileKeyProvider
from recordings.model import Link
from recordings.testing import ADMIN, QA_A, wav_stream
from recordings.vault import Vault

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


class Attempts:
    def __init__(self, known: dict[str, Resolved]) -> None:
        self.known = known

    async def resolve(self, source_kind: str, source_id: str) -> Resolved | None:
        return self.known.get(f"{source_kind}:{source_id}")


@pytest.fixture
def vault(tmp_path) -> Vault:
    keys = KeyFileKeyProvider(tmp_path / "k.keys")
    keys.create("bank-a")
    keys.create("_unmatched")
    return Vault(JsonFileRecordingRepository(tmp_path / "m.json"), FilesystemBlobStore(tmp_path / "data"), keys,
                 clock=lambda: NOW)


def drop(inbox_dir, name: str, *, age_s: float = 60, seconds: float = 2.0, data: bytes | None = None) -> bytes:
    inbox_dir.mkdir(exist_ok=True)
    p = inbox_dir / name
    body = data if data is not None else b"".join(wav_stream(seconds, tone_hz=440))
    p.write_bytes(body)
    t = (NOW - timedelta(seconds=age_s)).timestamp()
    os.utime(p, (t, t))
    return body


async def test_a_complete_file_named_by_attempt_id_is_sealed_linked_and_removed(tmp_path, vault) -> None:
    box = tmp_path / "inbox"
    audio = drop(box, "attempt-att-42.wav")
    started = datetime(2026, 11, 23, 11, 58, tzinfo=timezone.utc)
    resolver = Attempts({"attempt:att-42": Resolved(Link("bank-a", "A-1", "ag-1", "+8613800000001"), started, 2.0)})
    [out] = await Inbox(vault, box, resolver, lambda: NOW).scan()
    assert out.result == "stored"
    rec = await vault.get(out.recording_id, ADMIN)
    assert (rec.case_id, rec.started_at, rec.source_kind) == ("A-1", started, "attempt")
    assert not (box / "attempt-att-42.wav").exists()
    assert (await vault.open_audio(rec.recording_id, QA_A, reason="inbox check")).read_all() == audio


async def test_a_file_still_being_written_is_left_alone(tmp_path, vault) -> None:
    box = tmp_path / "inbox"
    drop(box, "call-abc@pbx.wav", age_s=2)
    drop(box, ".hidden.wav")
    drop(box, "attempt-x.wav.part")
    assert await Inbox(vault, box, NoCalls(), lambda: NOW, settle=timedelta(seconds=10)).scan() == []
    assert sorted(p.name for p in box.iterdir()) == [".hidden.wav", "attempt-x.wav.part", "call-abc@pbx.wav"]


async def test_a_file_of_an_unknown_call_is_kept_as_unmatched(tmp_path, vault) -> None:
    box = tmp_path / "inbox"
    drop(box, "f81d4fae-7dec-11d0@10.0.0.1.wav")
    [out] = await Inbox(vault, box, NoCalls(), lambda: NOW).scan()
    assert out.result == "unmatched"
    rec = await vault.get(out.recording_id, ADMIN)
    assert rec.source_kind == "call" and rec.source_id == "f81d4fae-7dec-11d0@10.0.0.1"


async def test_a_file_that_is_not_audio_is_set_aside_with_its_reason_not_deleted(tmp_path, vault) -> None:
    box = tmp_path / "inbox"
    drop(box, "attempt-att-7.wav", data=b"this is not a wav file at all")
    [out] = await Inbox(vault, box, NoCalls(), lambda: NOW).scan()
    assert out.result == "rejected"
    assert (box / ".rejected" / "attempt-att-7.wav").read_bytes() == b"this is not a wav file at all"
    assert "unsupported-media-type" in (box / ".rejected" / "attempt-att-7.wav.reason").read_text()


async def test_the_same_call_dropped_twice_is_stored_once(tmp_path, vault) -> None:
    box = tmp_path / "inbox"
    drop(box, "call-dup-1.wav")
    inbox = Inbox(vault, box, NoCalls(), lambda: NOW)
    [first] = await inbox.scan()
    drop(box, "call-dup-1.wav")
    [second] = await inbox.scan()
    assert second.result == "duplicate" and second.recording_id == first.recording_id
    assert list(box.glob("*.wav")) == []
    drop(box, "call-dup-1.wav", seconds=3.0)
    [third] = await inbox.scan()
    assert third.result == "conflict" and (box / ".conflicts" / "call-dup-1.wav").exists()
