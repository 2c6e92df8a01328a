"""The policy core is pure: standard library, phonenumbers and holidays (lunar dates) only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

POLICY_DIR = Path(__file__).resolve().parents[3] / "policy"
ALLOWED_THIRD_PARTY = {"phonenumbers", "holidays"}
FORBIDDEN = ("dialer", "adapters", "recordings")
NO_IO_OR_CLOCK = ("asyncio", "sqlalchemy", "socket", "os", "time", "random")


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_policy_modules_import_only_the_standard_library_and_their_two_data_libraries() -> None:
    files = sorted(POLICY_DIR.glob("*.py"))
    assert len(files) >= 6
    stdlib = set(sys.stdlib_module_names)
    for path in files:
        for root in imported_roots(path):
            assert root not in FORBIDDEN, f"{path.name} imports {root}"
            assert root not in NO_IO_OR_CLOCK, f"{path.name} imports {root}"
            assert root in stdlib or root in ALLOWED_THIRD_PARTY, f"{path.name} imports {root}"


def test_importing_policy_loads_nothing_from_the_application_or_the_adapters() -> None:
    code = (
        "import sys, policy; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dialer', 'adapters', 'recordings')); "
        "print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == ""


def test_the_core_never_reads_the_clock() -> None:
    for path in sorted(POLICY_DIR.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        for call in ("datetime.now(", "date.today(", "datetime.utcnow(", "time.time("):
            assert call not in text, f"{path.name} calls {call}"
