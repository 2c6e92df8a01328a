"""The vault on each key backend: the key file, a PKCS#11 token (SoftHSM2) and a
transit engine (OpenBao). Same operations, same guarantees: a KEK never reaches the
vault, rotation rewraps every data key, retired and destroyed keys are gone, and
destroying one creditor's keys leaves the others readable."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from recordings.errors import IntegrityError, KeyDestroyed
from recordings.memory import InMemoryBlobStore, InMemoryRecordingRepository
from recordings.ports import KeyProvider
from recordings.retention import RetentionPolicy
from recordings.testing import ADMIN, PBX, QA_A, QA_B, request, wav_bytes
from recordings.vault import Vault

from tests.integration.recordings.kms import Token, Transit, openbao, softhsm_token, softhsm_tokens  # noqa: F401

BACKENDS = ["file", "pkcs11", "transit"]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture(params=BACKENDS)
def keys(request: pytest.FixtureRequest, tmp_path) -> Iterator[KeyProvider]:
    if request.param == "file":
        from adapters.storage.keys import KeyFileKeyProvider

        yield KeyFileKeyProvider(tmp_path / "keys" / "recordings.keys", _utcnow)
    elif request.param == "pkcs11":
        from adapters.storage.pkcs11 import Pkcs11KeyProvider

        token: Token = request.getfixturevalue("softhsm_token")
        provider = Pkcs11KeyProvider(token.module, token.label, token.pin, _utcnow)
        yield provider
        provider.close()
    else:
        from adapters.storage.transit import TransitKeyProvider

        bao: Transit = request.getfixturevalue("openbao")
        provider = TransitKeyProvider(bao.url, bao.token, prefix=f"t{secrets.token_hex(4)}-")
        yield provider
        provider.close()


@pytest.fixture
def vault(keys: KeyProvider) -> Vault:
    for scope in ("bank-a", "bank-b", "_unmatched"):
        keys.create(scope)
    return Vault(
        InMemoryRecordingRepository(), InMemoryBlobStore(), keys, clock=_utcnow,
        retention=RetentionPolicy.from_config("730d", {}),
    )


async def test_each_backend_seals_a_recording_that_reads_back_byte_for_byte(vault: Vault) -> None:
    audio = wav_bytes(2, tone_hz=330)
    rec = (await vault.ingest(request("kb-1"), [audio], PBX)).recording
    assert rec.kek_id == vault.keys.active_id("bank-a")
    assert (await vault.open_audio(rec.recording_id, QA_A, reason="质检 QA")).read_all() == audio
    assert all(r.ok for r in await vault.verify(ADMIN))


async def test_rotation_rewraps_every_data_key_and_a_retired_key_is_gone_on_each_backend(vault: Vault) -> None:
    audios = {}
    for i in range(3):
        audio = wav_bytes(1, tone_hz=200 + 50 * i)
        audios[(await vault.ingest(request(f"kr-{i}"), [audio], PBX)).recording.recording_id] = audio
    old = vault.keys.active_id("bank-a")
    report = await vault.rotate_keys("bank-a", ADMIN)
    assert report.new_key_id != old and report.rewrapped == 3
    assert {r.kek_id for r in await vault.list(ADMIN)} == {report.new_key_id}
    retired = await vault.retire_keys("bank-a", ADMIN, grace=timedelta(0))
    assert retired.retired == (old,)
    assert not vault.keys.has("bank-a", old)
    for rid, audio in audios.items():
        assert (await vault.open_audio(rid, QA_A, reason="轮换后 after rotation")).read_all() == audio


async def test_destroying_one_creditors_keys_shreds_its_recordings_and_leaves_the_others_readable(vault: Vault) -> None:
    a_audio, b_audio = wav_bytes(1, 300), wav_bytes(1, 400)
    a = (await vault.ingest(request("ks-a"), [a_audio], PBX)).recording
    b = (await vault.ingest(request("ks-b", creditor="bank-b", case_id="cb"), [b_audio], PBX)).recording
    assert await vault.destroy_creditor_keys("bank-a", ADMIN) == 1
    with pytest.raises(KeyDestroyed):
        await vault.open_audio(a.recording_id, QA_A, reason="委托结束后 after commission end")
    assert (await vault.open_audio(b.recording_id, QA_B, reason="仍在委托 still ours")).read_all() == b_audio
    with pytest.raises(KeyDestroyed):
        vault.keys.create("bank-a")  # never silently recreated
    assert "bank-a" not in vault.keys.scopes()


async def test_a_wrapped_key_moved_to_another_recording_does_not_unwrap(vault: Vault) -> None:
    one = (await vault.ingest(request("km-1"), [wav_bytes(1, 250)], PBX)).recording
    two = (await vault.ingest(request("km-2"), [wav_bytes(1, 260)], PBX)).recording
    await vault.repo.update(two.evolve(wrapped_key=one.wrapped_key, kek_id=one.kek_id))
    with pytest.raises(IntegrityError):
        await vault.open_audio(two.recording_id, QA_A, reason="篡改检查 tamper check")


async def test_sm4_and_aes_recordings_side_by_side_on_each_backend(keys: KeyProvider) -> None:
    for scope in ("bank-a", "bank-b"):
        keys.create(scope)
    vault = Vault(
        InMemoryRecordingRepository(), InMemoryBlobStore(), keys, clock=_utcnow, ciphers={"bank-b": "SM4-GCM"},
    )
    a_audio, b_audio = wav_bytes(1, 310), wav_bytes(1, 320)
    a = (await vault.ingest(request("kc-a"), [a_audio], PBX)).recording
    b = (await vault.ingest(request("kc-b", creditor="bank-b", case_id="cb"), [b_audio], PBX)).recording
    assert vault.blobs.blobs[a.recording_id].startswith(b"DGREC")
    assert b'"alg":"SM4-GCM"' in vault.blobs.blobs[b.recording_id][:200]
    assert b'"alg":"AES-256-GCM"' in vault.blobs.blobs[a.recording_id][:200]
    assert (await vault.open_audio(a.recording_id, QA_A, reason="AES")).read_all() == a_audio
    assert (await vault.open_audio(b.recording_id, QA_B, reason="SM4")).read_all() == b_audio


def test_the_token_keeps_each_kek_sensitive_and_never_extractable(softhsm_token: Token) -> None:
    import pkcs11

    from adapters.storage.pkcs11 import Pkcs11KeyProvider

    provider = Pkcs11KeyProvider(softhsm_token.module, softhsm_token.label, softhsm_token.pin, _utcnow)
    try:
        kek_id = provider.create("bank-a")
        key = provider._keys("bank-a")[kek_id]
        assert key[pkcs11.Attribute.SENSITIVE] is True
        assert key[pkcs11.Attribute.EXTRACTABLE] is False
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            key[pkcs11.Attribute.VALUE]
    finally:
        provider.close()


def test_transit_keys_are_created_not_exportable(openbao: Transit) -> None:
    import httpx

    from adapters.storage.transit import TransitKeyProvider

    provider = TransitKeyProvider(openbao.url, openbao.token, prefix="exp-")
    try:
        provider.create("bank-a")
        info = httpx.get(f"{openbao.url}/v1/transit/keys/exp-bank-a", headers={"X-Vault-Token": openbao.token}).json()
        assert info["data"]["exportable"] is False
        assert httpx.get(
            f"{openbao.url}/v1/transit/export/encryption-key/exp-bank-a", headers={"X-Vault-Token": openbao.token}
        ).status_code == 400
    finally:
        provider.close()
