"""Session cookie, CSRF tokens, audio grants and the server secret behind them.

Everything here is signed with keys derived from one server secret (HMAC-SHA256, a
separate derived key per purpose so a value of one kind never verifies as another).
The secret comes from, in order: `DIALGATE_CONSOLE_SECRET` (the value itself, at least
32 characters), `DIALGATE_CONSOLE_SECRET_FILE` (a path), or the file
`<data_dir>/console-secret.key`, created on first use with mode 0600. It is never
written to the repository or to logs.

Cookies are signed, not encrypted: they carry ids and times, nothing secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SECRET_FILE_NAME = "console-secret.key"
MIN_SECRET_CHARS = 32


class SecretError(Exception):
    """The console secret is missing, too short or exposed."""


def load_or_create_secret(data_dir: Path, env: Mapping[str, str] | None = None) -> bytes:
    """The server secret: from the environment, a named file, or `<data_dir>/console-secret.key`."""
    env = os.environ if env is None else env
    value = env.get("DIALGATE_CONSOLE_SECRET")
    if value:
        if len(value) < MIN_SECRET_CHARS:
            raise SecretError(
                f"DIALGATE_CONSOLE_SECRET is {len(value)} characters; it needs at least {MIN_SECRET_CHARS}"
            )
        return value.encode()
    named = env.get("DIALGATE_CONSOLE_SECRET_FILE")
    path = Path(named) if named else Path(data_dir) / SECRET_FILE_NAME
    if not path.exists():
        if named:
            raise SecretError(f"DIALGATE_CONSOLE_SECRET_FILE names {path}, which does not exist")
        _create_secret_file(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SecretError(
            f"{path} is readable by group or others (mode {mode:04o}); run: chmod 600 {path}"
        )
    data = path.read_bytes().strip()
    if len(data) < MIN_SECRET_CHARS:
        raise SecretError(f"{path} holds {len(data)} bytes; it needs at least {MIN_SECRET_CHARS}")
    return data


def _create_secret_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_hex(32).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        # link() refuses to overwrite: when two processes race, the first file wins.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Signs small JSON payloads for one purpose; `loads` returns None for anything forged,
    expired, malformed or signed for another purpose."""

    def __init__(self, secret: bytes, purpose: str, now: Callable[[], float] = time.time) -> None:
        self._key = hmac.new(secret, b"dialgate-console:" + purpose.encode(), hashlib.sha256).digest()
        self._now = now

    def dumps(self, payload: Mapping[str, Any], ttl_s: float) -> str:
        body = dict(payload)
        body["exp"] = int(self._now() + ttl_s)
        raw = json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
        return f"{_b64e(raw)}.{_b64e(self._mac(raw))}"

    def loads(self, token: str | None) -> dict[str, Any] | None:
        if not token or token.count(".") != 1 or len(token) > 8192:
            return None
        body_b64, mac_b64 = token.split(".")
        try:
            raw, mac = _b64d(body_b64), _b64d(mac_b64)
        except (ValueError, TypeError):
            return None
        if not hmac.compare_digest(mac, self._mac(raw)):
            return None
        try:
            body = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(body, dict) or not isinstance(body.get("exp"), int):
            return None
        if body["exp"] < self._now():
            return None
        return body

    def mac_hex(self, text: str) -> str:
        return self._mac(text.encode()).hex()

    def _mac(self, raw: bytes) -> bytes:
        return hmac.new(self._key, raw, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    user_id: str | None  # None: anonymous (the sign-in form's session)
    issued_at: int
    seen_at: int = 0  # the last request that renewed the cookie (0: at issue)

    @property
    def last_seen(self) -> int:
        return self.seen_at or self.issued_at


class SessionCodec:
    """The console's session cookie value and the CSRF token bound to it."""

    def __init__(self, secret: bytes, ttl_s: float = 8 * 3600, now: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self._now = now
        self._sessions = Signer(secret, "session", now)
        self._csrf = Signer(secret, "csrf", now)
        self._notices = Signer(secret, "notice", now)

    def new(self, user_id: str | None) -> Session:
        # A fresh sid on every sign-in and sign-out: no session fixation.
        return Session(sid=secrets.token_urlsafe(18), user_id=user_id, issued_at=int(self._now()))

    def encode(self, session: Session) -> str:
        return self._sessions.dumps(
            {"sid": session.sid, "uid": session.user_id, "iat": session.issued_at, "seen": session.seen_at},
            # The cookie never outlives the sign-in's own lifetime, however often renewed.
            max(1, session.issued_at + self.ttl_s - int(self._now())),
        )

    def decode(self, value: str | None) -> Session | None:
        body = self._sessions.loads(value)
        if body is None:
            return None
        sid, uid, iat, seen = body.get("sid"), body.get("uid"), body.get("iat"), body.get("seen", 0)
        if (not isinstance(sid, str) or not isinstance(iat, int) or not isinstance(seen, int)
                or not (uid is None or isinstance(uid, str))):
            return None
        return Session(sid=sid, user_id=uid, issued_at=iat, seen_at=seen)

    def seen(self, session: Session) -> Session:
        """`session` renewed by a request now."""
        return Session(session.sid, session.user_id, session.issued_at, int(self._now()))

    def csrf_token(self, session: Session) -> str:
        return self._csrf.mac_hex(session.sid)

    def csrf_ok(self, session: Session | None, token: str | None) -> bool:
        if session is None or not token:
            return False
        return hmac.compare_digest(token.encode(), self.csrf_token(session).encode())

    def notice_mac(self, session: Session, text: str) -> str:
        """A MAC over a confirmation a redirect carries in its URL (`?done=…`), so only
        the action itself can make the page confirm it, never a link someone sends."""
        return self._notices.mac_hex(f"{session.sid}\n{text}")

    def notice_ok(self, session: Session, text: str, mac: str | None) -> bool:
        return bool(mac) and hmac.compare_digest(str(mac).encode(), self.notice_mac(session, text).encode())


class GrantCodec:
    """A short-lived, signed permission to stream one recording for one session, carrying
    the access reason the user gave (借阅原因). An `<audio>` element cannot send headers,
    so the reason travels with the audio URL, signed so it cannot be altered."""

    def __init__(self, secret: bytes, ttl_s: float = 30 * 60, now: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self._signer = Signer(secret, "audio-grant", now)

    def issue(self, session: Session, recording_id: str, reason: str) -> str:
        return self._signer.dumps({"sid": session.sid, "rid": recording_id, "why": reason}, self.ttl_s)

    def reason(self, grant: str | None, session: Session, recording_id: str) -> str | None:
        """The reason the grant carries, or None when it was not issued to this sign-in for this recording."""
        body = self._signer.loads(grant)
        if body is None or body.get("sid") != session.sid or body.get("rid") != recording_id:
            return None
        why = body.get("why")
        return why if isinstance(why, str) and why.strip() else None


def request_is_tls(scheme: str, headers: Mapping[str, str]) -> bool:
    """True when the browser reached us over HTTPS, directly or through a TLS proxy.

    Trusting the proxy headers here is safe: they can only make the cookie *stricter*
    (Secure); a forged header at worst stops a plain-HTTP browser from sending it back.
    """
    if scheme == "https":
        return True
    if headers.get("x-forwarded-proto", "").split(",")[0].strip().lower() == "https":
        return True
    forwarded = headers.get("forwarded", "")
    for part in forwarded.split(",")[0].split(";"):
        key, _, val = part.strip().partition("=")
        if key.lower() == "proto" and val.strip('"').lower() == "https":
            return True
    return False


def cookie_header(name: str, value: str, *, secure: bool, max_age: int | None, path: str = "/console") -> str:
    """A Set-Cookie value: HttpOnly, SameSite=Strict, scoped to the console, Secure on TLS."""
    parts = [f"{name}={value}", f"Path={path}", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)
