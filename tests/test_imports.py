"""The packages are layers: each imports only the ones below it, so the import graph has no cycle.

    schema  <  rules  <  advisor  <  runners  <  cli

Every import counts, at the top of a module or inside a function, since a function-level import is
still a dependency (only ``if TYPE_CHECKING:`` blocks, which never run, are left out).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["schema", "rules", "advisor", "runners", "cli"]


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(tl_advise package, line) for every import in ``path`` outside ``if TYPE_CHECKING:`` blocks."""
    found: set[tuple[str, int]] = set()

    def visit(node: ast.AST) -> None:
        if _is_type_checking_block(node):
            return
        names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                 else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "tl_advise" and len(parts) > 1:
                found.add((parts[1], node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def layer_violations() -> list[str]:
    problems = []
    for layer in LAYERS:
        for path in sorted((REPO / layer).rglob("*.py")):
            for package, line in imported_packages(path):
                if package in LAYERS and LAYERS.index(package) > LAYERS.index(layer):
                    problems.append(f"{path.relative_to(REPO)}:{line} imports tl_advise.{package} (a layer above)")
    return problems


def test_every_package_imports_only_the_layers_below_it() -> None:
    assert layer_violations() == []


def test_the_check_sees_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "rules" / "bad.py"
    module.parent.mkdir()
    module.write_text("def f():\n    from tl_advise.runners.api import run_advice\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert layer_violations() == ["rules/bad.py:2 imports tl_advise.runners (a layer above)"]


@pytest.mark.parametrize("module", ["tl_advise.schema", "tl_advise.rules", "tl_advise.advisor", "tl_advise.runners",
                                    "tl_advise.cli", "tl_advise.rules.engine"])
@pytest.mark.slow
def test_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_the_command_line_starts_without_torch() -> None:
    code = "import sys, tl_advise.cli; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


@pytest.mark.slow
def test_the_advice_path_of_the_onnx_engine_imports_no_torch() -> None:
    """Everything a cold advice runs when the exported graph is cached; torch only comes with the PyTorch
    engine, the exporter, the backbones and the runners."""
    modules = ["tl_advise.cli.commands", "tl_advise.advisor.api", "tl_advise.advisor.similarity",
               "tl_advise.advisor.embedding", "tl_advise.advisor.engines", "tl_advise.advisor.engines.onnx_engine",
               "tl_advise.advisor.preprocess", "tl_advise.advisor.formats"]
    code = f"import sys; import {', '.join(modules)}; " \
           "print(sorted(m for m in ('torch', 'torchvision', 'timm') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr
