"""The packages are layers: each imports only the ones below it, so the import graph has no cycle.

    schema  <  rules  <  advisor  <  runners  <  cli

Inside ``advisor`` the same holds one level down: the small utilities (defaults, versions, writable, timing) at
the bottom, then ``data`` (reading a dataset), ``measure`` (a backbone's signals, which reads data) and
``report`` (rendering, which may show the data but measures nothing), and the orchestration on top (the package
itself, api, text_api, target, ranking). The modality is a seam: images and texts import nothing of each other,
except that reading texts uses ``data.images``' folder layout and label manifests.

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


def _runnable_imports(path: Path, root: Path) -> list[tuple[ast.AST, list[str]]]:
    """(node, absolute module names) for every import in ``path`` that can run: at the top of a module, inside a
    function, relative, dynamic, under ``if not TYPE_CHECKING:`` or in the ``else:`` of ``if TYPE_CHECKING:``;
    only the body of ``if TYPE_CHECKING:``, which never runs, is left out."""
    found: list[tuple[ast.AST, list[str]]] = []
    package = _package_of(path, root)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:  # the else branch runs
                visit(child)
            return
        names = _imported_modules(node, package)
        if names:
            found.append((node, names))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def imported_packages(path: Path, root: Path | None = None) -> set[tuple[str, int]]:
    """(tl_advise package, line) for every import in ``path`` that can run (``_runnable_imports``)."""
    found: set[tuple[str, int]] = set()
    for node, names in _runnable_imports(path, root or REPO):
        for name in names:
            parts = name.split(".")
            if parts[0] == "tl_advise" and len(parts) > 1:
                found.add((parts[1], getattr(node, "lineno", 0)))
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


# The sub-layers inside advisor: what each may import of advisor (itself included). measure and report do not
# import each other; the orchestration may import everything.
ADVISOR_UTILITIES = {"defaults", "versions", "writable", "timing"}
ADVISOR_ORCHESTRATION = {"__init__", "api", "text_api", "target", "ranking"}
ADVISOR_MAY_IMPORT = {
    "utilities": {"utilities"},
    "data": {"utilities", "data"},
    "measure": {"utilities", "data", "measure"},
    "report": {"utilities", "data", "report"},
    "orchestration": {"utilities", "data", "measure", "report", "orchestration"},
}
MODALITIES = ("images", "text")
# The one crossing of the modality seam: reading texts uses the image side's folder layout and label manifests.
SEAM_CROSSINGS = {("data.text", "data.images")}


def advisor_part(name: str) -> str | None:
    """Where a module of advisor sits: ``tl_advise.advisor.data.images.scan`` -> ``data.images``,
    ``tl_advise.advisor.measure.cache`` -> ``measure``, ``tl_advise.advisor.api`` -> ``orchestration``,
    ``tl_advise.advisor.defaults`` -> ``utilities``; ``unknown`` for a module in none of them, None outside
    advisor."""
    parts = name.split(".")
    if parts[:2] != ["tl_advise", "advisor"]:
        return None
    rest = parts[2:]
    if not rest or rest[0] in ADVISOR_ORCHESTRATION:
        return "orchestration"  # the package itself imports api
    if rest[0] in ADVISOR_UTILITIES:
        return "utilities"
    if rest[0] in ("data", "measure", "report"):
        return f"{rest[0]}.{rest[1]}" if len(rest) > 1 and rest[1] in MODALITIES else rest[0]
    return "unknown"


def _module_name(path: Path, root: Path) -> str:
    """``advisor/data/images/scan.py`` -> ``tl_advise.advisor.data.images.scan`` (a package: its own name)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(["tl_advise", *(parts[:-1] if parts[-1] == "__init__" else parts)])


def _imported_parts(node: ast.AST, names: list[str]) -> list[str]:
    """The advisor parts an import brings in; ``from tl_advise.advisor import writable`` is the utility, not the
    package (a name imported from a package is its submodule where it is one)."""
    parts = []
    for name in names:
        aliases = [a.name for a in node.names] if isinstance(node, ast.ImportFrom) and node.module else []
        for full in [f"{name}.{alias}" for alias in aliases] or [name]:
            part = advisor_part(full)
            if part == "unknown" and full != name:
                part = advisor_part(name)
            if part is not None:
                parts.append(part)
    return parts


