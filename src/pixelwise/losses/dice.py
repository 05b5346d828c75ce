"""Soft Dice loss over softmax probabilities, and its sum with cross entropy.

The multi-class soft Dice of Milletari et al. 2016 (V-Net, https://arxiv.org/abs/1606.04797)
with the squared terms of the denominator replaced by plain sums (the common "soft Dice" form):

    D_c = (2 Σ_x v(x) p_c(x) g_c(x) + s) / (Σ_x v(x) (p_c(x) + g_c(x)) + s)
    loss = 1 − Σ_c λ_c D_c / Σ_c λ_c

with ``p = softmax(logits)``, ``g`` the one-hot target, ``v(x) = 0`` at ``ignore_index`` pixels
and 1 elsewhere, ``s`` the smoothing term and ``λ`` optional class weights (1 when absent).
Sums run over the whole batch (one Dice per class) or, with ``per_image=True``, over each image
(the loss is then averaged over the images).

Empty classes: a class absent from both the target and the prediction has
``D_c = s / (Σ p_c + s) → 1``, so it contributes (almost) nothing, and a confident false
positive for it is still penalised. When a denominator is exactly 0 (``s = 0`` and every pixel
ignored) ``D_c`` is defined as 1, so an all-ignored batch gives 0 with zero gradients, not NaN.
Ignored pixels receive no gradient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise._checks import check_logits, check_target, message
from pixelwise.losses._validate import (
    TARGET_FIX,
    check_class_weight,
    check_pixel_weights,
    in_full_precision,
)
from pixelwise.losses.cross_entropy import weighted_cross_entropy


def _check_smooth(smooth: float) -> float:
    """Return ``smooth`` as a float if it is finite and >= 0."""
    if not isinstance(smooth, int | float) or not math.isfinite(smooth) or smooth < 0:
        raise ValueError(message("smooth", "be a finite number >= 0", repr(smooth)))
    return float(smooth)


def _check_dice_weight(weight: torch.Tensor | None) -> torch.Tensor | None:
    """Dice averages over classes with these weights, so they must not all be zero."""
    if weight is not None and not bool(weight.sum() > 0):
        raise ValueError(
            message("Dice class weight", "have a positive sum", weight.tolist(), "weigh a class")
        )
    return weight


@in_full_precision  # a half-precision sum over a large map overflows or loses small terms
def dice_from_checked(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    smooth: float,
    per_image: bool,
) -> torch.Tensor:
    """:func:`soft_dice_loss` on inputs that have already passed its checks (int64 target).

    Shape:
        logits: (N, K, H, W); target: (N, H, W); weight: (K,); output: ()
    """
    k = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1)  # (N, 1, H, W)
    probs = F.softmax(logits, dim=1) * valid  # (N, K, H, W)
    onehot = F.one_hot(target.masked_fill(~valid[:, 0], 0), k)  # (N, H, W, K)
    onehot = onehot.permute(0, 3, 1, 2).to(probs) * valid  # (N, K, H, W)
    dims = (2, 3) if per_image else (0, 2, 3)
    inter = (probs * onehot).sum(dims)  # (N, K) or (K,)
    denom = probs.sum(dims) + onehot.sum(dims) + smooth  # (N, K) or (K,)
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    dice = torch.where(denom > 0, (2 * inter + smooth) / safe, torch.ones_like(denom))
    if weight is None:
        per_class_mean = dice.mean(dim=-1)  # (N,) or ()
    else:
        per_class_mean = (dice * weight).sum(dim=-1) / weight.sum()  # (N,) or ()
    return 1 - per_class_mean.mean()


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: torch.Tensor | Sequence[float] | None = None,
    ignore_index: int = 255,
    smooth: float = 1.0,
    per_image: bool = False,
) -> torch.Tensor:
    """Multi-class soft Dice loss ``1 − mean_c D_c`` on softmax probabilities.

    Args:
        logits: unnormalised class scores.
        target: class indices in ``[0, K)`` or ``ignore_index``; any integer dtype.
        weight: optional class weights ``(K,)`` for the average over classes (>= 0, sum > 0).
        ignore_index: target value whose pixels are left out of every sum.
        smooth: ``s`` in the module docstring, >= 0; keeps empty classes at ``D_c ≈ 1``.
        per_image: one Dice per image and class, averaged over images, instead of one per
            class over the whole batch.

    Returns:
        A scalar in [0, 1].

    Shape:
        logits: (N, K, H, W); target: (N, H, W); weight: (K,); output: ()
    """
    logits = check_logits(logits)
    target = check_target(target, logits.shape[1], ignore_index, like=logits, fix=TARGET_FIX)
    weight = _check_dice_weight(check_class_weight(weight, logits.shape[1], logits))
    smooth = _check_smooth(smooth)
    return dice_from_checked(logits, target, weight, ignore_index, smooth, per_image)


def ce_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ce_weight: float = 1.0,
    dice_weight: float = 1.0,
    weight: torch.Tensor | Sequence[float] | None = None,
    pixel_weights: torch.Tensor | None = None,
    ignore_index: int = 255,
    smooth: float = 1.0,
    per_image: bool = False,
) -> torch.Tensor:
    """``ce_weight · cross_entropy + dice_weight · soft_dice_loss``, inputs checked once.

    Args:
        ce_weight, dice_weight: the two mixing factors (>= 0).
        weight: class weights ``(K,)`` of the cross-entropy term only; Dice already balances
            classes, so it averages them uniformly.
        pixel_weights: weight map ``(N, H, W)`` of the cross-entropy term only.
        ignore_index, smooth, per_image: as in :func:`cross_entropy` and
            :func:`soft_dice_loss`; the cross entropy uses the ``"mean"`` reduction.

    Shape:
        logits: (N, K, H, W); target, pixel_weights: (N, H, W); weight: (K,); output: ()
    """
    for name, value in (("ce_weight", ce_weight), ("dice_weight", dice_weight)):
        if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ValueError(message(name, "be a finite number >= 0", repr(value)))
    logits = check_logits(logits)
    target = check_target(target, logits.shape[1], ignore_index, like=logits, fix=TARGET_FIX)
    weight = check_class_weight(weight, logits.shape[1], logits)
    if pixel_weights is not None:
        pixel_weights = check_pixel_weights(pixel_weights, target)
    smooth = _check_smooth(smooth)
    ce = weighted_cross_entropy(logits, target, weight, pixel_weights, ignore_index, "mean")
    dice = dice_from_checked(logits, target, None, ignore_index, smooth, per_image)
    return ce_weight * ce + dice_weight * dice


class DiceLoss(nn.Module):
    """Module form of :func:`soft_dice_loss`; the class weights move with ``.to()``.

    Shape:
        logits: (N, K, H, W); target: (N, H, W); output: ()
    """

    weight: torch.Tensor | None

    def __init__(
        self,
        *,
        weight: torch.Tensor | Sequence[float] | None = None,
        ignore_index: int = 255,
        smooth: float = 1.0,
        per_image: bool = False,
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.smooth = _check_smooth(smooth)
        self.per_image = per_image
        self.register_buffer(
            "weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32)
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return soft_dice_loss(
            logits,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            smooth=self.smooth,
            per_image=self.per_image,
        )


class CEDiceLoss(nn.Module):
    """Module form of :func:`ce_dice_loss`; the class weights move with ``.to()``.

    Shape:
        logits: (N, K, H, W); target, pixel_weights: (N, H, W); output: ()
    """

    weight: torch.Tensor | None

    def __init__(
        self,
        *,
        ce_weight: float = 1.0,
        dice_weight: float = 1.0,
        weight: torch.Tensor | Sequence[float] | None = None,
        ignore_index: int = 255,
        smooth: float = 1.0,
        per_image: bool = False,
    ) -> None:
        super().__init__()
        self.ce_weight = ce_weight
        self.dice_weight = dice_weight
        self.ignore_index = ignore_index
        self.smooth = _check_smooth(smooth)
        self.per_image = per_image
        self.register_buffer(
            "weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32)
        )

    def forward(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        pixel_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return ce_dice_loss(
            logits,
            target,
            ce_weight=self.ce_weight,
            dice_weight=self.dice_weight,
            weight=self.weight,
            pixel_weights=pixel_weights,
            ignore_index=self.ignore_index,
            smooth=self.smooth,
            per_image=self.per_image,
        )
