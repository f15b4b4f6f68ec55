"""Each package imports on its own, in any order (a regression: ``import tl_advise.rules`` first was circular)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["tl_advise.rules", "tl_advise.runners", "tl_advise.advisor",
                                    "tl_advise.advisor.cli", "tl_advise.rules.engine"])
def test_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
