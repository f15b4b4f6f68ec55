"""Option defaults from ``[tool.tl-advise]`` in the nearest ``pyproject.toml``.

Precedence, highest first: the command line, ``TL_ADVISE_*`` environment variables, pyproject, the
built-in defaults. Click applies the first two; this module supplies the third as a ``default_map``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from tl_advise.schema.errors import ConfigError

TABLE = "tl-advise"


def find_pyproject(start: Path | None = None) -> Path | None:
    """The first ``pyproject.toml`` from ``start`` (the working directory) up to the filesystem root."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def pyproject_defaults(options: dict[str, str], start: Path | None = None) -> dict[str, Any]:
    """``[tool.tl-advise]`` as parameter-name → value; unknown keys are an error, not silently ignored.

    ``options`` maps each option's long name (``format``, ``per-class``) to the parameter it sets;
    keys may use dashes or underscores.
    """
    path = find_pyproject(start)
    if path is None:
        return {}
    try:
        table = tomllib.loads(path.read_text()).get("tool", {}).get(TABLE, {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read [tool.{TABLE}] ({exc})") from exc
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.{TABLE}] must be a table")
    defaults: dict[str, Any] = {}
    for key, value in table.items():
        param = options.get(key.replace("_", "-"))
        if param is None:
            known = ", ".join(sorted(options))
            raise ConfigError(f"{path}: [tool.{TABLE}] has an unknown key {key!r}; known keys: {known}")
        defaults[param] = value
    return defaults
