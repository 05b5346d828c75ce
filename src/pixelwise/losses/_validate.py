"""Checks shared by the loss functions: class weights, pixel weights and the reduction.

Logits and targets are checked by :mod:`pixelwise._checks` (``check_logits``, ``check_target``),
as the metrics check them.

Each check raises a one-line ``ValueError``/``TypeError`` in the project's message format
before torch fails deep inside a kernel with an index error or a CUDA assert.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch

from pixelwise._checks import check_choice, message

REDUCTIONS = ("mean", "sum", "none")
# The advice when a target value is no class index: the loss and the model must agree.
TARGET_FIX = "check num_classes of the model or the ignore_index of the loss"


def check_class_weight(
    weight: torch.Tensor | Sequence[float] | None, num_classes: int, like: torch.Tensor
) -> torch.Tensor | None:
    """Return per-class weights as a float tensor on ``like``'s device, or None.

    Shape:
        weight: (K,)
    """
    if weight is None:
        return None
    weight = torch.as_tensor(weight, dtype=like.dtype, device=like.device)
    if weight.shape != (num_classes,):
        raise ValueError(
            message(
                "class weight",
                f"have shape ({num_classes},), one weight per class",
                f"shape {tuple(weight.shape)}",
            )
        )
    if bool((~torch.isfinite(weight) | (weight < 0)).any()):
        raise ValueError(
            message("class weight", "be finite and >= 0", weight.tolist(), "fix the class weights")
        )
    return weight


def check_pixel_weights(pixel_weights: object, target: torch.Tensor) -> torch.Tensor:
    """Check a per-pixel weight map matches ``target`` and is finite and non-negative.

    Shape:
        pixel_weights: (N, H, W), the shape of ``target``
    """
    if not isinstance(pixel_weights, torch.Tensor):
        raise TypeError(
            message(
                "pixel_weights",
                "be a torch.Tensor of shape (N, H, W)",
                type(pixel_weights).__name__,
                "wrap a numpy map with torch.from_numpy",
            )
        )
    if tuple(pixel_weights.shape) != tuple(target.shape):
        raise ValueError(
            message(
                "pixel_weights",
                f"have the target's shape {tuple(target.shape)}",
                f"shape {tuple(pixel_weights.shape)}",
            )
        )
    if not pixel_weights.is_floating_point():
        pixel_weights = pixel_weights.float()
    if bool((~torch.isfinite(pixel_weights) | (pixel_weights < 0)).any()):
        raise ValueError(
            message(
                "pixel_weights",
                "be finite and >= 0",
                "negative or non-finite values",
                "check how the weight map was computed",
            )
        )
    return pixel_weights


def check_reduction(reduction: str) -> str:
    """Return ``reduction`` if it is one of ``mean``, ``sum``, ``none``."""
    return check_choice("reduction", reduction, REDUCTIONS)


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when it is in a half precision (float16, bfloat16); float32 and float64
    as they are. Losses reduce over every pixel: half precision would lose or overflow."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def in_full_precision(loss: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Run ``loss(logits, ...)`` with autocast off and half-precision logits in float32."""

    @functools.wraps(loss)
    def wrapper(logits: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        with torch.autocast(logits.device.type, enabled=False):
            return loss(full_precision(logits), *args, **kwargs)

    return wrapper
