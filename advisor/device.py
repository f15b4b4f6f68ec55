"""``--device auto|cpu|cuda`` → a torch device, with a clear error when CUDA is asked for and absent."""

from __future__ import annotations

import torch

from tl_advise.advisor.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(choice: str = "auto") -> torch.device:
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
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
