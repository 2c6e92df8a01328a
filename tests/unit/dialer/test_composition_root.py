"""The application's wiring: one composition root, no import cycles through it, and the
services it builds from what the caller passes in."""

from __future__ import annotations

import ast
from datetime import datetime, timezone
from pathlib import Path

from dialer.bootstrap import bootstrap, extensions, routers
from dialer.clock import FixedClock
from dialer.config import build_config
from dialer.leadership import StaticLeadership
from dialer.services import Services

REPO = Path(__file__).resolve().parents[3]


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the nodes under `if TYPE_CHECKING:`, which never run."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def imports_of(path: Path, *, at_run_time: bool = False) -> set[str]:
    """Every module `path` imports, at the top or inside a function; `at_run_time`
    leaves out the imports only a type checker reads."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_only(tree) if at_run_time else set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def dialer_modules() -> dict[str, Path]:
    modules = {}
    for path in sorted((REPO / "dialer").rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


def test_only_the_composition_root_imports_adapters_from_the_application() -> None:
    importing = {
        str(path.relative_to(REPO))
        for path in dialer_modules().values()
        if any(m == "adapters" or m.startswith("adapters.") for m in imports_of(path))
    }
    assert importing == {"dialer/bootstrap.py"}


def test_no_module_of_the_http_layer_or_the_console_imports_the_app_or_the_root() -> None:
    offenders = {
        name: sorted(imports_of(path) & {"dialer.app", "dialer.bootstrap"})
        for name, path in dialer_modules().items()
        if name.startswith(("dialer.http", "dialer.console", "dialer.services"))
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_application_modules_import_one_another_without_a_cycle() -> None:
    modules = dialer_modules()
    graph = {
        # A package's own __init__ runs before its modules anyway: not an edge.
        # Annotations may name each other both ways; what runs at import may not.
        name: {m for m in imports_of(path, at_run_time=True) if m in modules and m != name and not name.startswith(m + ".")}
        for name, path in modules.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_bootstrap_wires_the_gate_over_the_store_and_clock_it_was_given(tmp_path: Path) -> None:
    class GivenStore:
        pass

    store = GivenStore()
    clock = FixedClock(datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc))
    services = bootstrap(build_config({"paths": {"data_dir": str(tmp_path)}}), store=store, clock=clock)  # type: ignore[arg-type]
    assert isinstance(services, Services)
    assert services.store is store and services.gate.store is store and services.auth.store is store
    assert services.clock is clock and services.gate.clock is clock
    assert (services.vault, services.sip, services.mqtt, services.pbx, services.imports) == (None,) * 5


def test_an_attached_pbx_places_the_gates_calls_and_detaching_it_leaves_authorise_only(tmp_path: Path) -> None:
    class Placing:
        def admit(self) -> None:
            return None

        async def originate(self, attempt: object) -> None:
            return None

        def health(self) -> dict[str, object]:
            return {"mode": "sip_ua"}

    services = bootstrap(build_config({"paths": {"data_dir": str(tmp_path)}}),
                         clock=FixedClock(datetime(2026, 11, 24, tzinfo=timezone.utc)))
    pbx = Placing()
    services.attach_pbx(pbx)
    assert services.pbx is pbx and services.gate.pbx is pbx
    services.attach_pbx(None)
    assert services.pbx is None and type(services.gate.pbx).__name__ == "NonePbx"


def test_every_router_and_extension_is_named_once_and_the_once_only_ones_say_where_they_run() -> None:
    mounted = routers()
    assert len({id(r) for r in mounted}) == len(mounted)
    assert any(route.path == "/v1/dials" for r in mounted for route in r.routes)  # type: ignore[attr-defined]
    assert any(route.path.startswith("/console") for r in mounted for route in r.routes)  # type: ignore[attr-defined]
    runs = {ext.name: ext.runs for ext in extensions()}
    assert len(runs) == len(extensions())
    assert runs["sip-gate"] == "primary"
    assert {name for name, where in runs.items() if where == "leader"} == {"pbx", "mqtt", "recordings-jobs"}


def test_a_lone_sqlite_instance_leads_without_waiting_for_a_round() -> None:
    leadership = StaticLeadership(True, "gate-1")
    assert leadership.asked.is_set() and leadership.token == 1
