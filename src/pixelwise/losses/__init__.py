"""Segmentation losses: pixel-wise cross entropy, class weights, soft Dice, the U-Net weight map,
and the distance head's regression loss.

``cross_entropy`` takes per-class weights (from ``class_weights``) and per-pixel weight maps
(from ``unet_weight_map``); ``ce_dice_loss`` adds the soft Dice term. Targets are (N, H, W)
class indices in [0, K) or ``ignore_index`` (default 255), logits (N, K, H, W).
"""

from pixelwise.losses.class_weights import (
    ClassCounts,
    class_weights,
    count_classes,
    inverse_frequency_weights,
    median_frequency_weights,
)
from pixelwise.losses.cross_entropy import CrossEntropyLoss, cross_entropy
from pixelwise.losses.dice import CEDiceLoss, DiceLoss, ce_dice_loss, soft_dice_loss
from pixelwise.losses.distance import distance_loss
from pixelwise.losses.weight_map import (
    border_distances,
    class_balance_map,
    influence_radius,
    instances_from_semantic,
    unet_weight_map,
    weight_map_from_semantic,
)

__all__ = [
    "CEDiceLoss",
    "ClassCounts",
    "CrossEntropyLoss",
    "DiceLoss",
    "border_distances",
    "ce_dice_loss",
    "class_balance_map",
    "class_weights",
    "count_classes",
    "cross_entropy",
    "distance_loss",
    "influence_radius",
    "instances_from_semantic",
    "inverse_frequency_weights",
    "median_frequency_weights",
    "soft_dice_loss",
    "unet_weight_map",
    "weight_map_from_semantic",
]
