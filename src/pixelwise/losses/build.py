"""The training loss by name: one builder over the loss modules of :mod:`pixelwise.losses`.

Every loss it builds is called the same way, ``loss(logits, target, weight)``, where
``weight`` is the sample's per-pixel weight map (e.g. the U-Net weight map) or None; only
``weighted_ce`` uses it, and it refuses a batch without one.

Names: ``ce`` (pixel-wise cross entropy), ``weighted_ce`` (cross entropy × the weight map),
``dice`` (soft Dice), ``ce_dice`` (their weighted sum). Class weights, when given, weigh the
cross-entropy term (and, for ``dice``, the mean over classes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pixelwise._checks import check_choice, message
from pixelwise.losses.cross_entropy import CrossEntropyLoss
from pixelwise.losses.dice import CEDiceLoss, DiceLoss

LOSS_NAMES = ("ce", "weighted_ce", "dice", "ce_dice")


class SegmentationLoss(nn.Module):
    """A loss module called as ``(logits, target, weight)``, passing the weight map on only
    when the loss uses one.

    Args:
        loss: The loss module, called ``loss(logits, target)`` or, with ``weight_map``,
            ``loss(logits, target, weight)``.
        name: Its name, for messages and ``repr``.
        weight_map: Whether the loss needs the per-pixel weight map.

    Shape:
        logits: (N, K, H, W) float; target, weight: (N, H, W); output: ().
    """

    def __init__(self, loss: nn.Module, *, name: str, weight_map: bool = False) -> None:
        super().__init__()
        self.loss = loss
        self.name = name
        self.weight_map = weight_map

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        if not self.weight_map:
            return self.loss(logits, target)
        if weight is None:
            raise ValueError(
                message(f"loss '{self.name}'", "get a weight map with every batch", "none")
            )
        return self.loss(logits, target, weight)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, weight_map={self.weight_map}"


def build_loss(
    name: str,
    *,
    class_weights: torch.Tensor | Sequence[float] | None = None,
    ignore_index: int = 255,
    ce_weight: float = 1.0,
    dice_weight: float = 1.0,
) -> SegmentationLoss:
    """The loss called ``name`` (see the module docstring), as a :class:`SegmentationLoss`.

    Args:
        name: ``"ce"``, ``"weighted_ce"``, ``"dice"`` or ``"ce_dice"``.
        class_weights: Per-class weights (K,), or None.
        ignore_index: Target value left out.
        ce_weight, dice_weight: The terms' weights for ``ce_dice``.
    """
    check_choice("loss", name, LOSS_NAMES)
    common = {"weight": class_weights, "ignore_index": ignore_index}
    if name == "dice":
        return SegmentationLoss(DiceLoss(**common), name=name)
    if name == "ce_dice":
        loss = CEDiceLoss(ce_weight=ce_weight, dice_weight=dice_weight, **common)
        return SegmentationLoss(loss, name=name)
    return SegmentationLoss(CrossEntropyLoss(**common), name=name, weight_map=name == "weighted_ce")
