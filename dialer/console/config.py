"""The `[console]` configuration section, checked strictly like the service's own.

    [console]
    display_tz = "Asia/Shanghai"   # times and day boundaries on the pages
    session_ttl_s = 28800          # a sign-in lasts 8 hours
    idle_s = 1800                  # … and ends after 30 minutes without a request (shared PCs)
    page_size = 50                 # rows per page of the blocked-dial table
    default_days = 30              # the blocked-dial view opens on the last N days
    secret_file = ""               # the signing secret; empty: <data_dir>/console-secret.key (0600, created)
    secret_env = ""                # or the name of an environment variable holding it

Environment: `DIALGATE_CONSOLE_SECRET` / `DIALGATE_CONSOLE_SECRET_FILE` override both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dialer.console.router import ConsoleSettings
from dialer.console.security import SecretError, load_or_create_secret

DEFAULTS: Mapping[str, Any] = {
    "display_tz": "Asia/Shanghai",
    "session_ttl_s": 8 * 3600,
    "idle_s": 30 * 60,
    "page_size": 50,
    "default_days": 30,
    "secret_file": "",
    "secret_env": "",
}


class ConsoleConfigError(ValueError):
    """A `[console]` key is unknown or has a wrong value; the message names it."""


def console_settings(section: Mapping[str, Any], data_dir: Path, env: Mapping[str, str] | None = None) -> ConsoleSettings:
    env = dict(os.environ if env is None else env)
    for key in section:
        if key not in DEFAULTS:
            raise ConsoleConfigError(f"console.{key}: unknown key (known: {', '.join(DEFAULTS)})")
    cfg = {**DEFAULTS, **section}
    try:
        tz = ZoneInfo(str(cfg["display_tz"]))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConsoleConfigError(f"console.display_tz: unknown time zone {cfg['display_tz']!r}") from exc
    for key, lo, hi in (("session_ttl_s", 300, 7 * 86400), ("idle_s", 60, 7 * 86400), ("page_size", 10, 500),
                        ("default_days", 1, 366)):
        v = cfg[key]
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ConsoleConfigError(f"console.{key}: expected a whole number from {lo} to {hi}, got {v!r}")
    if cfg["secret_env"] and "DIALGATE_CONSOLE_SECRET" not in env:
        value = env.get(str(cfg["secret_env"]))
        if not value:
            raise ConsoleConfigError(f"console.secret_env: environment variable {cfg['secret_env']} is not set")
        env["DIALGATE_CONSOLE_SECRET"] = value
    if cfg["secret_file"] and "DIALGATE_CONSOLE_SECRET_FILE" not in env:
        env["DIALGATE_CONSOLE_SECRET_FILE"] = str(cfg["secret_file"])
    try:
        secret = load_or_create_secret(data_dir, env)
    except SecretError as exc:
        raise ConsoleConfigError(f"console secret: {exc}") from exc
    return ConsoleSettings(
        secret=secret, display_tz=tz, session_ttl_s=cfg["session_ttl_s"], idle_s=cfg["idle_s"],
        page_size=cfg["page_size"], default_days=cfg["default_days"],
    )
