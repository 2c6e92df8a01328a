"""SM4-GCM for creditors that require 国密, and the key-backend configuration."""

from __future__ import annotations

import io

import pytest

from recordings import envelope
from recordings.config import parse_recordings_config
from recordings.errors import ConfigError, IntegrityError

# RFC 8998, appendix A.1 (SM4-GCM test vector).
RFC8998_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
RFC8998_IV = bytes.fromhex("00001234567800000000ABCD")
RFC8998_AAD = bytes.fromhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2")
RFC8998_PT = bytes.fromhex(
    "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"
    "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA"
)
RFC8998_CT = bytes.fromhex(
    "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735"
    "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D"
)
RFC8998_TAG = bytes.fromhex("83DE3541E4C2B58177E065A9BF7B62EC")


def test_sm4_gcm_matches_the_rfc_8998_test_vector() -> None:
    out = bytearray(len(RFC8998_PT) + 16)
    n = envelope.Sm4Gcm(RFC8998_KEY).encrypt_into(RFC8998_IV, RFC8998_PT, RFC8998_AAD, memoryview(out))
    assert bytes(out[:n]) == RFC8998_CT + RFC8998_TAG
    assert envelope.Sm4Gcm(RFC8998_KEY).decrypt(RFC8998_IV, RFC8998_CT + RFC8998_TAG, RFC8998_AAD) == RFC8998_PT


def _seal(alg: str, plain: bytes, chunk: int = 1024) -> tuple[bytes, bytes]:
    key = envelope.new_data_key(alg)
    out = io.BytesIO()
    w = envelope.EnvelopeWriter(out, key, recording_id="r1", key_id="d1", chunk_size=chunk, alg=alg)
    w.write(plain)
    w.finish()
    return key, out.getvalue()


@pytest.mark.parametrize("size", [0, 1, 1024, 1025, 5000])
def test_an_sm4_sealed_recording_reads_back_every_range(size: int) -> None:
    plain = bytes(range(256)) * (size // 256 + 1)
    plain = plain[:size]
    key, blob = _seal(envelope.SM4_GCM, plain)
    assert len(key) == 16
    reader = envelope.EnvelopeReader(io.BytesIO(blob), key, len(blob), recording_id="r1")
    assert reader.header.alg == "SM4-GCM"
    assert b"".join(reader.iter_all()) == plain
    if size > 10:
        assert b"".join(reader.iter_range(3, size - 2)) == plain[3 : size - 2]


def test_a_flipped_bit_in_an_sm4_chunk_fails_authentication() -> None:
    key, blob = _seal(envelope.SM4_GCM, b"x" * 3000)
    tampered = bytearray(blob)
    tampered[-40] ^= 1
    reader = envelope.EnvelopeReader(io.BytesIO(bytes(tampered)), key, len(tampered), recording_id="r1")
    with pytest.raises(IntegrityError):
        b"".join(reader.iter_all())


def test_an_aes_key_does_not_open_an_sm4_blob() -> None:
    _, blob = _seal(envelope.SM4_GCM, b"y" * 100)
    with pytest.raises(IntegrityError):
        envelope.EnvelopeReader(io.BytesIO(blob), envelope.new_data_key(), len(blob))


def test_a_creditor_cipher_is_named_in_the_config_and_an_unknown_one_is_refused() -> None:
    cfg = parse_recordings_config({"creditors": {"bank-b": {"cipher": "sm4-gcm"}}})
    assert cfg.ciphers == {"bank-b": "SM4-GCM"}
    with pytest.raises(ConfigError, match="recordings.creditors.bank-b.cipher"):
        parse_recordings_config({"creditors": {"bank-b": {"cipher": "des"}}})


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"keys": "hsm"}, "recordings.keys"),
        ({"keys": "pkcs11", "pkcs11_pin_env": "PIN"}, "recordings.pkcs11_token"),
        ({"keys": "pkcs11", "pkcs11_token": "t"}, "recordings.pkcs11_pin_env"),
        ({"keys": "pkcs11", "pkcs11_token": "t", "pkcs11_pin_env": "P", "pkcs11_pin_file": "/f"}, "pkcs11_pin"),
        ({"keys": "transit", "transit_token_env": "T"}, "recordings.transit_url"),
        ({"keys": "transit", "transit_url": "https://kms:8200"}, "recordings.transit_token"),
    ],
)
def test_a_key_backend_without_what_it_needs_is_refused_with_the_key_path(raw: dict, path: str) -> None:
    with pytest.raises(ConfigError, match=path.replace(".", r"\.")):
        parse_recordings_config(raw)


def test_secrets_are_referenced_never_inlined(tmp_path, monkeypatch) -> None:
    from adapters.storage.compose import read_secret
    from recordings.config import SecretRef

    monkeypatch.setenv("DG_TEST_PIN", "s3cret")
    assert read_secret(SecretRef(env="DG_TEST_PIN"), "pin") == "s3cret"
    f = tmp_path / "pin"
    f.write_text("filepin\n")
    f.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600") as exc:
        read_secret(SecretRef(file=str(f)), "pin")
    assert "filepin" not in str(exc.value)
    f.chmod(0o600)
    assert read_secret(SecretRef(file=str(f)), "pin") == "filepin"
