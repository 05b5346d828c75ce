"""Boundary F1 against a brute-force pairwise-distance reference and hand-built cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pixelwise.metrics import boundary_f1, boundary_f1_scores

IGNORE = 255


def loop_boundary(labels: np.ndarray, c: int, valid: np.ndarray) -> list[tuple[int, int]]:
    """Labelled pixels of class c with a labelled 4-neighbour inside the image of another class."""
    h, w = labels.shape
    points = []
    for y in range(h):
        for x in range(w):
            if labels[y, x] != c or not valid[y, x]:
                continue
            neighbours = [(y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)]
            inside = [(v, u) for v, u in neighbours if 0 <= v < h and 0 <= u < w]
            if any(valid[v, u] and labels[v, u] != c for v, u in inside):
                points.append((y, x))
    return points


def matched(points: list, reference: list, theta: float) -> float:
    a, b = np.array(points, float), np.array(reference, float)
    distances = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))  # all pairs
    return float(np.mean(distances.min(axis=1) <= theta))


def reference_scores(pred: np.ndarray, target: np.ndarray, k: int, tolerance: float) -> np.ndarray:
    """The documented rules, written out with explicit pixel lists and pairwise distances."""
    theta = tolerance * math.sqrt(target.shape[0] ** 2 + target.shape[1] ** 2)
    valid = target != IGNORE
    scores = np.full(k, np.nan)
    for c in range(k):
        in_t, in_p = bool((target == c).any()), bool(((pred == c) & valid).any())
        if not (in_t or in_p):
            continue
        if not (in_t and in_p):
            scores[c] = 0.0
            continue
        bp, bt = loop_boundary(pred, c, valid), loop_boundary(target, c, valid)
        if not bp and not bt:
            scores[c] = 1.0
        elif not bp or not bt:
            scores[c] = 0.0
        else:
            p, r = matched(bp, bt, theta), matched(bt, bp, theta)
            scores[c] = 0.0 if p + r == 0 else 2 * p * r / (p + r)
    return scores


def blobs(rng: np.random.Generator, shape: tuple[int, int], k: int, n_seeds: int) -> np.ndarray:
    seeds = rng.integers(0, shape, size=(n_seeds, 2))
    yy, xx = np.indices(shape)
    nearest = ((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2).argmin(-1)
    return rng.integers(0, k, n_seeds)[nearest]


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k, shape = 4, (23, 31)
    target = np.stack([blobs(rng, shape, k, 7) for _ in range(2)])
    pred = np.stack([blobs(rng, shape, k, 9) for _ in range(2)])
    target[0][rng.random(shape) < 0.08] = IGNORE
    target[1, :5, :6] = IGNORE
    tolerance = 2.3 / math.hypot(*shape)  # 2.3 pixels: some matches at distance 1, 1.41, 2, 2.24
    ours = boundary_f1_scores(
        torch.from_numpy(pred), torch.from_numpy(target), k, tolerance=tolerance
    )
    expected = np.stack([reference_scores(pred[n], target[n], k, tolerance) for n in range(2)])
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)
    assert 0 < np.nanmean(ours) < 1
    per_image = [np.nanmean(row) for row in expected]
    assert boundary_f1(
        torch.from_numpy(pred), torch.from_numpy(target), k, tolerance=tolerance
    ) == pytest.approx(np.mean(per_image))


def stripes(h: int, w: int, edge: int) -> torch.Tensor:
    labels = torch.zeros(1, h, w, dtype=torch.long)
    labels[..., edge:] = 1
    return labels


def test_one_pixel_shift_by_hand() -> None:
    # 5 x 10 image, class 0 | class 1 edge between columns 4/5 (target) and 5/6 (prediction):
    # every boundary pixel is exactly 1 pixel from its counterpart.
    target, pred = stripes(5, 10, 5), stripes(5, 10, 6)
    diagonal = math.hypot(5, 10)
    assert boundary_f1(pred, target, 2) == 0.0  # default theta = 0.084 px: nothing matches
    assert boundary_f1(pred, target, 2, tolerance=1.01 / diagonal) == 1.0
    assert boundary_f1(target, target, 2) == 1.0
    logits = torch.nn.functional.one_hot(pred, 2).permute(0, 3, 1, 2).float()
    assert boundary_f1(logits, target, 2, tolerance=1.01 / diagonal) == 1.0


def test_presence_rules() -> None:
    target = torch.zeros(1, 7, 9, dtype=torch.long)
    target[0, 2:5, 2:5] = 1  # class 1 square, perfectly predicted
    pred = target.clone()
    pred[0, 0, 7:] = 2  # class 2 only predicted: 0
    target[0, 6, :2] = 3  # class 3 only in the target: 0
    scores = boundary_f1_scores(pred, target, 5)[0]
    assert scores[1] == 1.0 and scores[2] == 0.0 and scores[3] == 0.0
    assert math.isnan(scores[4])  # in neither map: left out
    # class 0: both maps have boundaries; the predicted class-2 pixels and the missing class-3
    # pixels put unmatched class-0 boundary pixels on both sides, so 0 < F1 < 1.
    assert 0 < scores[0] < 1
    assert boundary_f1(pred, target, 5) == pytest.approx(np.nanmean(scores))


def test_image_frame_is_not_a_boundary_and_all_ignored_image_is_skipped() -> None:
    full = torch.ones(2, 6, 7, dtype=torch.long)
    target = full.clone()
    target[1] = IGNORE
    scores = boundary_f1_scores(full, target, 2)
    assert scores[0, 1] == 1.0 and math.isnan(scores[0, 0])  # one class filling the frame
    assert np.isnan(scores[1]).all()
    assert boundary_f1(full, target, 2) == 1.0  # the all-ignored image does not count
    assert math.isnan(boundary_f1(full[1:], target[1:], 2))


def test_predicted_boundaries_on_ignore_pixels_are_dropped() -> None:
    target = stripes(9, 12, 6)
    target[0, :, :3] = IGNORE
    pred = stripes(9, 12, 6)
    noisy = pred.clone()
    noisy[0, 2:5, 0:2] = 1  # a class-1 blob entirely on ignored pixels
    clean_scores = boundary_f1_scores(pred, target, 2)
    assert np.array_equal(boundary_f1_scores(noisy, target, 2), clean_scores)
    assert clean_scores[0].tolist() == [1.0, 1.0]


def test_invalid_tolerance_and_labels() -> None:
    target = torch.zeros(1, 3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"tolerance must be a finite number >= 0 .*got -0.1"):
        boundary_f1(target, target, 2, tolerance=-0.1)
    with pytest.raises(
        ValueError, match=r"predicted label values must be in \[0, 2\), got 7 \(1 pixels\)"
    ):
        boundary_f1(torch.tensor([[[0, 7, 0]]]), torch.zeros(1, 1, 3, dtype=torch.long), 2)
