"""Object-level scores for touching instances: matched-object F1, average precision, merges, splits.

Inputs are instance label images: 0 is background, every other value one object (labels need not
be consecutive). Rules:

- matching: a ground-truth object and a predicted object match when their IoU exceeds
  ``iou_threshold`` (strictly). Thresholds below 0.5 are refused: above 0.5 each object can
  match at most one other (IoU > 0.5 means more than half of each lies in the other, and
  objects within one image do not overlap), so matching is unique without an assignment step;
- TP = matched pairs, FP = unmatched predictions, FN = unmatched ground-truth objects;
  precision TP/(TP+FP), recall TP/(TP+FN), F1 2TP/(2TP+FP+FN), and average precision
  TP/(TP+FP+FN) at one threshold, the 2018 Data Science Bowl form (Caicedo et al., Nature
  Methods 2019); ``mean_average_precision`` averages it over IoU 0.5, 0.55, ..., 0.95.
  A ratio with nothing to count (e.g. precision with no predictions) is NaN;
- merge: a predicted object that covers at least ``min_fraction`` (default 50 %) of the area
  of each of two or more ground-truth objects; ``merges`` counts such predicted objects;
- split: a ground-truth object that holds at least ``min_fraction`` of the area of each of two
  or more predicted objects; ``splits`` counts such ground-truth objects.

The area fraction is taken on the object being absorbed, so a merge needs most of each merged
nucleus inside the one prediction, and a split needs each fragment to lie mostly inside the one
nucleus, whatever the size of the other side.

Touching pairs (``touching_pairs``) ask the question the U-Net weight map is for directly: of the
ground-truth objects that touch (a pixel of each within ``distance`` pixels of the other in the
chessboard metric; 1 = 8-neighbours), how many pairs did the prediction keep apart? Each object's
*owner* is the predicted object covering the most of it, if that is at least ``min_fraction`` of
its area (else the object has no owner). A pair is *merged* when both objects have the same
owner (that prediction is then a merge in the sense above), *separated* when both have owners
and they differ, and *undetected* when either has none; the separation rate is
separated / (separated + merged).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pixelwise._checks import message
from pixelwise.metrics._labels import compact_labels, label_image, pair_counts, same_shape

DSB_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))
"""IoU thresholds of the Data Science Bowl 2018 score: 0.5 to 0.95 in steps of 0.05."""


@dataclass(frozen=True)
class Overlaps:
    """Pixel counts shared by every (ground-truth, predicted) object pair.

    Shape:
        intersection: (G, P); gt_areas: (G,); pred_areas: (P,); gt_labels: (G,); pred_labels: (P,).
    """

    gt_labels: np.ndarray
    pred_labels: np.ndarray
    intersection: np.ndarray
    gt_areas: np.ndarray
    pred_areas: np.ndarray

    def iou(self) -> np.ndarray:
        """IoU of every pair. Shape: (G, P) float64."""
        union = self.gt_areas[:, None] + self.pred_areas[None, :] - self.intersection
        return np.divide(self.intersection, union, out=np.zeros(union.shape), where=union > 0)


@dataclass(frozen=True)
class ObjectMatch:
    """Object-level scores of one image at one IoU threshold; ``pairs`` holds matched labels."""

    true_positives: int
    false_positives: int
    false_negatives: int
    precision: float
    recall: float
    f1: float
    average_precision: float
    merges: int
    splits: int
    pairs: tuple[tuple[int, int], ...]


def _checked_pair(
    gt: np.ndarray | torch.Tensor, pred: np.ndarray | torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Both label images as int64 arrays of one shape, labels >= 0 (else one-line errors)."""
    gt = label_image(gt, "ground-truth instances")
    pred = label_image(pred, "predicted instances")
    same_shape(gt, pred, "ground-truth and predicted instances")
    for name, labels in (("ground-truth instance labels", gt), ("predicted instance labels", pred)):
        if labels.size and labels.min() < 0:
            raise ValueError(message(name, "be >= 0 (0 = background)", f"minimum {labels.min()}"))
    return gt, pred


def overlapping_ious(
    gt: np.ndarray | torch.Tensor, pred: np.ndarray | torch.Tensor
) -> tuple[np.ndarray, int, int]:
    """The IoU of every (ground-truth, predicted) object pair that shares a pixel, and the
    object counts G and P. Every other pair has IoU 0.

    Linear in the pixels and the overlapping pairs, where :func:`object_overlaps` builds the
    dense G × P table: a speckled prediction of a barely trained network holds 10⁴–10⁵
    objects, and the parameter search scores many of them.

    Shape:
        gt, pred: (H, W) integer label images of one shape -> (pairs,) float64, int, int.
    """
    gt, pred = _checked_pair(gt, pred)
    gt_ids, gt_labels = compact_labels(gt)
    pred_ids, pred_labels = compact_labels(pred)
    gt_areas = np.bincount(gt_ids.reshape(-1), minlength=gt_labels.size)
    pred_areas = np.bincount(pred_ids.reshape(-1), minlength=pred_labels.size)
    both = (gt != 0) & (pred != 0)
    keys = gt_ids[both] * pred_labels.size + pred_ids[both]
    pairs, intersection = np.unique(keys, return_counts=True)
    g, p = np.divmod(pairs, pred_labels.size)
    union = gt_areas[g] + pred_areas[p] - intersection
    return intersection / union, _object_count(gt_labels), _object_count(pred_labels)


def _object_count(values: np.ndarray) -> int:
    """Objects among the sorted label values of an image (0, when present, is background)."""
    return int(values.size - (values.size > 0 and values[0] == 0))


def object_overlaps(gt: np.ndarray | torch.Tensor, pred: np.ndarray | torch.Tensor) -> Overlaps:
    """Intersections and areas of all objects of two instance label images (0 = background).

    Shape:
        gt, pred: (H, W) integer label images of one shape.
    """
    gt, pred = _checked_pair(gt, pred)
    gt_ids, gt_labels = compact_labels(gt)
    pred_ids, pred_labels = compact_labels(pred)
    cells = pair_counts(gt_ids, pred_ids, gt_labels.size, pred_labels.size)  # (G+1, P+1) with 0
    gt_areas, pred_areas = cells.sum(axis=1), cells.sum(axis=0)
    # Drop the background row and column: background is not an object on either side.
    g, p = gt_labels != 0, pred_labels != 0
    return Overlaps(gt_labels[g], pred_labels[p], cells[np.ix_(g, p)], gt_areas[g], pred_areas[p])


def _nan_ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def _check_fraction(name: str, value: object, low: float, low_inclusive: bool) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value <= 1
    ok = ok and (value >= low if low_inclusive else value > low)
    if not ok:
        bracket = "[" if low_inclusive else "("
        raise ValueError(message(name, f"lie in {bracket}{low}, 1]", repr(value)))
    return float(value)


def _covers_gt(overlaps: Overlaps, min_fraction: float) -> np.ndarray:
    """(G, P) bool: the predicted object covers at least ``min_fraction`` of the true one."""
    inter = overlaps.intersection
    return (inter > 0) & (inter >= min_fraction * overlaps.gt_areas[:, None])


def _merges_and_splits(overlaps: Overlaps, min_fraction: float) -> tuple[int, int]:
    inter = overlaps.intersection
    covers_gt = _covers_gt(overlaps, min_fraction)  # (G, P)
    holds_pred = (inter > 0) & (inter >= min_fraction * overlaps.pred_areas[None, :])  # (G, P)
    return int(np.sum(covers_gt.sum(axis=0) >= 2)), int(np.sum(holds_pred.sum(axis=1) >= 2))


def match_objects(
    gt: np.ndarray | torch.Tensor,
    pred: np.ndarray | torch.Tensor,
    *,
    iou_threshold: float = 0.5,
    min_fraction: float = 0.5,
) -> ObjectMatch:
    """Match objects one-to-one at IoU > ``iou_threshold`` and count merges and splits.

    Args:
        gt: ground-truth instances, 0 = background.
        pred: predicted instances, 0 = background.
        iou_threshold: in [0.5, 1]; a pair matches when its IoU is strictly greater.
        min_fraction: share of an object's area that makes it "covered" in the merge/split rules.

    Shape:
        gt, pred: (H, W) integer label images of one shape.
    """
    iou_threshold = _check_fraction("iou_threshold", iou_threshold, 0.5, low_inclusive=True)
    min_fraction = _check_fraction("min_fraction", min_fraction, 0.0, low_inclusive=False)
    overlaps = object_overlaps(gt, pred)
    g, p = np.nonzero(overlaps.iou() > iou_threshold)
    tp = int(g.size)
    fp, fn = overlaps.pred_labels.size - tp, overlaps.gt_labels.size - tp
    merges, splits = _merges_and_splits(overlaps, min_fraction)
    return ObjectMatch(
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        precision=_nan_ratio(tp, tp + fp),
        recall=_nan_ratio(tp, tp + fn),
        f1=_nan_ratio(2 * tp, 2 * tp + fp + fn),
        average_precision=_nan_ratio(tp, tp + fp + fn),
        merges=merges,
        splits=splits,
        pairs=tuple(
            zip(overlaps.gt_labels[g].tolist(), overlaps.pred_labels[p].tolist(), strict=True)
        ),
    )


