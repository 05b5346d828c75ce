"""The distance head's loss: binary cross entropy of its logit against the normalised distance.

The target (:func:`pixelwise.data.datasets.distance_target`) lies in [0, 1]: each object pixel's
distance to its object's edge over the object's largest, 0 on the background. Cross entropy
with a soft target has the gradient sigmoid(x) − t of a squared error on the probability,
on the scale of the class loss beside it, so the two add without a weight to tune.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def distance_loss(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean binary cross entropy of ``logits`` against ``target`` over the ``valid`` pixels
    (all when None; 0 when none is valid).

    Shape:
        logits, target, valid: (N, H, W) -> ().
    """
    per_pixel = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    if valid is None:
        return per_pixel.mean()
    valid = valid.to(per_pixel.dtype)
    return (per_pixel * valid).sum() / valid.sum().clamp_min(1.0)
