"""Imports run one way: entry points -> export -> inference -> engine -> strategies -> tasks -> data, nn -> config,
handover -> core. The test reads every module's imports (function-level ones and those under
``if TYPE_CHECKING:`` too) and fails on a cycle or on a module importing a higher layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "siteflow"

LAYERS = [
    ("core",),
    ("config", "handover"),
    ("datasets", "models", "losses", "metrics", "kernels", "_C"),
    ("tasks", "privacy"),
    ("strategies",),
    ("engine",),
    ("inference",),
    ("export",),
    ("deploy", "cli", "reporting", "study"),
]
"""Sub-packages of siteflow from the lowest layer to the highest."""


def layer_of(module: str) -> int:
    """The layer of ``siteflow.<package>...``; the package root itself is below everything."""
    parts = module.split(".")
    if len(parts) == 1:
        return -1
    for index, packages in enumerate(LAYERS):
        if parts[1] in packages:
            return index
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS")


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules that module ``name`` imports (siteflow's by module name), wherever the
    import stands: at the top, in a function, or under ``if TYPE_CHECKING:`` (an import for
    type hints only still ties the two modules together)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
    return found


@pytest.fixture(scope="module")
def all_imports() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


@pytest.fixture(scope="module")
def graph(all_imports) -> dict[str, set[str]]:
    """siteflow module -> the siteflow modules it imports."""
    known = set(all_imports) | {"siteflow._C"}
    return {name: {t for t in targets if t in known} for name, targets in all_imports.items()}


def test_the_graph_is_read(graph):
    assert "siteflow.strategies.federated.fedavg" in graph
    assert "siteflow.strategies.federated.base" in graph["siteflow.strategies.federated.fedavg"]
    assert "siteflow.core.registry" in graph["siteflow.config.loading"]


def test_no_module_imports_a_higher_layer(graph):
    upward = [
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    ]
    assert not upward, "\n".join(upward)


def test_there_is_no_import_cycle(graph):
    cycles = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not cycles, "\n".join(cycles)


def loaded_imports(path: Path) -> set[str]:
    """The absolute imports of a module that load something when they run: all but those under
    ``if TYPE_CHECKING:`` (type hints only; siteflow.core.pictures names matplotlib's Figure so)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.add(node.module or "")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


@pytest.mark.parametrize("package", ["core", "config", "handover"])
def test_the_low_layers_import_no_lightning_and_no_plotting(package):
    checked = 0
    for module, path in modules().items():
        if module.startswith(f"siteflow.{package}"):
            checked += 1
            heavy = {t for t in loaded_imports(path) if t.split(".")[0] in ("pytorch_lightning", "lightning", "matplotlib", "flwr")}
            assert not heavy, f"{module} imports {heavy}"
    assert checked > 1


def test_an_import_for_type_hints_only_loads_nothing():
    assert "matplotlib.figure" in imports("siteflow.core.pictures", PACKAGE / "core" / "pictures.py", set())
    assert "matplotlib.figure" not in loaded_imports(PACKAGE / "core" / "pictures.py")
    assert "siteflow.core.atomic" in loaded_imports(PACKAGE / "core" / "pictures.py")


def test_no_module_switches_the_plotting_backend_at_import():
    for module, path in modules().items():
        assert "matplotlib.use(" not in path.read_text(), module
