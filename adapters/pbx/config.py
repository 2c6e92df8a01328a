"""`[pbx]` in config.toml: which PBX adapter, and the SIP account of `sip_ua`.

```toml
[pbx]
mode = "sip_ua"                 # "none" (default: authorise, the agent's phone dials)
max_bridged_calls = 6           # below bench/bridge_bench.py's figure for this machine
agent_ring_timeout = 30         # seconds
callee_ring_timeout = 45
gil_switch_ms = 1.0             # CPython GIL hand-over for real-time audio threads
[pbx.sip_ua]
server = "127.0.0.1:5060"       # the PBX (registrar / outbound proxy)
username = "dialgate"
password_env = "DIALGATE_PBX_PASSWORD"   # or password_file = "/run/secrets/pbx"; never inline
local = "127.0.0.1:5062"        # our SIP socket
rtp_ports = "20000-20999"
register_timeout = 3
[pbx.extensions]                # agent id → extension; default: [sip.extensions] inverted
"col-a" = "1001"
```
A wrong key or value is refused with its path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from adapters.pbx.sip_ua import SipUaConfig


class PbxConfigError(ValueError):
    pass


_TOP = {"mode", "max_bridged_calls", "agent_ring_timeout", "callee_ring_timeout", "gil_switch_ms", "sip_ua", "extensions"}
_UA = {"server", "username", "password_env", "password_file", "local", "rtp_ports", "register_timeout", "register_expires"}


@dataclass(frozen=True)
class PbxConfig:
    mode: str = "none"
    max_bridged_calls: int = 6
    agent_ring_timeout: float = 30.0
    callee_ring_timeout: float = 45.0
    gil_switch_ms: float | None = 1.0
    ua: SipUaConfig | None = None
    extensions: Mapping[str, str] = field(default_factory=dict)  # agent id → extension


def _hostport(value: Any, path: str) -> tuple[str, int]:
    if not isinstance(value, str) or ":" not in value:
        raise PbxConfigError(f"{path}: expected \"host:port\", got {value!r}")
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) < 65536 or not host:
        raise PbxConfigError(f"{path}: expected \"host:port\", got {value!r}")
    return host, int(port)


def _number(value: Any, path: str, *, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise PbxConfigError(f"{path}: expected a number >= {minimum:g}, got {value!r}")
    return float(value)


def parse_pbx_config(raw: Mapping[str, Any], sip: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> PbxConfig:
    environ = os.environ if environ is None else environ
    unknown = set(raw) - _TOP
    if unknown:
        raise PbxConfigError(f"pbx: unknown key(s) {', '.join(sorted(unknown))}")
    mode = raw.get("mode", "none")
    if mode not in ("none", "sip_ua"):
        raise PbxConfigError(f"pbx.mode: expected \"none\" or \"sip_ua\", got {mode!r}")
    max_calls = raw.get("max_bridged_calls", 6)
    if isinstance(max_calls, bool) or not isinstance(max_calls, int) or max_calls < 1:
        raise PbxConfigError(f"pbx.max_bridged_calls: expected an integer >= 1, got {max_calls!r}")
    agent_t = _number(raw.get("agent_ring_timeout", 30), "pbx.agent_ring_timeout", minimum=1)
    callee_t = _number(raw.get("callee_ring_timeout", 45), "pbx.callee_ring_timeout", minimum=1)
    gil = raw.get("gil_switch_ms", 1.0)
    gil = None if gil in (None, 0) else _number(gil, "pbx.gil_switch_ms", minimum=0.1)

    extensions: dict[str, str] = {}
    for ext, agent in dict((sip or {}).get("extensions", {}) or {}).items():
        extensions.setdefault(str(agent), str(ext))
    for agent, ext in dict(raw.get("extensions", {}) or {}).items():
        if not isinstance(ext, str) or not ext:
            raise PbxConfigError(f"pbx.extensions.{agent}: expected an extension string, got {ext!r}")
        extensions[str(agent)] = ext

    ua = None
    if mode == "sip_ua":
        table = raw.get("sip_ua")
        if not isinstance(table, Mapping):
            raise PbxConfigError("pbx.sip_ua: required when pbx.mode = \"sip_ua\"")
        if "password" in table:
            raise PbxConfigError("pbx.sip_ua.password: never inline a secret; use password_env or password_file")
        unknown = set(table) - _UA
        if unknown:
            raise PbxConfigError(f"pbx.sip_ua: unknown key(s) {', '.join(sorted(unknown))}")
        host, port = _hostport(table.get("server"), "pbx.sip_ua.server")
        lhost, lport = _hostport(table.get("local", "127.0.0.1:5062"), "pbx.sip_ua.local")
        rtp = str(table.get("rtp_ports", "20000-20999"))
        low, sep, high = rtp.partition("-")
        if not (sep and low.isdigit() and high.isdigit() and 1024 <= int(low) <= int(high) < 65536):
            raise PbxConfigError(f"pbx.sip_ua.rtp_ports: expected \"low-high\" above 1023, got {rtp!r}")
        password = ""
        if "password_file" in table:
            try:
                password = Path(str(table["password_file"])).read_text().strip()
            except OSError as exc:
                raise PbxConfigError(f"pbx.sip_ua.password_file: cannot read it: {exc.strerror}") from exc
        elif "password_env" in table:
            name = str(table["password_env"])
            if name not in environ:
                raise PbxConfigError(f"pbx.sip_ua.password_env: environment variable {name} is not set")
            password = environ[name]
        username = table.get("username", "dialgate")
        if not isinstance(username, str) or not username.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise PbxConfigError(f"pbx.sip_ua.username: expected a SIP user name, got {username!r}")
        ua = SipUaConfig(
            server=host, port=port, username=username, password=password, local_ip=lhost, local_port=lport,
            rtp_port_low=int(low), rtp_port_high=int(high),
            register_timeout=_number(table.get("register_timeout", 3), "pbx.sip_ua.register_timeout", minimum=0.1),
            register_expires=int(_number(table.get("register_expires", 600), "pbx.sip_ua.register_expires", minimum=30)),
        )
    return PbxConfig(mode, max_calls, agent_t, callee_t, gil, ua, extensions)
