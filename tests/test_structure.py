"""The package's shape: imports only point down the layers, no cycles (function-level imports
included), no module over 400 lines, and the controller's config check does not need torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "layernas"

# Lower layers never import higher ones; a layer may import itself and anything below.
LAYERS = ["core", "store", "evaluate", "detect", "workflow", "bench", "examples", "cli"]
MAX_LINES = 400


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def imports_of(path: Path, name: str) -> set[str]:
    """Every layernas module ``path`` imports, at any depth of the file (function-level too)."""
    out: set[str] = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("layernas")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("layernas"):
                out.add(mod)
                out |= {f"{mod}.{a.name}" for a in node.names}
    return out


def graph() -> dict[str, set[str]]:
    mods = all_modules()
    return {name: {m for m in imports_of(path, name) if m in mods and m != name} for name, path in mods.items()}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_the_graph_sees_known_edges():
    g = graph()
    assert "layernas.core.arch" in g["layernas.core.cost"]
    assert "layernas.store.layout" in g["layernas.store.records"]
    assert len(g) > 40


def test_no_import_cycle():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g[n]):
            if state.get(m) == 1:
                cycle = stack[stack.index(m):] + [m]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n)


def test_imports_only_point_down_the_layers():
    bad = []
    for src, targets in graph().items():
        ls = layer_of(src)
        for dst in targets:
            ld = layer_of(dst)
            if ls and ld and LAYERS.index(ld) > LAYERS.index(ls):
                bad.append(f"{src} -> {dst}")
    assert not bad, "imports pointing up a layer:\n" + "\n".join(sorted(bad))


def test_core_needs_no_torch_and_no_other_layer():
    for src, targets in graph().items():
        if layer_of(src) == "core":
            assert all(layer_of(t) in (None, "core") for t in targets), src
            assert "import torch" not in all_modules()[src].read_text(), src


def test_no_module_over_the_line_limit():
    long = {n: len(p.read_text().splitlines()) for n, p in all_modules().items()}
    assert not {n: c for n, c in long.items() if c > MAX_LINES}


def test_every_module_imports_in_a_fresh_interpreter():
    """One interpreter per module, so an import that only works after another module was
    loaded first (a hidden cycle) fails here."""
    names = [n for n in all_modules() if not n.endswith("__main__")]
    code = ("import subprocess, sys\n"
            "bad = [m for m in sys.argv[1:] if subprocess.run([sys.executable, '-c', 'import ' + m],"
            " capture_output=True).returncode]\n"
            "print(' '.join(bad)); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"modules that do not import on their own: {proc.stdout}"


def test_config_check_and_key_rules_do_not_import_torch():
    code = ("import sys; import layernas.workflow.config, layernas.evaluate.recipe, layernas.store.layout; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
