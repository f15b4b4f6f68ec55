"""mypy over the installed namespace ``tl_advise``, as users import it.

The folders map onto ``tl_advise.*`` through setuptools' ``package-dir`` (pyproject.toml); mypy cannot see
through the editable install's import hook, so checking the folders by name would read every
``tl_advise.*`` import as a missing module (``Any``) and miss every error across modules. This checks a
temporary tree of links laid out as the installed package instead. Extra arguments go to mypy.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    config = ROOT / "pyproject.toml"
    folders = tomllib.loads(config.read_text(encoding="utf-8"))["tool"]["setuptools"]["package-dir"]
    with tempfile.TemporaryDirectory() as tree:
        for package, folder in folders.items():
            link = Path(tree, *package.split("."))
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(ROOT / folder, target_is_directory=True)
        command = [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir",
                   str(ROOT / ".mypy_cache"), "-p", "tl_advise", *sys.argv[1:]]
        return subprocess.call(command, cwd=tree)


if __name__ == "__main__":
    sys.exit(main())
