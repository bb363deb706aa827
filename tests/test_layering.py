"""The layers: the plain-torch package ``srsnn`` imports no Lightning and none of the layers above it; the entry
points (``srsnn_cli``) sit on top; no package imports another that imports it back."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("srsnn", "datamodules", "lightning_modules", "callbacks", "srsnn_cli")
# what each first-party package may import (directly, at any depth of its modules, lazily or not)
ALLOWED = {
    "srsnn": {"srsnn"},
    "datamodules": {"datamodules", "srsnn"},
    "lightning_modules": {"lightning_modules", "srsnn", "datamodules"},
    "callbacks": {"callbacks", "srsnn", "lightning_modules", "datamodules"},
    "srsnn_cli": set(PACKAGES),
}


def _imports(path: Path) -> set[str]:
    """The first-party top-level packages a module imports (every import statement, inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_each_package_imports_only_the_layers_below_it():
    wrong = []
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            for dep in _imports(f) & set(PACKAGES) - ALLOWED[pkg]:
                wrong.append(f"{f.relative_to(ROOT)} imports {dep}")
            if pkg == "srsnn" and "lightning" in _imports(f):
                wrong.append(f"{f.relative_to(ROOT)} imports lightning")
    assert not wrong, wrong


def test_the_plain_torch_package_loads_no_lightning():
    code = (
        "import sys, srsnn.snn.conversion, srsnn.snn.network, srsnn.snn.native, srsnn.robustness.runner, "
        "srsnn.robustness.audit, srsnn.pruning.masks, srsnn.export.compact, srsnn.export.nir, srsnn.report, "
        "srsnn.io.plan\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('lightning', 'pytorch_lightning', 'lightning_modules', 'callbacks', 'datamodules', 'srsnn_cli'))\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_no_import_cycle_between_modules():
    """A module-level import graph over every first-party module (imports at the top of a module, where a cycle
    breaks loading) has no cycle."""
    modules = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = f
    graph = {}
    for name, f in modules.items():
        deps = set()
        is_pkg = f.name == "__init__.py"
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                    base = ".".join(parts + ([base] if base else []))
                deps |= {f"{base}.{a.name}" for a in node.names} | {base}
        graph[name] = {d for d in deps if d in modules and d != name}
    state: dict[str, int] = {}

    def visit(n, stack):
        state[n] = 1
        for d in graph[n]:
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d) :] + [d]))
            if d not in state:
                visit(d, stack + [d])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])


def test_no_function_is_over_60_lines():
    """A function longer than a screen is split into named steps (the library, the Lightning layer, the entry
    points)."""
    long = []
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                    long.append(
                        f"{f.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})"
                    )
    assert not long, long
