"""Building ``RunOptions`` from user input with messages that name the option, and the output-folder check."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tl_advise.advisor.writable import check_write_path
from tl_advise.schema.errors import ConfigError
from tl_advise.schema.run_options import RunOptions


def run_options(values: Mapping[str, Any], names: Mapping[str, str] | None = None) -> RunOptions:
    """``RunOptions(**values)``, with a bad value reported as a ``ConfigError`` naming the option (``names``
    maps a field to what the user typed, e.g. ``max_epochs`` → ``--budget``), never a pydantic traceback."""
    try:
        return RunOptions(**values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            if not field:  # a rule across options: its message names them
                message = str(error["msg"]).removeprefix("Value error, ")
                for name, shown in (names or {}).items():
                    message = message.replace(name, shown)
                problems.append(message)
                continue
            shown = (names or {}).get(field, field)
            problems.append(f"{shown}: {error['msg'].lower()}. Got {error.get('input')!r} instead")
        raise ConfigError("; ".join(problems)) from None


def check_output_dir(output_dir: Path, dataset_root: Path, what: str = "The output folder") -> Path:
    """The output folder, resolved; refused when it is the dataset or inside it (the dataset is read-only)."""
    out = check_write_path(output_dir, dataset_root, what)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"The output folder {out} exists and is not a folder.")
    return out
