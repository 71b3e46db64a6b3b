"""The runtime's shape, as alexnet_kit/__init__.py states it: imports form no cycle (imports inside
functions counted, type-only ones not), only cli/ reaches the stages, the foundations stay torch-free,
and no function runs over 60 lines."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT

PACKAGE = ROOT / "alexnet_kit"
STAGES = ("train", "export", "apps")
FOUNDATIONS = ("errors", "fsutil", "imagefiles", "paths", "settings", "config", "interrupt")


def modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The alexnet_kit modules (and stages) ``name`` imports, at module level or in functions."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):  # `if TYPE_CHECKING:` imports are for the type checker only
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            targets = [f"{target}.{a.name}" for a in node.names] + [target]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known and not t.startswith(tuple(f"alexnet_kit.{s}" for s in STAGES)):
                t = t.rpartition(".")[0]
            if t and t != name and not name.startswith(t + "."):  # its own package runs first anyway
                out.add(t)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}


def test_the_runtime_imports_form_no_cycle(graph):
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(t):] + [t]) if t in path else t)
            if t in graph and not state.get(t):
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if not state.get(m):
            visit(m, [m])


def test_only_the_cli_reaches_the_stages(graph):
    stage = tuple(f"alexnet_kit.{s}" for s in STAGES)
    reaching = sorted(m for m, targets in graph.items() if any(t.startswith(stage) for t in targets))
    assert reaching and all(m.startswith("alexnet_kit.cli.") for m in reaching), reaching


def test_the_foundations_and_the_cli_parser_load_no_torch():
    code = ("import sys, importlib; [importlib.import_module('alexnet_kit.' + m) for m in %r]; "
            "from alexnet_kit.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))" % (FOUNDATIONS,))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_no_function_runs_over_60_lines():
    long = []
    for folder in ("alexnet_kit", *STAGES, "scripts"):
        for f in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                    long.append(f"{f.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long
