"""Boundary F1 (BF) score: how well predicted class contours follow the true ones.

The BF score of Csurka, Larlus and Perronnin, "What is a good evaluation measure for semantic
segmentation?" (BMVC 2013), as reported for SegNet by Badrinarayanan, Kendall and Cipolla
(TPAMI 2017, https://arxiv.org/abs/1511.00561). For each image and class ``c``:

- boundary pixels ``B_c`` of a map: labelled pixels of class ``c`` with at least one labelled
  4-neighbour of another class (the image frame is not a boundary);
- precision: fraction of predicted boundary pixels within ``theta`` (Euclidean distance between
  pixel centres, ``<= theta``) of a target boundary pixel; recall: the reverse;
- ``theta = tolerance * sqrt(H**2 + W**2)``, 0.75 % of the image diagonal by default;
- F1 = ``2 P R / (P + R)`` (0 when ``P + R = 0``).

Rules the paper leaves open, fixed here:

- ignore pixels (target == ``ignore_index``) are unknown ground, in both maps alike: they are
  never boundary pixels and never make a neighbour one, so neither the target's edge along an
  unlabelled region nor a predicted edge inside one is scored; a class counts as predicted
  only through pixels outside them;
- class present in both maps: F1 as above; when one map has no boundary pixels of the class
  (the class fills the image) its side's precision or recall is 1 by convention, so both
  boundary-free gives 1 and only one boundary-free gives 0;
- class present in only one map (missed or spurious): F1 0, and it counts in the image mean;
- class present in neither: NaN, left out;
- per image, the mean over the classes not NaN; over images, the mean over images not NaN
  (an image whose pixels are all ignored is NaN).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

from pixelwise._checks import check_num_classes_and_ignore, message
from pixelwise.metrics._labels import class_maps

_FOUR_NEIGHBOURS = ndimage.generate_binary_structure(2, 1)


def class_boundary(mask: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside ``mask``, counting only ``valid`` pixels.

    Shape:
        mask, valid: (H, W) bool (``valid`` all True when None); returns (H, W) bool.
    """
    if valid is None:
        valid = np.ones(mask.shape, bool)
    other = valid & ~mask
    # Dilation pads with False, so pixels outside the frame never make a boundary.
    next_to_other = ndimage.binary_dilation(other, structure=_FOUR_NEIGHBOURS)
    return mask & valid & next_to_other


def _matched_fraction(points: np.ndarray, reference: np.ndarray, theta: float) -> float:
    # Distance from every pixel to the nearest reference boundary pixel, read at the points.
    distance = ndimage.distance_transform_edt(~reference)
    return float(np.mean(distance[points] <= theta))


def _boundary_f1(pred_boundary: np.ndarray, target_boundary: np.ndarray, theta: float) -> float:
    has_pred, has_target = bool(pred_boundary.any()), bool(target_boundary.any())
    if not has_pred and not has_target:
        return 1.0
    if not has_pred or not has_target:
        return 0.0
    precision = _matched_fraction(pred_boundary, target_boundary, theta)
    recall = _matched_fraction(target_boundary, pred_boundary, theta)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _image_scores(
    pred: np.ndarray, target: np.ndarray, num_classes: int, valid: np.ndarray, theta: float
) -> np.ndarray:
    scores = np.full(num_classes, np.nan)
    in_target = np.bincount(target[valid], minlength=num_classes) > 0
    in_pred = np.bincount(pred[valid], minlength=num_classes) > 0
    for c in np.flatnonzero(in_target | in_pred):
        if not (in_target[c] and in_pred[c]):
            scores[c] = 0.0
            continue
        pred_boundary = class_boundary(pred == c, valid)
        target_boundary = class_boundary(target == c, valid)
        scores[c] = _boundary_f1(pred_boundary, target_boundary, theta)
    return scores


def _check_tolerance(tolerance: object) -> None:
    number = isinstance(tolerance, int | float) and not isinstance(tolerance, bool)
    if not (number and 0 <= tolerance < math.inf):
        expectation = "be a finite number >= 0 (a fraction of the image diagonal)"
        raise ValueError(message("tolerance", expectation, repr(tolerance)))


def boundary_f1_scores(
    pred_or_logits: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    *,
    ignore_index: int | None = 255,
    tolerance: float = 0.0075,
) -> np.ndarray:
    """Per image and class BF score; NaN where the class is in neither map.

    Args:
        pred_or_logits: logits (argmax over K is taken) or predicted labels.
        target: class indices or ``ignore_index``.
        num_classes: K.
        ignore_index: target value of unlabelled pixels; None if none.
        tolerance: match distance as a fraction of the image diagonal.

    Shape:
        pred_or_logits: (N, K, H, W) or (N, H, W); target: (N, H, W); returns (N, K) float64.
    """
    num_classes, ignore_index = check_num_classes_and_ignore(num_classes, ignore_index)
    _check_tolerance(tolerance)
    pred, target = class_maps(pred_or_logits, target, num_classes, ignore_index)
    pred, target = pred.cpu().numpy(), target.cpu().numpy()
    theta = tolerance * math.hypot(*target.shape[1:])
    scores = np.full((target.shape[0], num_classes), np.nan)
    for n in range(target.shape[0]):
        valid = (
            np.ones(target.shape[1:], bool) if ignore_index is None else target[n] != ignore_index
        )
        scores[n] = _image_scores(pred[n], target[n], num_classes, valid, theta)
    return scores


def boundary_f1(
    pred_or_logits: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    *,
    ignore_index: int | None = 255,
    tolerance: float = 0.0075,
) -> float:
    """BF score of a batch: per image the mean over classes present, then the mean over images.

    See :func:`boundary_f1_scores` for the arguments and the module docstring for the rules.
    To average over a data set, concatenate the per-image scores of every batch rather than
    averaging batch means, so that each image weighs the same.

    Shape:
        pred_or_logits: (N, K, H, W) or (N, H, W); target: (N, H, W).
    """
    scores = boundary_f1_scores(
        pred_or_logits, target, num_classes, ignore_index=ignore_index, tolerance=tolerance
    )
    return image_mean(scores)


def image_mean(scores: np.ndarray) -> float:
    """Mean over images of each image's mean over classes, skipping NaN at both levels.

    Shape:
        scores: (N, K) as returned by :func:`boundary_f1_scores`.
    """
    scored = ~np.isnan(scores)
    images = scored.any(axis=1)
    if not images.any():
        return math.nan
    per_image = np.where(scored, scores, 0.0).sum(axis=1)[images] / scored.sum(axis=1)[images]
    return float(per_image.mean())
