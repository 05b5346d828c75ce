"""The training engine: checkpoints, the trainer and multi-process training.

- :mod:`pixelwise.engine.checkpoint`: self-describing checkpoints (``save_checkpoint``,
  ``load_checkpoint``, ``build_model``, ``load_model``, ``normalise_images``).
- :mod:`pixelwise.engine.trainer`: :class:`Trainer` (``fit``, ``evaluate``), the run folder.
- :mod:`pixelwise.engine.distributed`: torch.distributed set-up, ``launch`` for ``--nproc``.
"""

from pixelwise.engine.checkpoint import (
    Checkpoint,
    build_model,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from pixelwise.inference._model import unwrap_model
from pixelwise.nn.normalise import normalise_images

# The trainer pulls in the data transforms (torchvision, seconds to import): loaded on first use.
_LAZY = {"Trainer": "trainer", "FitResult": "trainer", "Progress": "trainer"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"pixelwise.engine.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'pixelwise.engine' has no attribute {name!r}")


__all__ = [
    "Checkpoint",
    "FitResult",
    "Progress",
    "Trainer",
    "build_model",
    "load_checkpoint",
    "load_model",
    "normalise_images",
    "save_checkpoint",
    "unwrap_model",
]
