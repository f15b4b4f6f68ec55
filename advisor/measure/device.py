"""``--device auto|cpu|cuda`` → a torch device, with a clear error when CUDA is asked for and absent.

torch is imported only where a device is made: a warm advice never imports it, and checking ``auto`` or
``cpu`` needs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tl_advise.advisor.defaults import DEVICE_CHOICES
from tl_advise.schema.errors import ConfigError

if TYPE_CHECKING:
    import torch



def check_device(choice: str) -> None:
    """Refuse a device that cannot be used, before any work; whether the run would need it is irrelevant
    (a warm cache must give the same answer as a cold one)."""
    if choice in ("auto", "cpu"):
        return
    resolve_device(choice)


def resolve_device(choice: str = "auto") -> torch.device:
    import torch

    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cpu":
        return torch.device("cpu")
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {choice}: CUDA is not available on this machine; use --device cpu")
        return torch.device(choice)
    raise ConfigError(f"--device must be one of {', '.join(DEVICE_CHOICES)}. Got {choice!r} instead.")


def describe(device: torch.device) -> str:
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'' if threads == 1 else 's'})"
