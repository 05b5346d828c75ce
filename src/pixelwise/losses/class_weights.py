"""Class weights counted from the data: inverse frequency and median-frequency balancing.

Counting streams over an iterable of masks, so a whole dataset (a DataLoader's targets, a
generator reading files) is counted without holding it in memory. Pixels equal to
``ignore_index`` are left out of every count, including the image totals below.

Frequencies, for class c over the counted masks:
    ``n_c``: pixels of class c;
    ``P_c``: all counted pixels of the images in which c occurs at least once;
    ``freq(c) = n_c / P_c``: the frequency of Eigen & Fergus 2015 used by SegNet
    (Badrinarayanan et al. 2017, https://arxiv.org/abs/1511.00561, section 3.1);
    ``global_freq(c) = n_c / Σ_c' n_c'``: the share of class c among all counted pixels.

Weights:
    median frequency: ``w(c) = median_c' freq(c') / freq(c)``, the median over the classes
        that occur (the mean of the two middle values for an even count), so the median class
        weighs 1 and rarer classes more. This is SegNet's rule.
    inverse frequency: ``w(c) = 1 / (K' · global_freq(c))`` with K' the number of classes that
        occur, so every occurring class carries the same total weight and the pixel-weighted
        mean weight is 1 (the loss keeps the scale of unweighted cross entropy).

A class that never occurs has no defined frequency: it gets ``absent_weight`` (default 1.0, the
weight of a typical class under both rules, so it is neither dropped nor blown up when it does
appear in other data) and a warning is logged naming it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from pixelwise._checks import check_choice, check_class_indices, check_positive_int, message

logger = logging.getLogger(__name__)

METHODS = ("median_frequency", "inverse_frequency")


@dataclass(frozen=True)
class ClassCounts:
    """Pixel counts per class over a set of masks, ``ignore_index`` left out.

    Attributes:
        pixels: ``n_c``, pixels of class c, shape (K,).
        image_pixels: ``P_c``, counted pixels of the images containing class c, shape (K,).
        images_with_class: number of images containing class c, shape (K,).
        num_images: number of masks counted.
    """

    pixels: np.ndarray
    image_pixels: np.ndarray
    images_with_class: np.ndarray
    num_images: int

    @property
    def present(self) -> np.ndarray:
        """Boolean (K,): whether class c occurs at least once."""
        return self.pixels > 0


def _as_masks(item: object, index: int) -> np.ndarray:
    """Return one iterable item as an integer array of shape (M, H, W)."""
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().numpy()
    array = np.asarray(item)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(
            message(f"mask {index}", "hold integer class indices", f"dtype {array.dtype}")
        )
    if array.ndim == 2:
        return array[None]  # (1, H, W)
    if array.ndim != 3:
        raise ValueError(
            message(f"mask {index}", "have shape (H, W) or (N, H, W)", f"shape {array.shape}")
        )
    return array


def count_classes(
    masks: Iterable[np.ndarray | torch.Tensor], num_classes: int, *, ignore_index: int = 255
) -> ClassCounts:
    """Count class pixels over an iterable of masks, one pass, streaming.

    Args:
        masks: masks ``(H, W)`` or batches ``(N, H, W)`` (numpy or torch, integer); each image
            of a batch counts as one image. Sizes may differ between items.
        num_classes: K; values must be in ``[0, K)`` or ``ignore_index``.
        ignore_index: value left out of every count.

    Raises:
        TypeError, ValueError: a non-integer mask, a wrong shape, or values outside
            ``[0, K)`` (the message names the item and the values).

    Shape:
        masks: each (H, W) or (N, H, W); every field of the result: (K,).
    """
    k = check_positive_int("num_classes", num_classes)
    pixels = np.zeros(k, np.int64)
    image_pixels = np.zeros(k, np.int64)
    images_with_class = np.zeros(k, np.int64)
    num_images = 0
    for index, item in enumerate(masks):
        for mask in _as_masks(item, index):
            values = mask[mask != ignore_index].astype(np.int64)  # (P,)
            check_class_indices(
                values, k, ignore_index, f"mask {index} values", "check num_classes or ignore_index"
            )
            per_class = np.bincount(values, minlength=k)  # (K,)
            occurs = per_class > 0
            pixels += per_class
            image_pixels[occurs] += values.size
            images_with_class += occurs
            num_images += 1
    return ClassCounts(pixels, image_pixels, images_with_class, num_images)


def _finish(counts: ClassCounts, raw: np.ndarray, absent_weight: float) -> torch.Tensor:
    """Put ``absent_weight`` at classes that never occur and return float32 weights (K,)."""
    absent = np.flatnonzero(~counts.present)
    if absent.size:
        logger.warning(
            "classes %s never occur in %d counted masks; they get weight %s",
            absent.tolist(),
            counts.num_images,
            absent_weight,
        )
    weights = np.where(counts.present, raw, absent_weight)
    return torch.as_tensor(weights, dtype=torch.float32)


def median_frequency_weights(counts: ClassCounts, *, absent_weight: float = 1.0) -> torch.Tensor:
    """SegNet's median-frequency balancing: ``median(freq) / freq(c)``.

    ``freq(c) = n_c / P_c`` (pixels of c over counted pixels of the images containing c); the
    median runs over the classes that occur; classes that never occur get ``absent_weight``.

    Shape:
        output: (K,) float32
    """
    present = counts.present
    freq = np.divide(
        counts.pixels, counts.image_pixels, out=np.zeros(len(present)), where=present
    )  # (K,)
    median = np.median(freq[present]) if present.any() else 0.0
    raw = np.divide(median, freq, out=np.zeros_like(freq), where=present)
    return _finish(counts, raw, absent_weight)


def inverse_frequency_weights(counts: ClassCounts, *, absent_weight: float = 1.0) -> torch.Tensor:
    """Inverse global frequency ``1 / (K' · n_c / Σ n)``: pixel-weighted mean weight 1.

    K' is the number of classes that occur; classes that never occur get ``absent_weight``.

    Shape:
        output: (K,) float32
    """
    present = counts.present
    total = counts.pixels.sum()
    raw = np.divide(
        total, present.sum() * counts.pixels, out=np.zeros(len(present)), where=present
    )  # (K,)
    return _finish(counts, raw, absent_weight)


def class_weights(
    masks: Iterable[np.ndarray | torch.Tensor],
    num_classes: int,
    *,
    method: str = "median_frequency",
    ignore_index: int = 255,
    absent_weight: float = 1.0,
) -> torch.Tensor:
    """Count ``masks`` and return class weights for :func:`cross_entropy`'s ``weight``.

    Args:
        masks: see :func:`count_classes`.
        num_classes: K.
        method: ``"median_frequency"`` (SegNet) or ``"inverse_frequency"``.
        ignore_index: value left out of every count.
        absent_weight: weight of classes that never occur.

    Shape:
        output: (K,) float32
    """
    method = check_choice("method", method, METHODS)
    counts = count_classes(masks, num_classes, ignore_index=ignore_index)
    if method == "median_frequency":
        return median_frequency_weights(counts, absent_weight=absent_weight)
    return inverse_frequency_weights(counts, absent_weight=absent_weight)
