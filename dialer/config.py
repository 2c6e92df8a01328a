"""DialGate's configuration: one file (`config.toml`), one loader, frozen dataclasses.

Reading order, later wins: the defaults in `DEFAULTS` below, the TOML file, then the
environment (`DIALGATE_<SECTION>_<KEY>`, e.g. `DIALGATE_STORE_URL`). The file is read
once, at start-up.

Sections this module types are checked strictly: an unknown key is refused with its path
(`store.ur: unknown key`). Top-level sections owned by other parts of the system
(`[sip]`, `[mqtt]`, `[recordings]`, `[pbx]`, `[console]`) are kept as raw tables and
read with `Config.section(name)`; their owners type them. `[policy]` is raw too: it is
handed whole to `policy.load_policy`, which validates it.

Secrets are never written in the file: a key ending in `_file` names a file holding
the secret, a key ending in `_env` names an environment variable.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from dialer.errors import ConfigError

# ---------------------------------------------------------------------------------
# Defaults: every typed key, in one visible block.
# ---------------------------------------------------------------------------------
DEFAULTS: dict[str, dict[str, Any]] = {
    "paths": {
        "data_dir": "./var",  # relative to the working directory
    },
    "store": {
        # Empty: SQLite file `<data_dir>/dialgate.db`. PostgreSQL: postgresql+asyncpg://…
        "url": "",
        "busy_timeout_ms": 5000,  # SQLite: how long a writer waits for the file lock
        # FULL: an answer is given only once its decision is on stable storage (survives
        # power loss); the WAL flush runs after SQLite's write lock is let go.
        "sqlite_synchronous": "FULL",
        "pool_size": 10,  # PostgreSQL connections per process
        "timeout_s": 5.0,  # connect / lock / statement timeout: fail closed after this
        "migrate_on_start": True,
        # PostgreSQL: each creditor's dial decisions are chained on this many chains
        # (`<creditor>`, `<creditor>~1`, …; a case always on the same one), so unrelated
        # cases do not queue on one chain's lock to commit. Each chain verifies alone.
        "chain_shards": 1,
    },
    "http": {
        "host": "127.0.0.1",
        "port": 8080,
        # Processes answering HTTP on the one port (see dialer/workers.py): 1, or up to
        # the machine's cores; the first also runs the SIP gate, MQTT and background jobs.
        "workers": 1,
        # Addresses or networks of the reverse proxies in front of the service: only
        # from these is X-Forwarded-For believed (the client address in logs, the
        # recordings access log and the refusal limit). Empty: the peer is the client.
        "trusted_proxies": [],
    },
    "gate": {
        # How long a click-to-dial authorisation waits for the PBX to place the call
        # (the SIP gate matches it by attempt id or by agent and number in this window).
        "attempt_validity_s": 120,
        # Token → user cache. Every `dialgate users` change empties it at once in every
        # worker on the data directory (dialer.auth.UsersRevision) and, on PostgreSQL, in
        # every instance on any host (a NOTIFY in the change's transaction; untrusted
        # while the instance is not listening: dialer.auth.UserNotices). This bounds an
        # entry's life only when the database is changed by other means.
        "auth_cache_s": 10.0,
        # The recorder's "I can record" is trusted for this long (its check costs more
        # than a decision); "I cannot" is never reused. 0 = ask before every dial.
        "recorder_check_s": 1.0,
    },
    "log": {
        "level": "info",
        "json": True,
    },
    "audit": {
        # The evidence key (HMAC-SHA-256 over the decision log and the destruction
        # register, dialer/evidence.py): `key_env` names a variable holding it (64 hex
        # characters), else `key_file`; both empty: <data_dir>/keys/evidence.key,
        # created 0600. Keep it out of database backups: whoever has both can re-forge.
        "key_file": "",
        "key_env": "",
        # The current chain heads are appended (one JSON line) to this file every
        # `export_interval_s` by the primary process, so an outside copy anchors them.
        # Empty: <data_dir>/evidence-heads.jsonl. 0 turns the export off.
        "heads_file": "",
        "export_interval_s": 300.0,
    },
}

# Top-level sections other components own; kept raw, typed by their owners.
FOREIGN_SECTIONS: frozenset[str] = frozenset(
    {"policy", "sip", "mqtt", "recordings", "pbx", "console", "imports"}
)


@dataclass(frozen=True, slots=True)
class PathsConfig:
    data_dir: Path


@dataclass(frozen=True, slots=True)
class StoreConfig:
    url: str
    busy_timeout_ms: int
    sqlite_synchronous: str
    pool_size: int
    timeout_s: float
    migrate_on_start: bool
    chain_shards: int = 1

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def is_postgres(self) -> bool:
        return self.url.startswith("postgresql")


@dataclass(frozen=True, slots=True)
class HttpConfig:
    host: str
    port: int
    workers: int
    trusted_proxies: tuple[Any, ...] = ()  # ipaddress networks


@dataclass(frozen=True, slots=True)
class GateConfig:
    attempt_validity_s: int
    auth_cache_s: float
    recorder_check_s: float


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str
    json: bool


@dataclass(frozen=True, slots=True)
class AuditConfig:
    key_file: str
    key_env: str
    heads_file: str
    export_interval_s: float


@dataclass(frozen=True, slots=True)
class Config:
    paths: PathsConfig
    store: StoreConfig
    http: HttpConfig
    gate: GateConfig
    log: LogConfig
    audit: AuditConfig = AuditConfig("", "", "", 300.0)
    source: str = "<defaults>"
    raw_sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def section(self, name: str) -> Mapping[str, Any]:
        """A raw top-level table owned by another component (`{}` when absent)."""
        return self.raw_sections.get(name, MappingProxyType({}))

    @property
    def policy_table(self) -> dict[str, Any]:
        """The `[policy]` table as a plain (deep-copied) dict for `policy.load_policy`."""
        table: dict[str, Any] = _thaw(self.section("policy"))
        return table


_TYPED: dict[str, type] = {
    "paths": PathsConfig,
    "store": StoreConfig,
    "http": HttpConfig,
    "gate": GateConfig,
    "log": LogConfig,
    "audit": AuditConfig,
}


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Read `path` (or nothing: defaults only), apply the environment, and freeze.

    `overrides` (used by the CLI flags and tests) wins over everything.
    """
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{p}: config file not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
        source = str(p)
    return build_config(raw, env=env, overrides=overrides, source=source)


