"""pixelwise: semantic segmentation from the first patch classifier to DeepLab.

The public API, re-exported from the subpackages; see the README for a tour. Names are
imported on first use, so that ``import pixelwise`` (and the command line's ``--help``) does
not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    "RunConfig": "pixelwise.config",
    "load_config": "pixelwise.config",
    "load_checkpoint": "pixelwise.engine.checkpoint",
    "load_model": "pixelwise.engine.checkpoint",
    "save_checkpoint": "pixelwise.engine.checkpoint",
    "fit": "pixelwise.engine.fit",
    "FitResult": "pixelwise.engine.events",
    "Progress": "pixelwise.engine.events",
    "Trainer": "pixelwise.engine.trainer",
    "Segmenter": "pixelwise.inference.segmenter",
    "evaluate": "pixelwise.inference.evaluate",
    "evaluate_dataset": "pixelwise.inference.evaluate",
    "predict_logits": "pixelwise.inference.predict",
    "predict_mask": "pixelwise.inference.predict",
    "create_model": "pixelwise.models",
    "list_models": "pixelwise.models",
}

__all__ = [
    "FitResult",
    "Progress",
    "RunConfig",
    "Segmenter",
    "Trainer",
    "create_model",
    "evaluate",
    "evaluate_dataset",
    "fit",
    "list_models",
    "load_checkpoint",
    "load_config",
    "load_model",
    "predict_logits",
    "predict_mask",
    "save_checkpoint",
]

if TYPE_CHECKING:
    from pixelwise.config import RunConfig, load_config
    from pixelwise.engine.checkpoint import load_checkpoint, load_model, save_checkpoint
    from pixelwise.engine.events import FitResult, Progress
    from pixelwise.engine.fit import fit
    from pixelwise.engine.trainer import Trainer
    from pixelwise.inference.evaluate import evaluate, evaluate_dataset
    from pixelwise.inference.predict import predict_logits, predict_mask
    from pixelwise.inference.segmenter import Segmenter
    from pixelwise.models import create_model, list_models


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pixelwise' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
