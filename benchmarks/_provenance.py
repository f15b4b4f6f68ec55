"""How a results file was made: the command, the git commit (and whether the tree had changes) and the
machine. Every benchmark writes this into its JSON, so a number can always be traced and re-run."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The command as typed: the script path from the repo root and its arguments."""
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join([f"benchmarks/{Path(script).name}", *args])


def machine() -> dict[str, Any]:
    import numpy as np
    import PIL
    import torch
    import torchvision

    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "load_average": list(os.getloadavg()),
    }


def provenance(script: str, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``{"command", "commit", "dirty", "date", "machine"}`` for the running benchmark."""
    return {
        "command": command_line(script, argv),
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }
