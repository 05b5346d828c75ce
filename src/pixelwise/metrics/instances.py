"""ISBI 2012 scores of label images: Rand and information-theoretic scores, pixel error.

Definitions follow Arganda-Carreras et al., "Crowdsourcing the creation of image segmentation
algorithms for connectomics", Front. Neuroanat. 9:142 (2015),
https://doi.org/10.3389/fnana.2015.00142. Let ``S`` be the predicted segmentation and ``T`` the
ground truth, ``p_ij`` the probability that a pixel lies in predicted segment ``i`` and true
segment ``j``, ``s_i = sum_j p_ij`` and ``t_j = sum_i p_ij``:

- ``V_rand_split = sum p_ij^2 / sum t_j^2`` (1 = no true segment split),
  ``V_rand_merge = sum p_ij^2 / sum s_i^2`` (1 = no true segments merged),
  ``V_rand`` their harmonic mean (the F-score with alpha = 0.5), Rand error ``1 - V_rand``;
- ``V_info_split = I(S;T) / H(S)``, ``V_info_merge = I(S;T) / H(T)``, ``V_info`` their harmonic
  mean; ``vi_split = H(S|T)`` and ``vi_merge = H(T|S)`` are the two halves of the variation of
  information, in bits;
- pixel error: fraction of all pixels whose segment/background status (label != 0) differs.

Foreground restriction, as in the challenge's scoring code (Fiji, trainableSegmentation
``RandError``/``VariationOfInformation``): pixels where the ground truth is 0 (membrane) are
dropped; predicted pixels labelled 0 inside the remaining area are by default each a segment of
their own ("singletons"), so predicted membrane neither merges nor joins anything.

Conventions beside the paper, selectable for comparison with other tools:

- ``pred_background="segment"`` treats predicted label 0 as one ordinary segment;
- ``distinct_pairs=True`` counts pairs of two different pixels, ``n_ij (n_ij - 1)``, instead
  of the paper's ``p_ij^2`` (which pairs each pixel with itself too).

With both, the scores equal scikit-image's ``adapted_rand_error(gt, pred)`` (``ignore_labels``
default ``(0,)``), whose returned "precision" is ``V_rand_split`` and "recall" is
``V_rand_merge`` (scikit-image issue 6485: as pair classification, the merge score is the
precision). ``vi_split, vi_merge`` equal ``variation_of_information(gt, pred, ignore_labels=(0,))``
under ``pred_background="segment"``.

Degenerate parts: a split or merge score whose denominator is 0 (no pairs, or zero entropy:
a side with a single segment cannot split or merge) is 1. The challenge's final ranking also
thinned borders to one pixel before scoring; these functions score the segments as given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from pixelwise._checks import check_choice, message
from pixelwise.metrics._labels import compact_labels, label_image, pair_counts, same_shape

ISBI_THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(11))
"""Thresholds of the challenge's maximal-score search (0.0 to 1.0 in steps of 0.1)."""

_PRED_BACKGROUND = ("singletons", "segment")
_FOUR_NEIGHBOURS = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class IsbiScores:
    """The challenge's scores for one image; higher is better except the errors and ``vi_*``."""

    rand_error: float
    v_rand: float
    v_rand_split: float
    v_rand_merge: float
    v_info: float
    v_info_split: float
    v_info_merge: float
    vi_split: float
    vi_merge: float
    pixel_error: float


@dataclass(frozen=True)
class _Table:
    """Non-zero cells of the contingency table and its margins, as pixel counts."""

    joint: np.ndarray  # n_ij over cells with n_ij > 0
    pred_sizes: np.ndarray  # n * s_i
    gt_sizes: np.ndarray  # n * t_j


def _contingency(gt: np.ndarray, pred: np.ndarray, pred_background: str) -> _Table:
    foreground = gt != 0
    if not foreground.any():
        raise ValueError(
            message(
                "ground truth", "have at least one segment pixel (label != 0)", "only background 0"
            )
        )
    g, s = gt[foreground], pred[foreground]
    singletons = s == 0 if pred_background == "singletons" else np.zeros(s.shape, bool)
    g_ids, g_values = compact_labels(g)
    s_ids, s_values = compact_labels(s[~singletons])
    g_kept = g_ids[~singletons]
    if g_values.size * s_values.size <= 4 * g.size + 1024:
        joint = pair_counts(g_kept, s_ids, g_values.size, s_values.size).reshape(-1)
        joint = joint[joint > 0]
    else:  # too many segment pairs for a dense table: count the pairs that occur
        joint = np.unique(g_kept * s_values.size + s_ids, return_counts=True)[1]
    ones = np.ones(int(singletons.sum()), np.int64)
    return _Table(
        joint=np.concatenate([joint, ones]),
        pred_sizes=np.concatenate([np.bincount(s_ids, minlength=s_values.size), ones]),
        gt_sizes=np.bincount(g_ids, minlength=g_values.size),
    )


def _part(numerator: float, denominator: float) -> float:
    # A zero denominator means nothing could be split (or merged): a perfect part, not 0/0.
    return 1.0 if denominator == 0 else min(numerator / denominator, 1.0)


def _f_score(split: float, merge: float) -> float:
    return 0.0 if split + merge == 0 else 2 * split * merge / (split + merge)


def _rand_parts(table: _Table, distinct_pairs: bool) -> tuple[float, float]:
    def pairs(counts: np.ndarray) -> float:
        c = counts.astype(np.float64)
        return float(np.sum(c * (c - 1))) if distinct_pairs else float(np.sum(c * c))

    together = pairs(table.joint)
    return _part(together, pairs(table.gt_sizes)), _part(together, pairs(table.pred_sizes))


def _entropy(counts: np.ndarray, total: float) -> float:
    p = counts / total
    return float(-np.sum(p * np.log2(p)))


def _info_parts(table: _Table) -> tuple[float, float, float, float]:
    total = float(table.gt_sizes.sum())
    h_pred, h_gt = _entropy(table.pred_sizes, total), _entropy(table.gt_sizes, total)
    h_joint = _entropy(table.joint, total)
    mutual = min(max(h_pred + h_gt - h_joint, 0.0), h_pred, h_gt)
    vi_split, vi_merge = max(h_joint - h_gt, 0.0), max(h_joint - h_pred, 0.0)
    return _part(mutual, h_pred), _part(mutual, h_gt), vi_split, vi_merge


def pixel_error(gt: np.ndarray | torch.Tensor, pred: np.ndarray | torch.Tensor) -> float:
    """Fraction of pixels where ``gt != 0`` and ``pred != 0`` disagree (segment vs background).

    Shape:
        gt, pred: (H, W) integer label images.
    """
    gt, pred = _label_pair(gt, pred)
    return float(np.mean((gt != 0) != (pred != 0)))


def _label_pair(gt: object, pred: object) -> tuple[np.ndarray, np.ndarray]:
    gt, pred = label_image(gt, "ground-truth segments"), label_image(pred, "predicted segments")
    same_shape(gt, pred, "ground-truth and predicted segments")
    for name, labels in (("ground-truth segment labels", gt), ("predicted segment labels", pred)):
        if labels.size and labels.min() < 0:
            raise ValueError(message(name, "be >= 0 (0 = background)", f"minimum {labels.min()}"))
    return gt, pred


def isbi_scores(
    gt: np.ndarray | torch.Tensor,
    pred: np.ndarray | torch.Tensor,
    *,
    pred_background: str = "singletons",
    distinct_pairs: bool = False,
) -> IsbiScores:
    """Foreground-restricted Rand and information-theoretic scores, and pixel error, of one image.

    Args:
        gt: ground-truth segments, 0 = background/membrane (dropped from the Rand and info scores).
        pred: predicted segments, 0 = background/membrane.
        pred_background: ``"singletons"`` (challenge) or ``"segment"`` (scikit-image).
        distinct_pairs: count only pairs of two different pixels (scikit-image, SNEMI3D).

    Shape:
        gt, pred: (H, W) integer label images of one shape.
    """
    check_choice("pred_background", pred_background, _PRED_BACKGROUND)
    gt, pred = _label_pair(gt, pred)
    table = _contingency(gt, pred, pred_background)
    rand_split, rand_merge = _rand_parts(table, distinct_pairs)
    info_split, info_merge, vi_split, vi_merge = _info_parts(table)
    v_rand = _f_score(rand_split, rand_merge)
    return IsbiScores(
        rand_error=1.0 - v_rand,
        v_rand=v_rand,
        v_rand_split=rand_split,
        v_rand_merge=rand_merge,
        v_info=_f_score(info_split, info_merge),
        v_info_split=info_split,
        v_info_merge=info_merge,
        vi_split=vi_split,
        vi_merge=vi_merge,
        pixel_error=float(np.mean((gt != 0) != (pred != 0))),
    )


