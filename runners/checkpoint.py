"""Atomic checkpoint files and the RNG states that make a resumed run identical to an uninterrupted one."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tl_advise.advisor.writable import atomic_write, atomic_write_text

__all__ = ["atomic_save", "atomic_write_text", "load", "restore_rng_states", "rng_states"]


def atomic_save(obj: object, path: Path) -> None:
    """``torch.save`` through ``atomic_write``: a crash, SIGKILL or full disk never leaves half a file, and
    the previous checkpoint stays until the new one is complete on disk."""
    atomic_write(path, lambda fh: torch.save(obj, fh), durable=True)


def load(path: Path) -> dict[str, Any]:
    # weights_only: our own files hold only tensors and plain containers, and a file is never trusted more.
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def rng_states() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np_state = states["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