def build_config(
    raw: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    source: str = "<dict>",
) -> Config:
    env = {} if env is None else env
    merged: dict[str, dict[str, Any]] = copy.deepcopy(DEFAULTS)
    foreign: dict[str, Any] = {}
    for section, table in raw.items():
        if section in _TYPED:
            if not isinstance(table, Mapping):
                raise ConfigError(f"{source}: [{section}] must be a table")
            for key, value in table.items():
                if key not in merged[section]:
                    raise ConfigError(f"{source}: {section}.{key}: unknown key")
                merged[section][key] = value
        elif section in FOREIGN_SECTIONS:
            if not isinstance(table, Mapping):
                raise ConfigError(f"{source}: [{section}] must be a table")
            foreign[section] = copy.deepcopy(dict(table))
        else:
            raise ConfigError(f"{source}: [{section}]: unknown section")

    # The policy is read from the file alone: a rule set in the environment would
    # silently not apply, so it stops the start instead.
    for name in sorted(env):
        if name.startswith("DIALGATE_POLICY_"):
            raise ConfigError(
                f"environment {name}: [policy] is not read from the environment; set it in config.toml "
                "/ 拨打策略 [policy] 不从环境变量读取，请写入 config.toml"
            )
    # Environment overrides for typed keys: DIALGATE_STORE_URL → store.url.
    for section, table in merged.items():
        for key, default in table.items():
            name = f"DIALGATE_{section.upper()}_{key.upper()}"
            if name in env:
                table[key] = _from_env(name, env[name], default)
    for section, table in (overrides or {}).items():
        for key, value in table.items():
            if section not in merged or key not in merged[section]:
                raise ConfigError(f"override {section}.{key}: unknown key")
            merged[section][key] = value

    typed: dict[str, Any] = {}
    for section, cls in _TYPED.items():
        typed[section] = _make(cls, section, merged[section], source)

    paths: PathsConfig = typed["paths"]
    store: StoreConfig = typed["store"]
    if not store.url:
        store = StoreConfig(
            **{f.name: getattr(store, f.name) for f in fields(StoreConfig) if f.name != "url"},
            url=f"sqlite+aiosqlite:///{(paths.data_dir / 'dialgate.db').as_posix()}",
        )
    if not (store.is_sqlite or store.is_postgres):
        raise ConfigError(
            f"{source}: store.url: expected sqlite+aiosqlite://… or postgresql+asyncpg://…"
        )
    if not 1 <= store.chain_shards <= 64:
        raise ConfigError(f"{source}: store.chain_shards: expected 1 to 64 chains per creditor")
    if not 0 <= typed["gate"].recorder_check_s <= 60:
        raise ConfigError(f"{source}: gate.recorder_check_s: expected 0 to 60 seconds")
    if not 1 <= typed["http"].workers <= 64:
        raise ConfigError(f"{source}: http.workers: expected 1 to 64 processes")
    http = typed["http"]
    proxies = http.trusted_proxies
    if isinstance(proxies, str):  # from the environment: comma-separated
        proxies = [p for p in proxies.split(",") if p.strip()]
    if not isinstance(proxies, (list, tuple)) or not all(isinstance(p, str) for p in proxies):
        raise ConfigError(f"{source}: http.trusted_proxies: expected a list of addresses or networks")
    try:
        networks = tuple(ipaddress.ip_network(p.strip(), strict=False) for p in proxies)
    except ValueError as exc:
        raise ConfigError(f"{source}: http.trusted_proxies: {exc}") from exc
    http = HttpConfig(host=http.host, port=http.port, workers=http.workers, trusted_proxies=networks)
    if typed["audit"].export_interval_s < 0:
        raise ConfigError(f"{source}: audit.export_interval_s: expected 0 (off) or more seconds")
    # OFF would let a power loss take committed attempts with it: the caps would then count too few.
    if store.sqlite_synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
        raise ConfigError(f"{source}: store.sqlite_synchronous: expected NORMAL, FULL or EXTRA")
    return Config(
        paths=paths,
        store=store,
        http=http,
        gate=typed["gate"],
        log=typed["log"],
        audit=typed["audit"],
        source=source,
        raw_sections=MappingProxyType({k: _freeze(v) for k, v in foreign.items()}),
    )


