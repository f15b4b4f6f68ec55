"""The packages are layers: each imports only the ones below it, so the import graph has no cycle.

    schema  <  rules  <  advisor  <  runners  <  cli

Every import that can run counts: at the top of a module or inside a function (a function-level import is
still a dependency), relative imports, ``importlib.import_module``/``__import__`` with a string, the
``else:`` of ``if TYPE_CHECKING:`` and ``if not TYPE_CHECKING:``. Only the body of ``if TYPE_CHECKING:``,
which never runs, is left out.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["schema", "rules", "advisor", "runners", "cli"]


def _is_type_checking(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``typing.TYPE_CHECKING`` itself: true only for the type checker, never at run time.
    (``not TYPE_CHECKING`` and ``TYPE_CHECKING or x`` run, so they are not this.)"""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _package_of(path: Path, root: Path) -> list[str]:
    """``rules/engine.py`` (and ``rules/__init__.py``) -> ``["tl_advise", "rules"]``: where relative imports start."""
    return ["tl_advise", *path.relative_to(root).parts[:-1]]


def _imported_modules(node: ast.AST, package: list[str]) -> list[str]:
    """The absolute module names an import statement or a dynamic import (``importlib.import_module``,
    ``__import__``, with a string) brings in."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level == 0:
            return [node.module or ""]
        base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
        if node.module:
            return [".".join([*base, node.module])]
        return [".".join([*base, a.name]) for a in node.names]  # from .. import runners
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in ("import_module", "__import__"):
            target = node.args[0].value
            if target.startswith("."):  # importlib.import_module(".api", "tl_advise.runners")
                anchor = next((a.value for a in node.args[1:2] if isinstance(a, ast.Constant)), None)
                anchor = anchor or next((k.value.value for k in node.keywords if k.arg == "package"
                                         and isinstance(k.value, ast.Constant)), ".".join(package))
                dots = len(target) - len(target.lstrip("."))
                base = str(anchor).split(".")
                base = base[: len(base) - (dots - 1)] if dots > 1 else base
                target = ".".join([*base, target.lstrip(".")]).rstrip(".")
            return [target]
    return []


def imported_packages(path: Path, root: Path | None = None) -> set[tuple[str, int]]:
    """(tl_advise package, line) for every import in ``path`` that can run: at the top of a module, inside a
    function, relative, dynamic, under ``if not TYPE_CHECKING:`` or in the ``else:`` of ``if TYPE_CHECKING:``;
    only the body of ``if TYPE_CHECKING:``, which never runs, is left out."""
    found: set[tuple[str, int]] = set()
    package = _package_of(path, root or REPO)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:  # the else branch runs
                visit(child)
            return
        for name in _imported_modules(node, package):
            parts = name.split(".")
            if parts[0] == "tl_advise" and len(parts) > 1:
                found.add((parts[1], getattr(node, "lineno", 0)))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def layer_violations() -> list[str]:
    problems = []
    for layer in LAYERS:
        for path in sorted((REPO / layer).rglob("*.py")):
            for package, line in imported_packages(path, REPO):
                if package in LAYERS and LAYERS.index(package) > LAYERS.index(layer):
                    problems.append(f"{path.relative_to(REPO)}:{line} imports tl_advise.{package} (a layer above)")
    return problems


def test_every_package_imports_only_the_layers_below_it() -> None:
    assert layer_violations() == []


@pytest.mark.parametrize(("source", "line"), [
    pytest.param("def f():\n    from tl_advise.runners.api import run_advice\n", 2, id="function-level import"),
    pytest.param("from typing import TYPE_CHECKING\nif not TYPE_CHECKING:\n    import tl_advise.runners\n", 3,
                 id="if not TYPE_CHECKING"),
    pytest.param("import typing\nif typing.TYPE_CHECKING:\n    pass\nelse:\n"
                 "    from tl_advise.runners import api\n", 5, id="else of TYPE_CHECKING"),
    pytest.param("from ..runners import api\n", 1, id="relative import"),
    pytest.param("from .. import runners\n", 1, id="relative import of the package"),
    pytest.param("import importlib\nmod = importlib.import_module('tl_advise.runners.api')\n", 2,
                 id="importlib.import_module"),
    pytest.param("from importlib import import_module\nmod = import_module('.api', 'tl_advise.runners')\n", 2,
                 id="import_module relative to a package"),
    pytest.param("mod = __import__('tl_advise.runners.api')\n", 1, id="__import__"),
])
def test_the_check_sees_every_import_that_runs(source: str, line: int, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "rules" / "bad.py"
    module.parent.mkdir()
    module.write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert layer_violations() == [f"rules/bad.py:{line} imports tl_advise.runners (a layer above)"]


@pytest.mark.parametrize("source", [
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tl_advise.runners.api import run_advice\n",
    "from . import engine\nfrom .schema import RuleSet\nimport importlib\n"
    "importlib.import_module('tl_advise.schema')\n",
])
def test_the_check_leaves_out_only_what_never_runs_or_points_down(source: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "rules" / "fine.py"
    module.parent.mkdir()
    module.write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert layer_violations() == []


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
    modules = ["tl_advise.cli.commands", "tl_advise.advisor.api", "tl_advise.advisor.measure.images.similarity",
               "tl_advise.advisor.measure.images.embedding", "tl_advise.advisor.measure.images.engines",
               "tl_advise.advisor.measure.images.engines.onnx_engine", "tl_advise.advisor.measure.images.preprocess",
               "tl_advise.advisor.report"]
    code = f"import sys; import {', '.join(modules)}; " \
           "print(sorted(m for m in ('torch', 'torchvision', 'timm') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr
