"""A streaming confusion matrix and the FCN paper's segmentation metrics computed from it.

Definitions follow Long, Shelhamer and Darrell, "Fully Convolutional Networks for Semantic
Segmentation" (CVPR 2015, https://arxiv.org/abs/1411.4038), section 5. With ``n_ij`` the number of
pixels of target class ``i`` predicted as class ``j``, ``t_i = sum_j n_ij`` the pixels of class
``i`` and ``n_cl`` the number of classes counted:

- pixel accuracy ``sum_i n_ii / sum_i t_i``
- mean accuracy ``(1 / n_cl) sum_i n_ii / t_i``
- IoU of class ``i``: ``n_ii / (t_i + sum_j n_ji - n_ii)``; mean IoU is its average
- frequency-weighted IoU ``(sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)``
- Dice (F1) of class ``i``: ``2 n_ii / (t_i + sum_j n_ji)``

How the paper differs: it leaves classes with no pixels unspecified. Here a ratio whose
denominator is zero is NaN and the means skip NaN, which gives three cases:

- absent class (no target and no predicted pixels): accuracy, IoU and Dice are NaN, left out
  of every mean;
- missed class (target pixels, none predicted): IoU 0 and Dice 0, counted in the means;
- spurious class (predicted, no target pixels): IoU 0 and Dice 0, counted in the means;
  accuracy NaN (no ``t_i`` to divide by), left out of the mean accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch

from pixelwise._checks import check_num_classes_and_ignore, message
from pixelwise._metric_names import SUMMARY_KEYS
from pixelwise.metrics._labels import class_maps

# The scalar scores summary() returns, in its order; each is also the name of the method that
# computes it. The run's metrics.csv columns, the config's metric choices and the command
# line's means read this one tuple.


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    # 0/0 -> NaN on purpose: an undefined score must not pass for a perfect or a zero one.
    return numerator / denominator


class ConfusionMatrix:
    """Counts pixels by (target class, predicted class) over any number of batches.

    ``matrix[i, j]`` is the number of pixels of target class ``i`` predicted as ``j`` (int64);
    pixels whose target is ``ignore_index`` are not counted. Matrices add: to combine the
    processes of a distributed run, sum ``matrix`` with one ``torch.distributed.all_reduce``
    (create the matrix on the backend's device, e.g. ``device="cuda"`` for NCCL), or merge
    two instances with ``a + b``.

    Args:
        num_classes: K, the number of classes.
        ignore_index: target value of unlabelled pixels, outside ``[0, K)``; None if none.
        device: where ``matrix`` lives; counts from any device are added into it.

    Shape:
        matrix: (K, K), rows target classes, columns predicted classes.

    Example:
        >>> cm = ConfusionMatrix(3)
        >>> cm.update(torch.tensor([[[0, 1, 2]]]), torch.tensor([[[0, 1, 1]]])).mean_iou()
        0.5
    """

    SUMMARY_KEYS: ClassVar[tuple[str, ...]] = SUMMARY_KEYS

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = 255,
        *,
        device: torch.device | str | None = None,
    ) -> None:
        self.num_classes, self.ignore_index = check_num_classes_and_ignore(
            num_classes, ignore_index
        )
        self.matrix = torch.zeros(
            self.num_classes, self.num_classes, dtype=torch.int64, device=device
        )

    def update(self, pred_or_logits: torch.Tensor, target: torch.Tensor) -> ConfusionMatrix:
        """Add one batch; returns ``self`` so calls can chain.

        Raises a ValueError naming the values when a target is outside ``[0, K)`` and not
        ``ignore_index``, or a predicted label is outside ``[0, K)``.

        Shape:
            pred_or_logits: (N, K, H, W) floating logits (argmax over K is taken) or
                (N, H, W) integer labels.
            target: (N, H, W) integer.
        """
        pred, target = class_maps(pred_or_logits, target, self.num_classes, self.ignore_index)
        k = self.num_classes
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            pred, target = pred[keep], target[keep]  # (P,) counted pixels
        counts = torch.bincount((target * k + pred).reshape(-1), minlength=k * k).reshape(k, k)
        self.matrix += counts.to(self.matrix.device)
        return self

    def reset(self) -> None:
        """Zero the counts, keeping the class count, ignore_index and device."""
        self.matrix.zero_()

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """A new matrix holding the counts of both (e.g. two workers or two data splits)."""
        if not isinstance(other, ConfusionMatrix):
            raise TypeError(message("merged object", "be a ConfusionMatrix", type(other).__name__))
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError(
                message(
                    "merged matrices",
                    "share num_classes and ignore_index",
                    f"{(self.num_classes, self.ignore_index)} and "
                    f"{(other.num_classes, other.ignore_index)}",
                )
            )
        merged = ConfusionMatrix(self.num_classes, self.ignore_index, device=self.matrix.device)
        merged.matrix = self.matrix + other.matrix.to(self.matrix.device)
        return merged

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        return self.merge(other)

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"pixels={int(self.matrix.sum())})"
        )

    def _counts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.matrix.detach().to("cpu", torch.float64)
        return m.diagonal(), m.sum(dim=1), m.sum(dim=0)  # n_ii, t_i, predicted per class

    def pixel_accuracy(self) -> float:
        """``sum_i n_ii / sum_i t_i``; NaN before any pixel is counted."""
        hits, target, _ = self._counts()
        return float(_ratio(hits.sum(), target.sum()))

    def class_accuracy(self) -> torch.Tensor:
        """Per-class accuracy (recall) ``n_ii / t_i``, NaN where ``t_i = 0``. Shape: (K,)."""
        hits, target, _ = self._counts()
        return _ratio(hits, target)

    def mean_accuracy(self) -> float:
        """Mean of :meth:`class_accuracy` over classes with target pixels."""
        return float(torch.nanmean(self.class_accuracy()))

    def iou(self) -> torch.Tensor:
        """Per-class IoU ``n_ii / (t_i + sum_j n_ji - n_ii)``, NaN if absent. Shape: (K,)."""
        hits, target, predicted = self._counts()
        return _ratio(hits, target + predicted - hits)

    def mean_iou(self) -> float:
        """Mean of :meth:`iou` over classes present in the target or the prediction."""
        return float(torch.nanmean(self.iou()))

    def frequency_weighted_iou(self) -> float:
        """IoU averaged with weights ``t_i / sum_k t_k``; classes without target pixels weigh 0."""
        _, target, _ = self._counts()
        weighted = torch.where(target > 0, target * self.iou(), torch.zeros_like(target))
        return float(_ratio(weighted.sum(), target.sum()))

    def dice(self) -> torch.Tensor:
        """Per-class Dice/F1 ``2 n_ii / (t_i + sum_j n_ji)``, NaN if absent. Shape: (K,)."""
        hits, target, predicted = self._counts()
        return _ratio(2 * hits, target + predicted)

    def mean_dice(self) -> float:
        """Mean of :meth:`dice` over classes present in the target or the prediction."""
        return float(torch.nanmean(self.dice()))

    def summary(self, class_names: Sequence[str] | None = None) -> dict[str, object]:
        """All metrics as plain numbers; per class keyed by name (default ``"0"``, ``"1"``, ...).

        Returns a dict with the :data:`SUMMARY_KEYS` (``pixel_accuracy``, ``mean_accuracy``,
        ``mean_iou``, ``frequency_weighted_iou``, ``mean_dice``: floats) and ``classes``: name ->
        ``{"iou", "accuracy", "dice", "target_pixels", "predicted_pixels"}``. NaN marks an
        undefined value, as in the per-class methods.
        """
        names = self._class_names(class_names)
        _, target, predicted = self._counts()
        iou, accuracy, dice = (
            self.iou().tolist(),
            self.class_accuracy().tolist(),
            self.dice().tolist(),
        )
        classes = {
            name: {
                "iou": iou[i],
                "accuracy": accuracy[i],
                "dice": dice[i],
                "target_pixels": int(target[i]),
                "predicted_pixels": int(predicted[i]),
            }
            for i, name in enumerate(names)
        }
        scores = {key: getattr(self, key)() for key in SUMMARY_KEYS}
        return {**scores, "classes": classes}

    def _class_names(self, class_names: Sequence[str] | None) -> list[str]:
        if class_names is None:
            return [str(i) for i in range(self.num_classes)]
        names = [str(name) for name in class_names]
        if len(names) != self.num_classes or len(set(names)) != len(names):
            raise ValueError(
                message(
                    "class_names",
                    f"be {self.num_classes} distinct names",
                    f"{len(names)} names {names[:4]}...",
                )
            )
        return names
