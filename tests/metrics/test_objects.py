"""Object matching, merges and splits on hand-built touching objects and a per-object loop reference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pixelwise.metrics import (
    DSB_THRESHOLDS,
    TouchingPairs,
    match_objects,
    mean_average_precision,
    touching_label_pairs,
    touching_pairs,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
NUCLEI = DATA / "nuclei" / "instances"


def two_touching_nuclei() -> np.ndarray:
    gt = np.zeros((9, 13), np.int64)
    gt[2:7, 1:7] = 1  # 30 pixels
    gt[3:5, 7:12] = 2  # 10 pixels, touching nucleus 1 along column 6 / 7
    return gt


def test_two_touching_nuclei_predicted_as_one_is_one_merge() -> None:
    gt = two_touching_nuclei()
    pred = np.where(gt > 0, 4, 0)
    m = match_objects(gt, pred)
    assert (m.merges, m.splits) == (1, 0)
    # IoU(1, 4) = 30 / 40 > 0.5 matches; nucleus 2 (IoU 10 / 40) is missed.
    assert (m.true_positives, m.false_positives, m.false_negatives) == (1, 0, 1)
    assert m.pairs == ((1, 4),)
    assert (m.precision, m.recall, m.f1, m.average_precision) == (
        1.0,
        0.5,
        pytest.approx(2 / 3),
        0.5,
    )


def test_one_object_predicted_as_two_is_one_split() -> None:
    gt = np.zeros((8, 11), np.int64)
    gt[1:7, 1:10] = 3  # 54 pixels
    pred = np.zeros_like(gt)
    pred[1:7, 1:4] = 1  # 18 pixels, IoU 1/3
    pred[1:7, 4:10] = 2  # 36 pixels, IoU 2/3 -> the match
    m = match_objects(gt, pred)
    assert (m.merges, m.splits) == (0, 1)
    assert (m.true_positives, m.false_positives, m.false_negatives) == (1, 1, 0)
    assert m.pairs == ((3, 2),)


def test_perfect_prediction_with_other_labels() -> None:
    gt = two_touching_nuclei()
    pred = np.select([gt == 1, gt == 2], [17, 5], 0)
    m = match_objects(torch.from_numpy(gt), pred)
    assert (m.f1, m.average_precision, m.precision, m.recall) == (1.0, 1.0, 1.0, 1.0)
    assert (m.merges, m.splits) == (0, 0) and sorted(m.pairs) == [(1, 17), (2, 5)]
    assert mean_average_precision(gt, pred) == 1.0
    huge = np.where(pred > 0, pred + 10**14, 0)  # label values far beyond the pixel count
    assert match_objects(gt, huge).pairs == tuple((g, p + 10**14) for g, p in m.pairs)


def test_substantial_overlap_rule_for_merges() -> None:
    gt = two_touching_nuclei()
    pred = np.zeros_like(gt)
    pred[2:7, 1:7] = 1
    pred[3:4, 7:12] = 1  # takes 5 of nucleus 2's 10 pixels: exactly 50 % -> still a merge
    assert match_objects(gt, pred).merges == 1
    pred[3:4, 11] = 0  # 4 of 10: no longer substantial
    assert match_objects(gt, pred).merges == 0
    assert match_objects(gt, pred, min_fraction=0.4).merges == 1


def test_empty_images() -> None:
    empty = np.zeros((4, 5), np.int64)
    m = match_objects(empty, empty)
    assert all(math.isnan(v) for v in (m.precision, m.recall, m.f1, m.average_precision))
    assert math.isnan(mean_average_precision(empty, empty))
    one = empty.copy()
    one[1:3, 1:3] = 1
    m = match_objects(empty, one)  # one false positive, nothing to find
    assert (m.f1, m.precision, m.average_precision) == (0.0, 0.0, 0.0) and math.isnan(m.recall)


def loop_reference(gt: np.ndarray, pred: np.ndarray, threshold: float, min_fraction: float):
    """Object by object with boolean masks: matches, merges and splits as documented."""
    gts = [g for g in np.unique(gt) if g != 0]
    preds = [p for p in np.unique(pred) if p != 0]
    matches, merges, splits = [], 0, 0
    for g in gts:
        for p in preds:
            inter = np.sum((gt == g) & (pred == p))
            union = np.sum((gt == g) | (pred == p))
            if inter / union > threshold:
                matches.append((int(g), int(p)))
    for p in preds:
        covered = [
            g for g in gts if 0 < np.sum((gt == g) & (pred == p)) >= min_fraction * np.sum(gt == g)
        ]
        merges += len(covered) >= 2
    for g in gts:
        held = [
            p
            for p in preds
            if 0 < np.sum((gt == g) & (pred == p)) >= min_fraction * np.sum(pred == p)
        ]
        splits += len(held) >= 2
    return matches, merges, splits, len(gts), len(preds)


def voronoi(rng: np.random.Generator, shape: tuple[int, int], n: int) -> np.ndarray:
    seeds = rng.integers(0, shape, size=(n, 2))
    yy, xx = np.indices(shape)
    labels = ((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2).argmin(
        -1
    ) + 1
    return (
        labels * rng.permutation(np.r_[np.zeros(n // 4, int), np.ones(n - n // 4, int)])[labels - 1]
    )


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold", [0.5, 0.7])
def test_matches_object_loop_reference(seed: int, threshold: float) -> None:
    rng = np.random.default_rng(seed)
    gt = voronoi(rng, (29, 35), 14)
    pred = np.roll(gt, rng.integers(-2, 3, 2), axis=(0, 1))
    pred = np.where(rng.random(gt.shape) < 0.05, 0, pred)
    pred[voronoi(rng, gt.shape, 6) == 1] = 99  # an extra object that merges and cuts
    matches, merges, splits, n_gt, n_pred = loop_reference(gt, pred, threshold, 0.5)
    m = match_objects(gt, pred, iou_threshold=threshold)
    assert sorted(m.pairs) == sorted(matches)
    assert (
        len({g for g, _ in matches}) == len(matches) == len({p for _, p in matches})
    )  # one-to-one
    assert (m.true_positives, m.false_positives, m.false_negatives) == (
        len(matches),
        n_pred - len(matches),
        n_gt - len(matches),
    )
    assert (m.merges, m.splits) == (merges, splits)
    tps = [len(loop_reference(gt, pred, t, 0.5)[0]) for t in DSB_THRESHOLDS]
    expected_map = np.mean([tp / (n_gt + n_pred - tp) for tp in tps])
    assert mean_average_precision(gt, pred) == pytest.approx(expected_map)


def test_overlapping_ious_are_the_dense_tables_nonzero_entries() -> None:
    from pixelwise.metrics import object_overlaps
    from pixelwise.metrics.objects import overlapping_ious

    rng = np.random.default_rng(3)
    gt = voronoi(rng, (40, 50), 20)
    # A speckled prediction: hundreds of objects, large label values, gaps.
    pred = np.where(rng.random(gt.shape) < 0.5, rng.integers(1, 5000, gt.shape), 0)
    pred[:10, :10] = 70_000
    for a, b in ((gt, pred), (gt, gt), (gt, np.zeros_like(gt)), (np.zeros_like(gt), pred)):
        ious, g, p = overlapping_ious(a, b)
        dense = object_overlaps(a, b).iou()
        assert (g, p) == dense.shape
        assert sorted(ious.tolist()) == pytest.approx(sorted(dense[dense > 0].tolist()))
    assert mean_average_precision(gt, gt) == 1.0


def test_invalid_arguments() -> None:
    gt = two_touching_nuclei()
    with pytest.raises(ValueError, match=r"iou_threshold must lie in \[0.5, 1\], got 0.3"):
        match_objects(gt, gt, iou_threshold=0.3)
    with pytest.raises(ValueError, match=r"min_fraction must lie in \(0.0, 1\], got 0"):
        match_objects(gt, gt, min_fraction=0)
    with pytest.raises(
        ValueError,
        match=r"predicted instance labels must be >= 0 \(0 = background\), got minimum -2",
    ):
        match_objects(gt, -gt)
    with pytest.raises(
        ValueError, match="ground-truth and predicted instances must have the same shape"
    ):
        match_objects(gt, gt[:, :5])


def test_real_nuclei_merge_of_two_touching_nuclei() -> None:
    if not NUCLEI.is_dir():
        pytest.skip(f"nuclei instances not found at {NUCLEI}; real-data check skipped")
    from PIL import Image

    # Real touching nuclei have irregular shared borders and further neighbours around them.
    for path in sorted(NUCLEI.glob("*.png")):
        gt = np.array(Image.open(path)).astype(np.int64)
        a, b = gt[:, :-1], gt[:, 1:]
        touching = (a != b) & (a > 0) & (b > 0)
        if touching.any():
            break
    else:
        pytest.skip("no touching nuclei in the stored images")
    first, second = a[touching][0], b[touching][0]
    pred = np.where(gt == second, first, gt)
    assert match_objects(gt, gt).f1 == 1.0
    m = match_objects(gt, pred)
    assert (m.merges, m.splits) == (1, 0)
    n = len(np.unique(gt)) - 1
    assert m.false_negatives in (1, 2) and m.true_positives == n - m.false_negatives
    assert m.f1 < 1.0


def test_touching_pairs_merged_separated_and_undetected() -> None:
    gt = two_touching_nuclei()
    assert touching_label_pairs(gt).tolist() == [[1, 2]]
    merged = touching_pairs(gt, np.where(gt > 0, 4, 0))
    assert (merged.pairs, merged.separated, merged.merged, merged.undetected) == (1, 0, 1, 0)
    assert merged.separation_rate == 0.0
    apart = np.select([gt == 1, gt == 2], [3, 9], 0)
    apart[:, 6] = 0  # a one-pixel gap: nucleus 1 keeps 25 of its 30 pixels
    assert touching_pairs(gt, apart) == TouchingPairs(1, 1, 0, 0)
    assert touching_pairs(gt, apart).separation_rate == 1.0
    missed = np.where(gt == 1, 3, 0)
    missed[3, 7:9] = 5  # 2 of nucleus 2's 10 pixels: below min_fraction, no owner
    assert touching_pairs(gt, missed) == TouchingPairs(1, 0, 0, 1)
    assert math.isnan(touching_pairs(gt, missed).separation_rate)
    assert touching_pairs(gt, missed, min_fraction=0.2) == TouchingPairs(1, 1, 0, 0)


def test_touching_means_within_the_chessboard_distance() -> None:
    gt = np.zeros((7, 9), np.int64)
    gt[1:3, 1:3] = 1
    gt[3:5, 3:5] = 2  # diagonal neighbour of 1 (8-connected)
    gt[1:3, 6:8] = 3  # chessboard distance 2 from 2 ((3, 4) to (2, 6)), 4 from 1
    assert touching_label_pairs(gt).tolist() == [[1, 2]]
    assert touching_label_pairs(gt, distance=2).tolist() == [[1, 2], [2, 3]]
    assert touching_label_pairs(gt, distance=4).tolist() == [[1, 2], [1, 3], [2, 3]]
    with pytest.raises(ValueError, match="distance"):
        touching_label_pairs(gt, distance=0)


def _pairs_by_loop(labels: np.ndarray, distance: int) -> list[list[int]]:
    found = set()
    h, w = labels.shape
    for y, x in zip(*np.nonzero(labels), strict=True):
        for yy in range(max(0, y - distance), min(h, y + distance + 1)):
            for xx in range(max(0, x - distance), min(w, x + distance + 1)):
                a, b = int(labels[y, x]), int(labels[yy, xx])
                if b and a != b:
                    found.add((min(a, b), max(a, b)))
    return [list(p) for p in sorted(found)]


@pytest.mark.parametrize("distance", [1, 2, 3])
def test_touching_label_pairs_match_a_pixel_loop(distance: int) -> None:
    rng = np.random.default_rng(distance)
    labels = rng.integers(0, 6, size=(12, 15)) * (rng.random((12, 15)) < 0.3)
    assert touching_label_pairs(labels, distance).tolist() == _pairs_by_loop(labels, distance)


def test_touching_pairs_on_real_nuclei() -> None:
    if not NUCLEI.is_dir():
        pytest.skip("shared nuclei data not present")
    from PIL import Image

    for path in sorted(NUCLEI.glob("*.png")):
        gt = np.asarray(Image.open(path)).astype(np.int64)
        n = len(touching_label_pairs(gt))
        if n:
            break
    assert n > 0, "no nuclei image with touching objects"
    assert touching_pairs(gt, gt) == TouchingPairs(n, n, 0, 0)
    assert touching_pairs(gt, np.where(gt > 0, 1, 0)) == TouchingPairs(n, 0, n, 0)
