"""Pixel-wise softmax cross entropy with ignored pixels, class weights and pixel weight maps.

The loss of Long et al. 2015 (FCN, https://arxiv.org/abs/1411.4038) and, with a per-pixel
weight map, eq. 1 of Ronneberger et al. 2015 (U-Net, https://arxiv.org/abs/1505.04597):

    E = −Σ_x a(x) log p_{l(x)}(x),    a(x) = weight[l(x)] · w(x)

where ``p = softmax(logits)`` over the class axis, ``l(x)`` is the target class at pixel x,
``weight`` the optional per-class weights (1 when absent) and ``w(x)`` the optional pixel
weight map (1 when absent). Pixels whose target is ``ignore_index`` have ``a(x) = 0``: they add
nothing to the loss, nothing to the normaliser and receive no gradient.

Reductions:
    ``"mean"``: ``E / Σ_x a(x)``, both sums over every non-ignored pixel of the whole batch.
        With class weights only this is exactly ``F.cross_entropy(..., weight=weight)``; with a
        constant weight map it is plain cross entropy. When ``Σ_x a(x) = 0`` (every pixel
        ignored, or every weight zero) the loss is 0, still attached to the graph, with zero
        gradients, instead of 0/0 = NaN.
    ``"sum"``: ``E``.
    ``"none"``: the per-pixel terms ``a(x) · (−log p_{l(x)}(x))``, 0 at ignored pixels.

Unlike the U-Net paper, which trains on one image per batch, the mean normalises over the
whole batch, so an image with more weight counts more.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise._checks import check_logits, check_target
from pixelwise.losses._validate import (
    TARGET_FIX,
    check_class_weight,
    check_pixel_weights,
    check_reduction,
    in_full_precision,
)


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: torch.Tensor | Sequence[float] | None = None,
    pixel_weights: torch.Tensor | None = None,
    ignore_index: int = 255,
    reduction: str = "mean",
) -> torch.Tensor:
    """Pixel-wise softmax cross entropy, weighted per class and per pixel.

    Args:
        logits: unnormalised class scores.
        target: class indices in ``[0, K)`` or ``ignore_index``; any integer dtype.
        weight: optional per-class weights ``(K,)``, finite and >= 0.
        pixel_weights: optional weight map ``(N, H, W)``, finite and >= 0 (e.g. the U-Net map
            of :func:`pixelwise.losses.weight_map.unet_weight_map`); multiplies the class weight.
        ignore_index: target value whose pixels are left out.
        reduction: ``"mean"`` (normalised by the summed weights of non-ignored pixels),
            ``"sum"`` or ``"none"``; see the module docstring for the exact rule.

    Returns:
        A scalar, or the per-pixel loss ``(N, H, W)`` for ``reduction="none"``.

    Raises:
        TypeError: non-tensor inputs, float targets, non-float logits.
        ValueError: mismatched shapes, target values outside ``[0, K)`` other than
            ``ignore_index`` (the message lists them), invalid weights or reduction.

    Shape:
        logits: (N, K, H, W); target: (N, H, W); weight: (K,); pixel_weights: (N, H, W);
        output: () or (N, H, W).
    """
    logits = check_logits(logits)
    target = check_target(target, logits.shape[1], ignore_index, like=logits, fix=TARGET_FIX)
    reduction = check_reduction(reduction)
    weight = check_class_weight(weight, logits.shape[1], logits)
    if pixel_weights is not None:
        pixel_weights = check_pixel_weights(pixel_weights, target)
    return weighted_cross_entropy(logits, target, weight, pixel_weights, ignore_index, reduction)


@in_full_precision  # the sums run over every pixel of the batch
def weighted_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    pixel_weights: torch.Tensor | None,
    ignore_index: int,
    reduction: str,
) -> torch.Tensor:
    """:func:`cross_entropy` on inputs that have already passed its checks (int64 target).

    Shape:
        logits: (N, K, H, W); target, pixel_weights: (N, H, W); weight: (K,)
    """
    valid = target != ignore_index  # (N, H, W)
    # torch's kernel zeroes ignored pixels itself; the weights are applied here instead so that
    # class and pixel weights share one normaliser.
    nll = F.cross_entropy(logits, target, reduction="none", ignore_index=ignore_index)
    factor = valid.to(logits.dtype)  # (N, H, W)
    if weight is not None:
        factor = factor * weight[target.masked_fill(~valid, 0)]
    if pixel_weights is not None:
        factor = factor * pixel_weights.to(factor)
    per_pixel = factor * nll  # (N, H, W)
    if reduction == "none":
        return per_pixel
    total = per_pixel.sum()
    if reduction == "sum":
        return total
    norm = factor.sum()
    # When nothing counts, total is an exact 0 with zero gradients; dividing by 1 keeps it so.
    return total / torch.where(norm > 0, norm, torch.ones_like(norm))


class CrossEntropyLoss(nn.Module):
    """Module form of :func:`cross_entropy`; the class weights move with ``.to()``.

    Args:
        weight: optional per-class weights ``(K,)``, e.g. from
            :func:`pixelwise.losses.class_weights.median_frequency_weights`.
        ignore_index: target value whose pixels are left out.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Shape:
        logits: (N, K, H, W); target: (N, H, W); pixel_weights: (N, H, W);
        output: () or (N, H, W).
    """

    weight: torch.Tensor | None

    def __init__(
        self,
        *,
        weight: torch.Tensor | Sequence[float] | None = None,
        ignore_index: int = 255,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.reduction = check_reduction(reduction)
        self.register_buffer(
            "weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32)
        )

    def forward(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        pixel_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return cross_entropy(
            logits,
            target,
            weight=self.weight,
            pixel_weights=pixel_weights,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"
