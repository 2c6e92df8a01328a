"""The `[mqtt]` section: a typed, frozen view of the raw TOML table.

    [mqtt]
    url = "mqtts://dialgate@broker.example:8883"   # off when absent or empty
    client_id = "dialgate-gw1"       # fixed: the broker keeps our session under it
    password_env = "DIALGATE_MQTT_PASSWORD"        # or password_file = "/run/secrets/mqtt"
    published_retention_days = 7     # published outbox rows are deleted after this

A password is never written in the file (neither in `url` nor as `password`): it is
referenced by environment variable or file and read here, once. Every wrong key is
refused with its dotted path (`mqtt.keepalive: must be an integer ...`). Each key can
also come from the environment: `DIALGATE_MQTT_URL`, `DIALGATE_MQTT_CLIENT_ID`, ...
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from adapters.mqtt.errors import MqttConfigError

SECTION = "mqtt"

# Defaults in one visible block.
DEFAULT_CLIENT_ID = "dialgate"
DEFAULT_PROTOCOL = "5"
DEFAULT_SESSION_EXPIRY_S = 7 * 24 * 3600  # MQTT v5: how long the broker keeps our queue
DEFAULT_KEEPALIVE_S = 30
DEFAULT_RECONNECT_MIN_S = 0.2
DEFAULT_RECONNECT_MAX_S = 10.0
DEFAULT_PUBLISH_TIMEOUT_S = 10.0
DEFAULT_POLL_INTERVAL_S = 2.0
DEFAULT_BATCH_SIZE = 500
DEFAULT_MAX_PARALLEL_CASES = 64  # aiomqtt scans its pending calls per publish: keep modest
DEFAULT_MAX_INFLIGHT = 64
DEFAULT_DIAL_MAX_AGE_S = 120.0  # a queued dial command older than this is refused
# Published outbox rows are deleted this many days after the broker acknowledged them
# (unsent rows never are): long enough to look into a consumer's complaint last week.
DEFAULT_PUBLISHED_RETENTION_DAYS = 7
MAX_PUBLISHED_RETENTION_DAYS = 3650

_PROTOCOLS = {"5": "5", "5.0": "5", "3.1.1": "3.1.1", "311": "3.1.1"}


@dataclass(frozen=True)
class MqttConfig:
    host: str
    port: int
    tls: bool
    client_id: str = DEFAULT_CLIENT_ID
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    protocol: str = DEFAULT_PROTOCOL  # "5" | "3.1.1"
    session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S
    keepalive_s: int = DEFAULT_KEEPALIVE_S
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_insecure: bool = False
    reconnect_min_s: float = DEFAULT_RECONNECT_MIN_S
    reconnect_max_s: float = DEFAULT_RECONNECT_MAX_S
    publish_timeout_s: float = DEFAULT_PUBLISH_TIMEOUT_S
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
    batch_size: int = DEFAULT_BATCH_SIZE
    max_parallel_cases: int = DEFAULT_MAX_PARALLEL_CASES
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    dial_max_age_s: float = DEFAULT_DIAL_MAX_AGE_S
    published_retention_days: int = DEFAULT_PUBLISHED_RETENTION_DAYS

    @property
    def display_url(self) -> str:
        """The broker address for logs and /readyz: never the password."""
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


def _err(key: str, message: str) -> MqttConfigError:
    return MqttConfigError(f"{SECTION}.{key}", message)


def _str(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _err(key, f"must be a string, got {type(value).__name__}")
    return value


def _int(raw: Mapping[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _err(key, f"must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise _err(key, f"must be between {lo} and {hi}, got {value}")
    return value


def _float(raw: Mapping[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _err(key, f"must be a number of seconds, got {value!r}")
    if not lo <= float(value) <= hi:
        raise _err(key, f"must be between {lo} and {hi}, got {value}")
    return float(value)


def _bool(raw: Mapping[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise _err(key, f"must be true or false, got {value!r}")
    return value


_KNOWN_KEYS = frozenset(
    {
        "url", "client_id", "username", "password_env", "password_file", "protocol",
        "session_expiry", "keepalive", "ca_file", "cert_file", "key_file", "tls_insecure",
        "reconnect_min", "reconnect_max", "publish_timeout", "poll_interval", "batch_size",
        "max_parallel_cases", "max_inflight", "dial_max_age", "published_retention_days",
    }
)  # fmt: skip


def load_mqtt_config(
    raw: Mapping[str, Any] | None,
    environ: Mapping[str, str] | None = None,
) -> MqttConfig | None:
    """Read the raw `[mqtt]` table; None when MQTT is off (no table or no `url`).

    Raises MqttConfigError naming the key for anything wrong, including an unknown key
    and a password written inline.
    """
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise MqttConfigError(SECTION, f"must be a table, got {type(raw).__name__}")
    env = os.environ if environ is None else environ

    raw = _with_env_overrides(raw, env)
    if "password" in raw:
        raise _err(
            "password",
            "a password is never written in the config; use password_env (an environment "
            "variable name) or password_file (a path)",
        )
    unknown = sorted(set(raw) - _KNOWN_KEYS)
    if unknown:
        raise _err(unknown[0], f"unknown key (known: {', '.join(sorted(_KNOWN_KEYS))})")

    url = _str(raw, "url")
    # Validate every other key even when off, so a typo does not hide until enabled.
    client_id = _str(raw, "client_id") or DEFAULT_CLIENT_ID
    if not client_id.strip() or any(c in client_id for c in "+#/") or len(client_id) > 128:
        raise _err("client_id", "must be 1-128 characters without '+', '#' or '/'")
    protocol_raw = raw.get("protocol", DEFAULT_PROTOCOL)
    protocol = _PROTOCOLS.get(str(protocol_raw))
    if protocol is None or isinstance(protocol_raw, bool):
        raise _err("protocol", f'must be "5" or "3.1.1", got {protocol_raw!r}')
    session_expiry = _int(raw, "session_expiry", DEFAULT_SESSION_EXPIRY_S, 0, 2**32 - 1)
    keepalive = _int(raw, "keepalive", DEFAULT_KEEPALIVE_S, 5, 3600)
    reconnect_min = _float(raw, "reconnect_min", DEFAULT_RECONNECT_MIN_S, 0.01, 600)
    reconnect_max = _float(raw, "reconnect_max", DEFAULT_RECONNECT_MAX_S, 0.01, 3600)
    if reconnect_max < reconnect_min:
        raise _err("reconnect_max", f"must be >= reconnect_min ({reconnect_min})")
    publish_timeout = _float(raw, "publish_timeout", DEFAULT_PUBLISH_TIMEOUT_S, 0.1, 600)
    poll_interval = _float(raw, "poll_interval", DEFAULT_POLL_INTERVAL_S, 0.01, 3600)
    batch_size = _int(raw, "batch_size", DEFAULT_BATCH_SIZE, 1, 100_000)
    max_parallel = _int(raw, "max_parallel_cases", DEFAULT_MAX_PARALLEL_CASES, 1, 10_000)
    max_inflight = _int(raw, "max_inflight", DEFAULT_MAX_INFLIGHT, 1, 65_535)
    dial_max_age = _float(raw, "dial_max_age", DEFAULT_DIAL_MAX_AGE_S, 1, 86_400)
    # Whole days, at least one: 0 would delete an event the moment it is published,
    # leaving nothing to look at when a consumer says it missed one.
    retention_days = _int(
        raw, "published_retention_days", DEFAULT_PUBLISHED_RETENTION_DAYS, 1,
        MAX_PUBLISHED_RETENTION_DAYS,
    )
    tls_insecure = _bool(raw, "tls_insecure", False)
    files = {}
    for key in ("ca_file", "cert_file", "key_file"):
        value = _str(raw, key)
        if value is not None and not Path(value).is_file():
            raise _err(key, f"no such file: {value}")
        files[key] = value

    username = _str(raw, "username")
    password = _resolve_password(raw, env)

    if not url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _err("url", f"not a valid URL ({exc})") from exc
    if parts.scheme not in ("mqtt", "mqtts"):
        raise _err("url", f"scheme must be mqtt:// or mqtts://, got {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise _err("url", "needs a host, e.g. mqtt://127.0.0.1:1883")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _err("url", "must be scheme://[user@]host[:port] with no path or query")
    if parts.password is not None:
        raise _err(
            "url", "must not contain a password; use mqtt.password_env or mqtt.password_file"
        )
    url_user = unquote(parts.username) if parts.username else None
    if url_user and username and url_user != username:
        raise _err("username", f"differs from the user in mqtt.url ({url_user!r})")
    username = username or url_user
    if password is not None and not username:
        raise _err("username", "a password is configured but no username (key or URL)")
    tls = parts.scheme == "mqtts"
    if not tls and any(files.values()):
        first = next(k for k, v in files.items() if v)
        raise _err(first, "TLS files need an mqtts:// url")

    return MqttConfig(
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        tls=tls,
        client_id=client_id,
        username=username,
        password=password,
        protocol=protocol,
        session_expiry_s=session_expiry,
        keepalive_s=keepalive,
        ca_file=files["ca_file"],
        cert_file=files["cert_file"],
        key_file=files["key_file"],
        tls_insecure=tls_insecure,
        reconnect_min_s=reconnect_min,
        reconnect_max_s=reconnect_max,
        publish_timeout_s=publish_timeout,
        poll_interval_s=poll_interval,
        batch_size=batch_size,
        max_parallel_cases=max_parallel,
        max_inflight=max_inflight,
        dial_max_age_s=dial_max_age,
        published_retention_days=retention_days,
    )


_INT_KEYS = frozenset(
    {
        "session_expiry", "keepalive", "batch_size", "max_parallel_cases", "max_inflight",
        "published_retention_days",
    }
)  # fmt: skip
_FLOAT_KEYS = frozenset(
    {"reconnect_min", "reconnect_max", "publish_timeout", "poll_interval", "dial_max_age"}
)


def _with_env_overrides(raw: Mapping[str, Any], env: Mapping[str, str]) -> Mapping[str, Any]:
    """`DIALGATE_MQTT_URL` → `url`, `DIALGATE_MQTT_CLIENT_ID` → `client_id`, … (any key
    but `password`, which stays a reference)."""
    merged = dict(raw)
    for key in _KNOWN_KEYS:
        name = f"DIALGATE_MQTT_{key.upper()}"
        if name not in env:
            continue
        text = env[name]
        try:
            if key in _INT_KEYS:
                merged[key] = int(text)
            elif key in _FLOAT_KEYS:
                merged[key] = float(text)
            elif key == "tls_insecure":
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                merged[key] = text.lower() in ("true", "1")
            else:
                merged[key] = text
        except ValueError:
            raise _err(key, f"environment variable {name} is not a valid value: {text!r}") from None
    return merged


def _resolve_password(raw: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
    env_name = _str(raw, "password_env")
    file_name = _str(raw, "password_file")
    if env_name and file_name:
        raise _err("password_file", "give password_env or password_file, not both")
    if env_name:
        value = env.get(env_name)
        if not value:
            raise _err("password_env", f"environment variable {env_name} is not set or empty")
        return value
    if file_name:
        try:
            value = Path(file_name).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise _err("password_file", f"cannot read {file_name}: {exc.strerror}") from exc
        if not value:
            raise _err("password_file", f"{file_name} is empty")
        return value
    return None
