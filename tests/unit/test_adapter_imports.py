"""Adapters touch the outside and nothing of each other: no module under `adapters/<x>/`
imports another adapter package or the HTTP layer (the composition root wires them)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ADAPTERS = Path(__file__).resolve().parents[2] / "adapters"
PACKAGES = sorted(p.name for p in ADAPTERS.iterdir() if (p / "__init__.py").exists())


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def _foreign(package: str, name: str) -> bool:
    if name == "dialer.http" or name.startswith("dialer.http."):
        return True
    parts = name.split(".")
    return parts[0] == "adapters" and (len(parts) < 2 or parts[1] != package)


def test_the_adapter_packages_are_found() -> None:
    assert {"db", "mqtt", "pbx", "sip", "storage"} <= set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_an_adapter_imports_no_other_adapter_and_no_http_code(package: str) -> None:
    found = {
        f"{path.relative_to(ADAPTERS.parent)}: {name}"
        for path in (ADAPTERS / package).rglob("*.py")
        for name in _imports(path)
        if _foreign(package, name)
    }
    assert sorted(found) == []