def membrane_to_segments(
    membrane: np.ndarray | torch.Tensor,
    threshold: float = 0.5,
    *,
    seed_threshold: float | None = None,
) -> np.ndarray:
    """Segments of a membrane (boundary) map: connected interior regions, membrane as 0.

    A pixel is interior where ``membrane < threshold`` (a bool map counts True as 1); interior
    pixels are joined through their 4 neighbours (up, down, left, right, as the challenge's
    scoring does), so regions touching only at a corner stay apart. Labels run 1..M in
    raster order of each region's first pixel.

    With ``seed_threshold`` (at most ``threshold``), a marker-controlled watershed instead: the
    markers are the 4-connected regions where ``membrane < seed_threshold`` (the cells the map
    is surest of), and each floods the interior uphill over the membrane map until it meets
    another (scikit-image's watershed, 4-connected). Two cells that a faint gap in their
    membrane joins at ``threshold`` keep a marker each and stay apart: where their floods meet,
    along the map's ridge, a one-pixel line becomes membrane (0), so the result is still a
    membrane map the challenge could score — the threshold's interior with cuts across the
    gaps. Interior regions without a marker stay segments of their own;
    ``seed_threshold == threshold`` gives the plain regions.

    Shape:
        membrane: (H, W) probabilities in [0, 1] or bool; returns (H, W) int64.
    """
    if isinstance(membrane, torch.Tensor):
        membrane = membrane.detach().cpu().numpy()
    if not isinstance(membrane, np.ndarray) or membrane.ndim != 2:
        got = (
            f"shape {membrane.shape}"
            if isinstance(membrane, np.ndarray)
            else type(membrane).__name__
        )
        raise ValueError(message("membrane map", "be a 2-D array (H, W)", got))
    membrane = membrane.astype(np.float64)
    if membrane.size and not (
        np.isfinite(membrane).all() and membrane.min() >= 0 and membrane.max() <= 1
    ):
        raise ValueError(
            message(
                "membrane probabilities",
                "be finite and lie in [0, 1]",
                f"range [{membrane.min()}, {membrane.max()}]",
                "divide an 8-bit map by 255 or apply a sigmoid to logits",
            )
        )
    interior = membrane < threshold
    labels, _ = ndimage.label(interior, structure=_FOUR_NEIGHBOURS)
    if seed_threshold is None:
        return labels.astype(np.int64)
    if not 0 <= seed_threshold <= threshold:
        raise ValueError(
            message("seed_threshold", f"lie in [0, threshold = {threshold}]", seed_threshold)
        )
    if not labels.any():  # no interior (or an empty map): nothing to flood
        return labels.astype(np.int64)
    from skimage.segmentation import watershed

    markers, _ = ndimage.label(membrane < seed_threshold, structure=_FOUR_NEIGHBOURS)
    flooded = watershed(membrane, markers, mask=interior, connectivity=1, watershed_line=True)
    # Interior regions without a marker are not flooded: they keep their own labels.
    seeded = np.zeros(int(labels.max()) + 1, bool)
    seeded[labels[markers > 0]] = True
    unreached = interior & ~seeded[labels]
    flooded = np.where(unreached, labels + flooded.max(), flooded)
    return _raster_order(flooded)


def _raster_order(labels: np.ndarray) -> np.ndarray:
    """The same segments relabelled 1..M in raster order of each one's first pixel (0 kept).

    Shape:
        (H, W) int -> (H, W) int64.
    """
    values, first = np.unique(labels.ravel(), return_index=True)
    keep = values != 0
    values, first = values[keep], first[keep]
    lookup = np.zeros(int(labels.max()) + 1, np.int64)
    lookup[values[np.argsort(first)]] = np.arange(1, len(values) + 1)
    return lookup[labels]


@dataclass(frozen=True)
class ThresholdSearch:
    """Scores at each threshold and the challenge's maximal F-scores (first threshold on ties)."""

    thresholds: tuple[float, ...]
    scores: tuple[IsbiScores, ...]
    best_v_rand: float
    best_v_rand_threshold: float
    best_v_info: float
    best_v_info_threshold: float


def maximal_isbi_scores(
    membrane: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    thresholds: Sequence[float] = ISBI_THRESHOLDS,
    *,
    pred_background: str = "singletons",
    distinct_pairs: bool = False,
    seed_fraction: float | None = None,
) -> ThresholdSearch:
    """Score a membrane probability map at each threshold; keep the best V_rand and V_info.

    Each threshold turns ``membrane`` into segments with :func:`membrane_to_segments` and
    scores them with :func:`isbi_scores`; V_rand and V_info are maximised separately, each
    with its own threshold. The minimal Rand error is ``1 - best_v_rand``. With
    ``seed_fraction`` f in [0, 1], threshold t segments by the seeded watershed, markers
    where ``membrane < f * t``.

    Shape:
        membrane: (H, W) probabilities in [0, 1]; gt: (H, W) ground-truth segments.
    """
    thresholds = tuple(float(t) for t in thresholds)
    if not thresholds:
        raise ValueError(message("thresholds", "hold at least one value", "an empty sequence"))
    if seed_fraction is not None and not 0 <= seed_fraction <= 1:
        raise ValueError(message("seed_fraction", "lie in [0, 1]", seed_fraction))
    scores = tuple(
        isbi_scores(
            gt,
            membrane_to_segments(
                membrane, t, seed_threshold=None if seed_fraction is None else seed_fraction * t
            ),
            pred_background=pred_background,
            distinct_pairs=distinct_pairs,
        )
        for t in thresholds
    )
    best_rand = int(np.argmax([s.v_rand for s in scores]))
    best_info = int(np.argmax([s.v_info for s in scores]))
    return ThresholdSearch(
        thresholds=thresholds,
        scores=scores,
        best_v_rand=scores[best_rand].v_rand,
        best_v_rand_threshold=thresholds[best_rand],
        best_v_info=scores[best_info].v_info,
        best_v_info_threshold=thresholds[best_info],
    )