def advisor_violations() -> list[str]:
    problems = []
    for path in sorted((REPO / "advisor").rglob("*.py")):
        where = advisor_part(_module_name(path, REPO))
        rel = path.relative_to(REPO)
        if where is None or where == "unknown":
            problems.append(f"{rel} is in no sub-layer of advisor (data, measure, report, the utilities or the "
                            "orchestration)")
            continue
        for node, names in _runnable_imports(path, REPO):
            line = getattr(node, "lineno", 0)
            for part in _imported_parts(node, names):
                if part == "unknown":
                    problems.append(f"{rel}:{line} imports a module of advisor in no sub-layer")
                elif part.split(".")[0] not in ADVISOR_MAY_IMPORT[where.split(".")[0]]:
                    problems.append(f"{rel}:{line} imports advisor.{part} ({where} may not)")
                elif "." in where and "." in part and where.split(".")[1] != part.split(".")[1] \
                        and (where, part) not in SEAM_CROSSINGS:
                    problems.append(f"{rel}:{line} imports advisor.{part} (across the modality seam)")
    return sorted(set(problems))


def test_advisor_sub_packages_import_only_the_ones_below_them() -> None:
    assert advisor_violations() == []


def _advisor_violations_of(module: str, source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``advisor_violations()`` of a tree that holds only ``advisor/<module>`` with ``source``."""
    path = tmp_path / "advisor" / module
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    return advisor_violations()


@pytest.mark.parametrize(("module", "source", "problem"), [
    pytest.param("data/images/bad.py", "from tl_advise.advisor.measure.cache import ArrayCache\n",
                 "advisor/data/images/bad.py:1 imports advisor.measure (data.images may not)",
                 id="data imports measure"),
    pytest.param("data/bad.py", "def f():\n    from tl_advise.advisor.report import render\n",
                 "advisor/data/bad.py:2 imports advisor.report (data may not)", id="data imports report"),
    pytest.param("measure/text/bad.py", "from tl_advise.advisor import api\n",
                 "advisor/measure/text/bad.py:1 imports advisor.orchestration (measure.text may not)",
                 id="measure imports the orchestration"),
    pytest.param("measure/bad.py", "from tl_advise.advisor import advise\n",
                 "advisor/measure/bad.py:1 imports advisor.orchestration (measure may not)",
                 id="measure imports the package"),
    pytest.param("report/bad.py", "from ..measure.images import similarity\n",
                 "advisor/report/bad.py:1 imports advisor.measure.images (report may not)",
                 id="report imports measure, relative"),
    pytest.param("report/bad.py", "import importlib\nimportlib.import_module('tl_advise.advisor.text_api')\n",
                 "advisor/report/bad.py:2 imports advisor.orchestration (report may not)",
                 id="report imports the orchestration"),
    pytest.param("writable.py", "from tl_advise.advisor.data.images.scan import ImageRecord\n",
                 "advisor/writable.py:1 imports advisor.data.images (utilities may not)",
                 id="a utility imports data"),
    pytest.param("measure/images/bad.py", "from tl_advise.advisor.measure.text.backbone import TextBackbone\n",
                 "advisor/measure/images/bad.py:1 imports advisor.measure.text (across the modality seam)",
                 id="images import text"),
    pytest.param("data/images/bad.py", "from tl_advise.advisor.data.text import read_text_dataset\n",
                 "advisor/data/images/bad.py:1 imports advisor.data.text (across the modality seam)",
                 id="reading images imports reading texts"),
    pytest.param("helpers.py", "import os\n", "advisor/helpers.py is in no sub-layer of advisor (data, measure, "
                 "report, the utilities or the orchestration)", id="a module in no sub-layer"),
])
def test_the_advisor_check_fails_on_an_import_upward(module: str, source: str, problem: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    assert _advisor_violations_of(module, source, tmp_path, monkeypatch) == [problem]


@pytest.mark.parametrize(("module", "source"), [
    pytest.param("data/text/fine.py", "from tl_advise.advisor.data.images.layout import is_ignored\n",
                 id="reading texts uses the image layout"),
    pytest.param("measure/images/fine.py", "from tl_advise.advisor import writable\n"
                 "from tl_advise.advisor.data.images.scan import ImageRecord\nfrom ..cache import ArrayCache\n",
                 id="measure imports data and a utility"),
    pytest.param("report/fine.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                 "    from tl_advise.advisor.text_api import TextAdviceSession\n", id="only for the type checker"),
    pytest.param("ranking.py", "from tl_advise.advisor.report.ranking import render_text\n",
                 id="the orchestration imports report"),
])
def test_the_advisor_check_passes_an_import_downward(module: str, source: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    assert _advisor_violations_of(module, source, tmp_path, monkeypatch) == []


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
