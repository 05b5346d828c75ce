"""pixelwise: semantic segmentation from the first patch classifier to DeepLab.

The public API, re-exported from the subpackages; see the README for a tour. The names are
imported on first use (module ``__getattr__``), so that ``import pixelwise`` (and the command
line's ``--help`` and ``--version``) does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pixelwise.config import RunConfig, load_config
    from pixelwise.engine.checkpoint import load_checkpoint, load_model, save_checkpoint
    from pixelwise.engine.trainer import Trainer
    from pixelwise.inference.evaluate import evaluate_dataset
    from pixelwise.inference.predict import predict_logits, predict_mask
    from pixelwise.models import create_model, list_models

# Public name -> the module that defines it.
_EXPORTS = {
    "RunConfig": "pixelwise.config",
    "load_config": "pixelwise.config",
    "load_checkpoint": "pixelwise.engine.checkpoint",
    "load_model": "pixelwise.engine.checkpoint",
    "save_checkpoint": "pixelwise.engine.checkpoint",
    "Trainer": "pixelwise.engine.trainer",
    "evaluate_dataset": "pixelwise.inference.evaluate",
    "predict_logits": "pixelwise.inference.predict",
    "predict_mask": "pixelwise.inference.predict",
    "create_model": "pixelwise.models",
    "list_models": "pixelwise.models",
}


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'pixelwise' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "RunConfig",
    "Trainer",
    "create_model",
    "evaluate_dataset",
    "list_models",
    "load_checkpoint",
    "load_config",
    "load_model",
    "predict_logits",
    "predict_mask",
    "save_checkpoint",
]
__version__ = "0.1.0"
