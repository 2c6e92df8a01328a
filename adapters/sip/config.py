"""The ``[sip]`` section of ``config.toml``, validated into a frozen dataclass.

The service's config loader keeps unknown top-level sections as raw tables; the SIP gate
reads its own here. Keys (exactly as documented in the README)::

    [sip]
    listen = "127.0.0.1:5070"                  # UDP and TCP
    route = "sip:{number}@127.0.0.1:5080"      # Contact of a 302 for an allowed call
    trusted_peers = ["127.0.0.1", "10.1.2.0/24"] # the PBX/proxy: the only sources answered
    [sip.extensions]
    "1001" = "a1"                              # calling extension -> agent id
    [sip.registered_lines]
    bank-a = ["+862161234567", "1001"]         # a creditor's registered caller lines

and ``edge = "process"`` (default: the listener runs in a child process and the
service only decides; see ``edge.py``) or ``"inline"`` (it runs on the service's own
event loop: one process, about half the capacity).

``trusted_peers`` (addresses or CIDR networks) is required whenever ``listen`` is set:
a datagram or TCP connection from any other address is dropped unanswered and never
decided (see ``adapters/sip/README.md`` for why no 403).

A wrong value or an unknown key raises :class:`SipConfigError` naming its key path
(``sip.registered_lines.bank-a[1]``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from policy.model import CREDITOR_ID

DEFAULT_LISTEN = "127.0.0.1:5070"
DEFAULT_ROUTE = "sip:{number}@127.0.0.1:5080"

_KNOWN_KEYS = frozenset({"listen", "route", "extensions", "registered_lines", "edge", "trusted_peers"})
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
EDGE_MODES = ("inline", "process")


class SipConfigError(ValueError):
    """A ``[sip]`` value is wrong; ``path`` is its key path."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True, slots=True)
