"""pixelwise: semantic segmentation from the first patch classifier to DeepLab.

The public API, re-exported from the subpackages; see the README for a tour.
"""

from pixelwise.config import RunConfig, load_config
from pixelwise.engine.checkpoint import load_checkpoint, load_model, save_checkpoint
from pixelwise.engine.trainer import Trainer
from pixelwise.inference.evaluate import evaluate_dataset
from pixelwise.inference.predict import predict_logits, predict_mask
from pixelwise.models import create_model, list_models

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
