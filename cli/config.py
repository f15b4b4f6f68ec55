"""Option defaults from ``[tool.tl-advise]`` in the nearest ``pyproject.toml``.

Precedence, highest first: the command line, ``TL_ADVISE_*`` environment variables, pyproject, the
built-in defaults. Click applies the first two; this module supplies the third as a ``default_map``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection
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


def pyproject_defaults(options: dict[str, str], start: Path | None = None, *,
                       lists: Collection[str] = ()) -> dict[str, Any]:
    """``[tool.tl-advise]`` as parameter-name → value; unknown keys are an error, not silently ignored.

    ``options`` maps each option's long name (``format``, ``per-class``) to the parameter it sets;
    keys may use dashes or underscores. ``lists`` names the parameters that take several values.
    """
    path = find_pyproject(start)
    if path is None:
        return {}
    try:
        tool = tomllib.loads(path.read_text(encoding="utf-8")).get("tool", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read [tool.{TABLE}] ({exc})") from exc
    table = tool.get(TABLE, {}) if isinstance(tool, dict) else None
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.{TABLE}] must be a table")
    defaults: dict[str, Any] = {}
    for key, value in table.items():
        param = options.get(key.replace("_", "-"))
        if param is None:
            known = ", ".join(sorted(options))
            raise ConfigError(f"{path}: [tool.{TABLE}] has an unknown key {key!r}; known keys: {known}")
        defaults[param] = _as_command_line(path, key, value, many=param in lists)
    return defaults


def _as_command_line(path: Path, key: str, value: object, *, many: bool) -> str | list[str]:
    """A pyproject value as the command line would give it, text, so that click converts and checks it
    like a typed option (a TOML integer for a path, or a table for a number, would crash click instead)."""
    values = value if many and isinstance(value, list) else [value]
    if not all(isinstance(v, str | int | float | bool) for v in values):
        expected = "a value or a list of values" if many else "one value"
        raise ConfigError(f"{path}: [tool.{TABLE}] {key} = {value!r}: expected {expected} (a string, a number "
                          "or true/false)")
    text = [str(v).lower() if isinstance(v, bool) else str(v) for v in values]
    return text if many else text[0]