class SipConfig:
    host: str = "127.0.0.1"
    port: int = 5070
    route: str = DEFAULT_ROUTE
    extensions: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    registered_lines: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))
    edge: str = "process"  # the listener in a child process (adapters/sip/edge.py); "inline": in the service
    # the only sources answered (the PBX, its proxies); loopback when no [sip] table set it
    trusted_peers: tuple[Network, ...] = LOOPBACK

    def trusts(self, address: str) -> bool:
        """Whether a datagram or connection from ``address`` may be answered."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.trusted_peers)

    @property
    def listen(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def contact_for(self, number: str) -> str:
        """The Contact value of a 302 for ``number`` (always in ``<>``)."""
        uri = self.route.strip()
        if uri.startswith("<") and uri.endswith(">"):
            uri = uri[1:-1]
        return f"<{uri.replace('{number}', number)}>"


def parse_listen(value: Any, path: str = "sip.listen") -> tuple[str, int]:
    if not isinstance(value, str) or not value.strip():
        raise SipConfigError(path, f"expected 'host:port' as a string, got {value!r}")
    text = value.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
    else:
        host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise SipConfigError(path, f"expected 'host:port' (e.g. '127.0.0.1:5070'), got {value!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not all(ch.isalnum() or ch in "-." for ch in host):
            raise SipConfigError(path, f"{host!r} is neither an IP address nor a host name") from None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SipConfigError(path, f"port must be 1-65535, got {port_text!r}")
    return host, int(port_text)


def parse_route(value: Any, path: str = "sip.route") -> str:
    if not isinstance(value, str):
        raise SipConfigError(path, f"expected a SIP URI template string, got {value!r}")
    text = value.strip()
    inner = text[1:-1] if text.startswith("<") and text.endswith(">") else text
    if not (inner.startswith("sip:") or inner.startswith("sips:")):
        raise SipConfigError(path, f"must be a sip: or sips: URI, got {value!r}")
    if inner.count("{number}") != 1:
        raise SipConfigError(path, "must contain the placeholder {number} exactly once")
    rest = inner.replace("{number}", "")
    if "{" in rest or "}" in rest:
        raise SipConfigError(path, "only the placeholder {number} is allowed")
    if any(ch in inner for ch in " \t\r\n<>\"") :
        raise SipConfigError(path, f"must not contain spaces, quotes or <> inside the URI, got {value!r}")
    return text


def parse_trusted_peers(value: Any, path: str = "sip.trusted_peers") -> tuple[Network, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise SipConfigError(path, "expected a non-empty list of addresses or CIDR networks (the PBX and its proxies)")
    nets: list[Network] = []
    for i, item in enumerate(value):
        try:
            if not isinstance(item, str):
                raise ValueError
            nets.append(ipaddress.ip_network(item.strip(), strict=True))
        except ValueError:
            raise SipConfigError(f"{path}[{i}]", f"expected an IP address or a network like '10.1.2.0/24', got {item!r}") from None
    return tuple(nets)


def load_sip_config(raw: Mapping[str, Any] | None) -> SipConfig:
    """Validate the raw ``[sip]`` table (as parsed by tomllib) into a :class:`SipConfig`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise SipConfigError("sip", f"expected a table, got {type(raw).__name__}")
    for key in raw:
        if key not in _KNOWN_KEYS:
            raise SipConfigError(f"sip.{key}", f"unknown key (known: {', '.join(sorted(_KNOWN_KEYS))})")
    host, port = parse_listen(raw.get("listen", DEFAULT_LISTEN))
    if "trusted_peers" in raw:
        trusted = parse_trusted_peers(raw["trusted_peers"])
    elif "listen" in raw:
        # gating is on: which hosts may ask must be said, never assumed
        raise SipConfigError("sip.trusted_peers", "required when sip.listen is set: the PBX/proxy addresses or networks")
    else:
        trusted = LOOPBACK
    route = parse_route(raw.get("route", DEFAULT_ROUTE))
    edge = raw.get("edge", "process")
    if edge not in EDGE_MODES:
        raise SipConfigError("sip.edge", f"expected one of {', '.join(map(repr, EDGE_MODES))}, got {edge!r}")

    ext_raw = raw.get("extensions", {})
    if not isinstance(ext_raw, Mapping):
        raise SipConfigError("sip.extensions", "expected a table of extension = agent id")
    extensions: dict[str, str] = {}
    for ext, agent in ext_raw.items():
        p = f"sip.extensions.{ext}"
        if not isinstance(ext, str) or not ext.strip():
            raise SipConfigError(p, "extension must be a non-empty string")
        if not isinstance(agent, str) or not agent.strip():
            raise SipConfigError(p, f"agent id must be a non-empty string, got {agent!r}")
        extensions[ext.strip()] = agent.strip()

    lines_raw = raw.get("registered_lines", {})
    if not isinstance(lines_raw, Mapping):
        raise SipConfigError("sip.registered_lines", "expected a table of creditor = [lines]")
    registered: dict[str, frozenset[str]] = {}
    for creditor, lines in lines_raw.items():
        p = f"sip.registered_lines.{creditor}"
        if not isinstance(creditor, str) or not CREDITOR_ID.match(creditor):
            # Cases carry no other spelling: the list would never apply, and with
            # allow_unregistered_lines the creditor's calls would pass from any line.
            raise SipConfigError(p, "creditor id as cases carry it: lower-case letters, digits, '.', '_' or '-'"
                                    " (委托方编号须与案件中的写法一致：小写字母、数字、'.'、'_'、'-')")
        if not isinstance(lines, (list, tuple)):  # tuple: the service's frozen config
            raise SipConfigError(p, f"expected a list of caller lines, got {type(lines).__name__}")
        clean: set[str] = set()
        for i, line in enumerate(lines):
            if not isinstance(line, str) or not line.strip():
                raise SipConfigError(f"{p}[{i}]", f"expected a non-empty string, got {line!r}")
            clean.add(line.strip())
        registered[str(creditor)] = frozenset(clean)
    return SipConfig(
        host=host,
        port=port,
        route=route,
        extensions=MappingProxyType(extensions),
        registered_lines=MappingProxyType(registered),
        edge=edge,
        trusted_peers=trusted,
    )
