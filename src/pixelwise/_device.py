"""Which device a name means: ``auto`` is CUDA when available, else the CPU; ``cuda`` without
CUDA is refused in one line."""

from __future__ import annotations

import torch

from pixelwise._checks import message


def resolve_device(name: str, *, what: str = "device", index: int | None = None) -> torch.device:
    """The device ``name`` (``"auto"``, ``"cpu"`` or ``"cuda"``) stands for on this machine.

    Args:
        name: The requested device.
        what: How the request is named in an error (``"train.device"``, ``"--device"``).
        index: The CUDA device to use (default: the current one).
    """
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            message(what, "name an available device", "'cuda' without CUDA", "use 'auto' or 'cpu'")
        )
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device() if index is None else index)
