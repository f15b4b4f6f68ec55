"""Offline torchvision weights for the benchmarks: the shared weights files copied into a ``$TORCH_HOME`` under a
work folder, where torchvision's hub cache finds them instead of downloading (the machines have no internet)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

# Backbone spec -> its torchvision weights file in <shared>/weights (the hub cache's own file name).
SHARED_WEIGHTS = {"mobilenet_v2:IMAGENET1K_V1": "mobilenet_v2-b0353104.pth"}


class MissingWeightsError(Exception):
    """A backbone needs a shared weights file that is not there."""


def shared_weights_files(backbones: Iterable[str]) -> list[str]:
    """The shared weights files that ``backbones`` load (the others have packaged weights or none here)."""
    return sorted({SHARED_WEIGHTS[b.strip()] for b in backbones if b.strip() in SHARED_WEIGHTS})


def offline_torch_home(work_dir: Path, shared: Path, backbones: Iterable[str]) -> Path | None:
    """Point ``$TORCH_HOME`` at ``work_dir/torch``, whose hub cache holds the shared files ``backbones`` need
    (copied: the shared folder is never written); None and nothing set when they need none."""
    files = shared_weights_files(backbones)
    if not files:
        return None
    home = work_dir / "torch"
    for name in files:
        target = home / "hub" / "checkpoints" / name
        if target.is_file():
            continue
        source = shared / "weights" / name
        if not source.is_file():
            wanted = ", ".join(b for b, f in SHARED_WEIGHTS.items() if f == name)
            raise MissingWeightsError(f"{source} is missing: {wanted} cannot load offline")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")  # a copy cut short is never taken for the file
        shutil.copyfile(source, partial)
        partial.replace(target)
    os.environ["TORCH_HOME"] = str(home)
    return home
