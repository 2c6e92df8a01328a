"""The web console for QA and compliance, served by the gate service under `/console`.

`console_router(queries, settings)` is the one thing the composition root includes;
`ConsoleQueries` (ports.py) is what it needs from the store and the vault.
"""

from dialer.console.ports import ConsoleQueries, Principal
from dialer.console.router import ConsoleSettings, console_router
from dialer.console.security import load_or_create_secret

__all__ = ["ConsoleQueries", "ConsoleSettings", "Principal", "console_router", "load_or_create_secret"]
