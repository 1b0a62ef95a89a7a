"""The package's layering, read from its source: imports point one way (no cycle, nothing
outside ros/ and cli/ imports metaseg_ros.ros), modules stay a size a newcomer reads in one
sitting, and the settings table can be read without loading torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.torch_free  # reads the sources only (and starts Pythons without torch)
PACKAGE = Path(__file__).resolve().parents[1] / "metaseg_ros"
MAX_LINES = 400
# A module may be longer when its docstring says why, with this phrase.
LENGTH_REASON = "Longer than 400 lines because"


def module_files() -> dict[str, Path]:
    """Every module of the source tree by dotted name (packages by their __init__)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its file (inside functions and
    TYPE_CHECKING blocks too: an import there still fixes a direction)."""
    modules = module_files()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for full in imported:
                if full.startswith("metaseg_ros."):
                    target = resolve(full)
                    if target is not None and target != name:
                        targets.add(target)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_function_level_imports() -> None:
    graph = import_graph()
    assert len(graph) > 60
    # build_video_source imports each source kind inside the function (optional packages).
    assert "metaseg_ros.data.bag_reader" in graph["metaseg_ros.data.sources"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_only_ros_and_cli_import_the_ros_layer() -> None:
    offenders = [f"{module} -> {target}" for module, targets in import_graph().items()
                 for target in targets
                 if target.startswith("metaseg_ros.ros")
                 and not module.startswith(("metaseg_ros.ros", "metaseg_ros.cli"))]
    assert offenders == []


def test_modules_are_readable_in_one_sitting() -> None:
    too_long = []
    for name, path in module_files().items():
        text = path.read_text()
        lines = text.count("\n")
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if lines > MAX_LINES and LENGTH_REASON not in docstring:
            too_long.append(f"{name}: {lines} lines")
    assert too_long == []


def test_settings_are_read_without_torch() -> None:
    """The node's parameter table is built from these modules: no torch import for it."""
    code = ("import sys\n"
            "import metaseg_ros.settings, metaseg_ros.inference.settings\n"
            "import metaseg_ros.tracking.config\n"
            "print('torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"


def test_parameter_table_is_read_without_torch() -> None:
    pytest.importorskip("rclpy")
    code = ("import sys\n"
            "from metaseg_ros.ros.parameters import PARAMETERS\n"
            "print(len(PARAMETERS), 'torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    count, torch_loaded = result.stdout.split()
    assert int(count) > 30 and torch_loaded == "False"