def mean_average_precision(
    gt: np.ndarray | torch.Tensor,
    pred: np.ndarray | torch.Tensor,
    thresholds: Sequence[float] = DSB_THRESHOLDS,
) -> float:
    """Mean over ``thresholds`` of TP/(TP+FP+FN), the Data Science Bowl 2018 image score.

    NaN when neither image has an object.

    Shape:
        gt, pred: (H, W) integer label images of one shape.
    """
    if len(thresholds) == 0:
        raise ValueError(message("thresholds", "hold at least one IoU value", "an empty sequence"))
    thresholds = [_check_fraction("IoU threshold", t, 0.5, low_inclusive=True) for t in thresholds]
    iou, g, p = overlapping_ious(gt, pred)
    total = g + p
    scores = [_nan_ratio(int(np.sum(iou > t)), total - int(np.sum(iou > t))) for t in thresholds]
    return float(np.mean(scores))


@dataclass(frozen=True)
class TouchingPairs:
    """What became of the touching ground-truth pairs of one image (see the module rules)."""

    pairs: int
    separated: int
    merged: int
    undetected: int

    @property
    def separation_rate(self) -> float:
        """separated / (separated + merged); NaN when no pair was detected."""
        return _nan_ratio(self.separated, self.separated + self.merged)


def touching_label_pairs(labels: np.ndarray, distance: int = 1) -> np.ndarray:
    """The distinct pairs of objects with pixels within ``distance`` of each other (chessboard).

    Returns:
        (M, 2) int64 array of label pairs ``(a, b)`` with ``0 < a < b``, sorted by rows.

    Shape:
        labels: (H, W) integer label image, 0 = background.
    """
    labels = label_image(labels, "instances")
    if isinstance(distance, bool) or not isinstance(distance, int) or distance < 1:
        raise ValueError(message("distance", "be an int >= 1", repr(distance)))
    h, w = labels.shape
    found = [np.zeros((0, 2), np.int64)]
    # Half of the offsets in the (2d + 1)² square: each unordered pixel pair is seen once.
    for dy in range(0, distance + 1):
        for dx in range(-distance, distance + 1):
            if (dy == 0 and dx <= 0) or dy >= h or abs(dx) >= w:
                continue
            a = labels[: h - dy, max(0, -dx) : w - max(0, dx)]
            b = labels[dy:, max(0, dx) : w - max(0, -dx)]
            near = (a > 0) & (b > 0) & (a != b)
            if near.any():
                first, second = a[near], b[near]
                found.append(np.stack([np.minimum(first, second), np.maximum(first, second)], 1))
    return np.unique(np.concatenate(found).astype(np.int64), axis=0)


def touching_pairs(
    gt: np.ndarray | torch.Tensor,
    pred: np.ndarray | torch.Tensor,
    *,
    distance: int = 1,
    min_fraction: float = 0.5,
) -> TouchingPairs:
    """Count the touching ground-truth pairs that ``pred`` separated, merged or missed.

    Args:
        gt: ground-truth instances, 0 = background.
        pred: predicted instances, 0 = background.
        distance: two objects touch when a pixel of each lies within this chessboard distance
            (1: 8-neighbours, as adjacent labels of touching nuclei are).
        min_fraction: share of an object's area its owner must cover.

    Shape:
        gt, pred: (H, W) integer label images of one shape.
    """
    min_fraction = _check_fraction("min_fraction", min_fraction, 0.0, low_inclusive=False)
    overlaps = object_overlaps(gt, pred)
    pairs = touching_label_pairs(label_image(gt, "ground-truth instances"), distance)
    if len(pairs) == 0:
        return TouchingPairs(0, 0, 0, 0)
    # The owner is the largest overlap; it covers the object whenever any prediction does.
    owner = np.full(overlaps.gt_labels.size, -1, np.int64)
    if overlaps.pred_labels.size:
        owned = _covers_gt(overlaps, min_fraction).any(axis=1)  # (G,)
        owner[owned] = overlaps.intersection.argmax(axis=1)[owned]
    # gt_labels is sorted (np.unique), so searchsorted maps each label to its row.
    first, second = (owner[np.searchsorted(overlaps.gt_labels, pairs[:, k])] for k in (0, 1))
    detected = (first >= 0) & (second >= 0)
    merged = int(np.sum(detected & (first == second)))
    separated = int(np.sum(detected)) - merged
    return TouchingPairs(len(pairs), separated, merged, len(pairs) - separated - merged)