def _make(cls: type, section: str, values: Mapping[str, Any], source: str) -> Any:
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        value = values[f.name]
        default = DEFAULTS[section][f.name]
        where = f"{source}: {section}.{f.name}"
        if f.name == "data_dir":
            if not isinstance(value, (str, Path)):
                raise ConfigError(f"{where}: expected a path string")
            value = Path(value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: expected true or false, got {value!r}")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{where}: expected an integer, got {value!r}")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}: expected a number, got {value!r}")
            value = float(value)
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise ConfigError(f"{where}: expected a string, got {value!r}")
        kwargs[f.name] = value
    return cls(**kwargs)


def _from_env(name: str, text: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError as exc:
        raise ConfigError(f"environment {name}: {exc}") from exc
    return text


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


def read_secret(table: Mapping[str, Any], key: str, *, env: Mapping[str, str] | None = None) -> str | None:
    """Resolve `<key>_file` or `<key>_env` of a raw section; secrets are never inline."""
    env = os.environ if env is None else env
    if f"{key}_file" in table:
        return Path(str(table[f"{key}_file"])).read_text(encoding="utf-8").strip()
    if f"{key}_env" in table:
        return env.get(str(table[f"{key}_env"]))
    if key in table:
        raise ConfigError(f"{key}: secrets are not written in the config; use {key}_file or {key}_env")
    return None
