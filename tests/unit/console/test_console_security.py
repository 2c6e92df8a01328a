"""Session cookie, CSRF, audio grants and the secret: forgeries, expiry and file modes."""

from __future__ import annotations

import os
import stat

import pytest

from dialer.console.security import (
    GrantCodec,
    SecretError,
    SessionCodec,
    Signer,
    cookie_header,
    load_or_create_secret,
    request_is_tls,
)

SECRET = b"s" * 32


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def test_session_survives_a_round_trip():
    codec = SessionCodec(SECRET)
    s = codec.new("u-1")
    assert codec.decode(codec.encode(s)) == s


def test_a_tampered_session_cookie_is_rejected():
    codec = SessionCodec(SECRET)
    value = codec.encode(codec.new("u-1"))
    body, mac = value.split(".")
    forged = Signer(b"x" * 32, "session").dumps({"sid": "a", "uid": "admin", "iat": 1}, 60)
    assert codec.decode(forged) is None
    assert codec.decode(body[:-2] + "AA." + mac) is None
    assert codec.decode(value + "x") is None
    assert codec.decode("garbage") is None
    assert codec.decode("") is None


def test_a_session_expires_after_its_lifetime():
    clock = Clock()
    codec = SessionCodec(SECRET, ttl_s=3600, now=clock)
    value = codec.encode(codec.new("u-1"))
    clock.t += 3599
    assert codec.decode(value) is not None
    clock.t += 2
    assert codec.decode(value) is None


def test_a_value_signed_for_one_purpose_does_not_verify_for_another():
    sessions = SessionCodec(SECRET)
    grants = GrantCodec(SECRET)
    s = sessions.new("u-1")
    grant = grants.issue(s, "rec-1", "complaint review")
    assert sessions.decode(grant) is None


def test_csrf_token_is_bound_to_the_session():
    codec = SessionCodec(SECRET)
    a, b = codec.new(None), codec.new(None)
    assert codec.csrf_ok(a, codec.csrf_token(a))
    assert not codec.csrf_ok(b, codec.csrf_token(a))
    assert not codec.csrf_ok(a, "")
    assert not codec.csrf_ok(None, codec.csrf_token(a))


def test_every_sign_in_gets_a_fresh_session_id():
    codec = SessionCodec(SECRET)
    assert codec.new("u-1").sid != codec.new("u-1").sid


def test_audio_grant_carries_the_reason_for_one_session_and_one_recording():
    clock = Clock()
    codec, grants = SessionCodec(SECRET, now=clock), GrantCodec(SECRET, ttl_s=60, now=clock)
    mine, other = codec.new("u-1"), codec.new("u-1")
    g = grants.issue(mine, "rec-1", "投诉复核 #12")
    assert grants.reason(g, mine, "rec-1") == "投诉复核 #12"
    assert grants.reason(g, other, "rec-1") is None
    assert grants.reason(g, mine, "rec-2") is None
    clock.t += 61
    assert grants.reason(g, mine, "rec-1") is None


def test_secret_file_is_created_once_with_mode_0600(tmp_path):
    first = load_or_create_secret(tmp_path, env={})
    path = tmp_path / "console-secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert load_or_create_secret(tmp_path, env={}) == first
    assert [p.name for p in tmp_path.iterdir()] == ["console-secret.key"]  # no temporary left


def test_a_secret_file_others_can_read_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "console-secret.key"
    path.write_text("z" * 64)
    os.chmod(path, 0o644)
    with pytest.raises(SecretError, match="chmod 600"):
        load_or_create_secret(tmp_path, env={})


def test_secret_from_the_environment_wins_and_must_be_long_enough(tmp_path):
    assert load_or_create_secret(tmp_path, env={"DIALGATE_CONSOLE_SECRET": "e" * 40}) == b"e" * 40
    assert not (tmp_path / "console-secret.key").exists()
    with pytest.raises(SecretError, match="at least 32"):
        load_or_create_secret(tmp_path, env={"DIALGATE_CONSOLE_SECRET": "short"})


def test_a_named_secret_file_that_is_missing_is_an_error_naming_it(tmp_path):
    with pytest.raises(SecretError, match="nope.key"):
        load_or_create_secret(tmp_path, env={"DIALGATE_CONSOLE_SECRET_FILE": str(tmp_path / "nope.key")})


@pytest.mark.parametrize(
    ("scheme", "headers", "tls"),
    [
        ("https", {}, True),
        ("http", {}, False),
        ("http", {"x-forwarded-proto": "https"}, True),
        ("http", {"x-forwarded-proto": "http"}, False),
        ("http", {"forwarded": 'for=1.2.3.4;proto="https"'}, True),
        ("http", {"forwarded": "for=1.2.3.4;proto=http"}, False),
    ],
)
def test_tls_is_recognised_directly_or_behind_a_proxy(scheme, headers, tls):
    assert request_is_tls(scheme, headers) is tls


def test_cookie_is_httponly_samesite_strict_and_secure_only_on_tls():
    plain = cookie_header("dg_session", "v", secure=False, max_age=60)
    tls = cookie_header("dg_session", "v", secure=True, max_age=60)
    for c in (plain, tls):
        assert "HttpOnly" in c and "SameSite=Strict" in c and "Path=/console" in c
    assert "Secure" not in plain.split("; ")
    assert "Secure" in tls.split("; ")
