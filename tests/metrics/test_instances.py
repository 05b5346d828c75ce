"""ISBI 2012 scores against hand-computed cases, a dense probability-form reference and scikit-image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.measure import label as sk_label
from skimage.metrics import adapted_rand_error, variation_of_information

from pixelwise.metrics import (
    ISBI_THRESHOLDS,
    isbi_scores,
    maximal_isbi_scores,
    membrane_to_segments,
    pixel_error,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
ISBI_MASKS = DATA / "isbi2012" / "masks"


def dense_reference(gt: np.ndarray, pred: np.ndarray, singletons: bool) -> dict[str, float]:
    """The paper's formulas on a dense joint distribution p_ij (rows predicted, columns true)."""
    fg = gt != 0
    g, s = gt[fg], pred[fg].copy()
    if singletons:  # every predicted background pixel becomes its own segment
        zero = s == 0
        s[zero] = s.max() + 1 + np.arange(zero.sum())
    n = g.size
    s_labels, g_labels = np.unique(s), np.unique(g)
    p = np.zeros((s_labels.size, g_labels.size))
    np.add.at(p, (np.searchsorted(s_labels, s), np.searchsorted(g_labels, g)), 1.0 / n)
    s_i, t_j = p.sum(axis=1), p.sum(axis=0)
    nz = p > 0
    outer = s_i[:, None] * t_j[None, :]
    mutual = np.sum(p[nz] * np.log2(p[nz] / outer[nz]))
    h_s, h_t = -np.sum(s_i * np.log2(s_i)), -np.sum(t_j * np.log2(t_j))
    assert h_s > 0 and h_t > 0, "reference cases must not be degenerate"
    rand_split, rand_merge = np.sum(p**2) / np.sum(t_j**2), np.sum(p**2) / np.sum(s_i**2)
    info_split, info_merge = mutual / h_s, mutual / h_t
    return {
        "v_rand_split": rand_split,
        "v_rand_merge": rand_merge,
        "v_rand": 2 / (1 / rand_split + 1 / rand_merge),
        "v_info_split": info_split,
        "v_info_merge": info_merge,
        "v_info": 2 / (1 / info_split + 1 / info_merge),
        "vi_split": -np.sum(p[nz] * np.log2(p[nz] / np.broadcast_to(t_j, p.shape)[nz])),
        "vi_merge": -np.sum(p[nz] * np.log2(p[nz] / np.broadcast_to(s_i[:, None], p.shape)[nz])),
    }


def blob_labels(
    rng: np.random.Generator, shape: tuple[int, int], n_seeds: int, background: float
) -> np.ndarray:
    """Touching random regions (nearest seed), with a random share of pixels set to 0."""
    seeds = rng.integers(0, shape, size=(n_seeds, 2))
    yy, xx = np.indices(shape)
    d = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    labels = d.argmin(-1) + 1
    labels[rng.random(shape) < background] = 0
    return labels


def random_pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return blob_labels(rng, (37, 29), 9, 0.15), blob_labels(rng, (37, 29), 12, 0.1)


def test_hand_computed_merge_in_probability_form() -> None:
    # Two true segments of 2 pixels each predicted as one segment of 4.
    # p = [[1/2, 1/2]]: sum p^2 = 1/2, sum t^2 = 1/2, sum s^2 = 1 -> split 1, merge 1/2.
    # H(T) = 1 bit, H(S) = 0, I = 0 -> info split 1 (one predicted segment cannot split), merge 0.
    s = isbi_scores(np.array([[1, 1], [2, 2]]), np.array([[5, 5], [5, 5]]))
    assert (s.v_rand_split, s.v_rand_merge) == (1.0, 0.5)
    assert s.v_rand == pytest.approx(2 / 3) and s.rand_error == pytest.approx(1 / 3)
    assert (s.v_info_split, s.v_info_merge, s.v_info) == (1.0, 0.0, 0.0)
    assert (s.vi_split, s.vi_merge) == (0.0, 1.0)
    assert s.pixel_error == 0.0
    # Counting distinct pairs, one-pixel true segments hold no pair that could be split: split 1.
    d = isbi_scores(np.array([[1, 2]]), np.array([[1, 1]]), distinct_pairs=True)
    assert (d.v_rand_split, d.v_rand_merge, d.v_rand) == (1.0, 0.0, 0.0)


def test_scikit_image_precision_is_split_score_issue_6485() -> None:
    """scikit-image's "precision" is V_rand_split and its "recall" V_rand_merge.

    Ground truth 1 2 / 3 2 and one predicted segment over all 4 pixels (an extreme merge).
    Counting pairs of distinct pixels (unordered): the prediction puts C(4,2) = 6 pairs together,
    of which only the pair of 2s is together in the truth. As pair classification the precision
    is 1/6 and the recall 1/1; the paper's V_rand_merge = sum p^2 / sum s^2 is that precision.
    """
    gt, pred = np.array([[1, 2], [3, 2]]), np.ones((2, 2), np.int64)
    ours = isbi_scores(gt, pred, pred_background="segment", distinct_pairs=True)
    assert (ours.v_rand_split, ours.v_rand_merge) == (1.0, pytest.approx(1 / 6))
    are, sk_precision, sk_recall = adapted_rand_error(gt, pred)
    assert sk_precision == pytest.approx(1.0)  # reports the recall of pairs
    assert sk_recall == pytest.approx(1 / 6)  # reports the precision of pairs
    assert (ours.v_rand_split, ours.v_rand_merge) == pytest.approx(
        (sk_precision, sk_recall), abs=1e-15
    )
    assert ours.rand_error == pytest.approx(are, abs=1e-15)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("pred_background", ["singletons", "segment"])
def test_matches_dense_probability_form(seed: int, pred_background: str) -> None:
    gt, pred = random_pair(seed)
    ours = isbi_scores(gt, pred, pred_background=pred_background)
    ref = dense_reference(gt, pred, singletons=pred_background == "singletons")
    for name, value in ref.items():
        assert getattr(ours, name) == pytest.approx(value, abs=1e-12), name
    assert ours.rand_error == pytest.approx(1 - ref["v_rand"], abs=1e-12)


def test_huge_labels_and_many_tiny_segments_take_the_sorting_path() -> None:
    rng = np.random.default_rng(5)
    gt = rng.integers(0, 900, (37, 29))  # ~900 segments of ~1 pixel: too many pairs for a table
    pred = rng.integers(0, 700, (37, 29))
    ref = dense_reference(gt, pred, singletons=True)
    ours = isbi_scores(gt, pred)
    for name, value in ref.items():
        assert getattr(ours, name) == pytest.approx(value, abs=1e-12), name
    small_gt, small_pred = random_pair(11)
    huge = 10**15  # labels far beyond the pixel count: no lookup table by value
    relabelled = isbi_scores(
        np.where(small_gt > 0, small_gt + huge, 0), np.where(small_pred > 0, small_pred * huge, 0)
    )
    assert relabelled == isbi_scores(small_gt, small_pred)


@pytest.mark.parametrize("seed", range(4))
def test_matches_scikit_image_under_its_conventions(seed: int) -> None:
    gt, pred = random_pair(seed + 10)
    ours = isbi_scores(gt, pred, pred_background="segment", distinct_pairs=True)
    are, precision, recall = adapted_rand_error(gt, pred)
    assert (ours.rand_error, ours.v_rand_split, ours.v_rand_merge) == pytest.approx(
        (are, precision, recall), abs=1e-13
    )
    h_split, h_merge = variation_of_information(gt, pred, ignore_labels=(0,))
    assert (ours.vi_split, ours.vi_merge) == pytest.approx((h_split, h_merge), abs=1e-12)
    # The challenge's conventions give different numbers on the same images.
    official = isbi_scores(gt, pred)
    assert abs(official.v_rand_merge - recall) > 1e-4


def test_foreground_restriction_and_singletons() -> None:
    gt, pred = random_pair(7)
    base = isbi_scores(gt, pred)
    changed = pred.copy()
    changed[gt == 0] = 99  # anything the prediction says on true background is not scored ...
    moved = isbi_scores(gt, changed)
    assert moved.v_rand == base.v_rand and moved.v_info == base.v_info
    assert moved.pixel_error != base.pixel_error  # ... except by the pixel error
    # A prediction of all membrane: singletons merge nothing; one background segment merges all.
    none = np.zeros_like(gt)
    assert isbi_scores(gt, none).v_rand_merge == 1.0
    assert isbi_scores(gt, none).v_rand_split < 0.01
    assert isbi_scores(gt, none, pred_background="segment").v_rand_split == 1.0


def test_identical_segmentations_score_perfectly_and_pixel_error_by_hand() -> None:
    gt, _ = random_pair(3)
    relabelled = np.where(gt > 0, gt * 7 + 100, 0)
    s = isbi_scores(torch.from_numpy(gt), relabelled)
    assert (s.v_rand, s.v_info, s.rand_error, s.vi_split, s.vi_merge) == (1.0, 1.0, 0.0, 0.0, 0.0)
    a = np.array([[0, 1, 1], [2, 0, 0]])
    b = np.array([[0, 3, 0], [0, 4, 4]])  # differs at (0, 2), (1, 0), (1, 1), (1, 2)
    assert pixel_error(a, b) == pytest.approx(4 / 6)


def test_membrane_to_segments_uses_four_connectivity() -> None:
    membrane = np.array(
        [
            [0.1, 0.9, 0.2],
            [0.9, 0.2, 0.9],
            [0.3, 0.9, 0.7],
        ]
    )
    # Interior (< 0.5) pixels touch only at corners: five separate segments at 4-connectivity.
    labels = membrane_to_segments(membrane, 0.5)
    assert labels.tolist() == [[1, 0, 2], [0, 3, 0], [4, 0, 0]]
    assert membrane_to_segments(membrane, 0.8).max() == 5  # the 0.7 pixel is a corner-only fifth
    assert membrane_to_segments(membrane, 0.95).max() == 1
    rng = np.random.default_rng(0)
    prob = rng.random((41, 33))
    np.testing.assert_array_equal(
        membrane_to_segments(prob, 0.6), sk_label(prob < 0.6, connectivity=1)
    )
    assert membrane_to_segments(torch.tensor(membrane > 0.5)).max() == 4  # bool: True = membrane


def gapped_cells() -> tuple[np.ndarray, np.ndarray]:
    """Two cells (5x3 each) parted by a membrane column with a faint one-pixel gap (0.4);
    their true segments, the whole column true membrane."""
    membrane = np.full((5, 7), 0.05)
    membrane[:, 3] = 0.9
    membrane[2, 3] = 0.4
    gt = np.zeros((5, 7), np.int64)
    gt[:, :3], gt[:, 4:] = 1, 2
    return membrane, gt


def test_seeded_watershed_keeps_cells_apart_that_a_membrane_gap_joins() -> None:
    membrane, gt = gapped_cells()
    plain = membrane_to_segments(membrane, 0.5)
    assert plain.max() == 1  # the gap joins the two cells into one segment
    seeded = membrane_to_segments(membrane, 0.5, seed_threshold=0.2)
    # Where the two floods meet, the gap pixel, becomes a one-pixel membrane line: the true cells.
    np.testing.assert_array_equal(seeded, gt)
    np.testing.assert_array_equal((seeded != 0) != (plain != 0), membrane == 0.4)
    # Scored: one segment over two true cells halves the merge score; seeded, nothing is wrong.
    assert isbi_scores(gt, plain).v_rand == pytest.approx(2 / 3)
    assert isbi_scores(gt, seeded).v_rand == 1.0
    search = maximal_isbi_scores(membrane, gt, (0.5,), seed_fraction=0.4)
    assert search.best_v_rand == 1.0
    assert maximal_isbi_scores(membrane, gt, (0.5,)).best_v_rand == pytest.approx(2 / 3)


def test_seeded_watershed_edge_cases() -> None:
    rng = np.random.default_rng(1)
    prob = rng.random((37, 29))
    # Seeds at the threshold are the regions themselves: the plain segments.
    np.testing.assert_array_equal(
        membrane_to_segments(prob, 0.6, seed_threshold=0.6), membrane_to_segments(prob, 0.6)
    )
    # Seeds under the threshold refine the plain segments: lines cut them, nothing joins them.
    plain, seeded = (
        membrane_to_segments(prob, 0.6),
        membrane_to_segments(prob, 0.6, seed_threshold=0.3),
    )
    assert ((seeded != 0) <= (plain != 0)).all() and seeded.max() >= plain.max()
    inside = seeded != 0
    for label in range(1, seeded.max() + 1):
        assert len(np.unique(plain[inside & (seeded == label)])) == 1
    # An interior region no seed lies in stays a segment of its own, in raster order.
    membrane = np.full((5, 7), 0.9)
    membrane[1:4, 1:3] = 0.05  # a sure cell
    membrane[1:4, 4:6] = 0.3  # interior at 0.5, but under no seed at 0.2
    labels = membrane_to_segments(membrane, 0.5, seed_threshold=0.2)
    assert labels[2, 1] == 1 and labels[2, 4] == 2 and labels.max() == 2
    np.testing.assert_array_equal(labels != 0, membrane < 0.5)
    assert membrane_to_segments(np.ones((3, 4)), 0.5, seed_threshold=0.2).tolist() == [[0] * 4] * 3
    assert membrane_to_segments(np.zeros((0, 4)), 0.5, seed_threshold=0.2).shape == (0, 4)
    with pytest.raises(ValueError, match=r"^seed_threshold must lie in \[0, threshold = 0.5\]"):
        membrane_to_segments(membrane, 0.5, seed_threshold=0.7)
    with pytest.raises(ValueError, match=r"^seed_fraction must lie in \[0, 1\], got 1.5"):
        maximal_isbi_scores(membrane, labels, seed_fraction=1.5)


def test_threshold_search_picks_the_first_best_threshold() -> None:
    # Two true cells split by a strong membrane column (0.7); a faint false membrane (0.4)
    # cuts the left cell. t <= 0.4 keeps the false cut (a split), t >= 0.8 opens the true
    # membrane (a merge), 0.5 <= t <= 0.7 is perfect; the first of those must be reported.
    membrane = np.full((9, 11), 0.2)
    membrane[:, 6] = 0.7
    membrane[4, :6] = 0.4
    true_membrane = np.zeros((9, 11), bool)
    true_membrane[:, 6] = True
    gt = membrane_to_segments(true_membrane)
    assert gt.max() == 2
    search = maximal_isbi_scores(membrane, gt)
    assert search.thresholds == ISBI_THRESHOLDS
    per_t = [isbi_scores(gt, membrane_to_segments(membrane, t)).v_rand for t in ISBI_THRESHOLDS]
    assert [s.v_rand for s in search.scores] == per_t
    assert (search.best_v_rand, search.best_v_rand_threshold) == (1.0, 0.5)
    assert (search.best_v_info, search.best_v_info_threshold) == (1.0, 0.5)
    assert per_t[4] < 1.0 and per_t[8] < 1.0


@pytest.mark.parametrize(
    ("gt", "pred", "kwargs", "error", "pattern"),
    [
        (
            np.zeros((2, 3), int),
            np.zeros((3, 2), int),
            {},
            ValueError,
            r"ground-truth and predicted segments must have the same shape, got \(2, 3\) and \(3, 2\)",
        ),
        (
            np.ones((2, 2)),
            np.ones((2, 2), int),
            {},
            TypeError,
            r"ground-truth segments must hold integer labels, got float64; label segments first",
        ),
        (
            np.zeros((2, 2), int),
            np.ones((2, 2), int),
            {},
            ValueError,
            r"ground truth must have at least one segment pixel \(label != 0\), got only background 0",
        ),
        (
            np.ones((2, 2), int),
            -np.ones((2, 2), int),
            {},
            ValueError,
            r"predicted segment labels must be >= 0 \(0 = background\), got minimum -1",
        ),
        (
            np.ones((2, 2), int),
            np.ones((2, 2), int),
            {"pred_background": "singleton"},
            ValueError,
            r"pred_background must be one of \['singletons', 'segment'\], got 'singleton'; did you mean 'singletons'",
        ),
        (
            np.ones((1, 2, 2), int),
            np.ones((1, 2, 2), int),
            {},
            ValueError,
            r"ground-truth segments must be a 2-D label image \(H, W\), got shape \(1, 2, 2\)",
        ),
    ],
)
def test_invalid_inputs(gt, pred, kwargs, error, pattern) -> None:
    with pytest.raises(error, match=pattern):
        isbi_scores(gt, pred, **kwargs)


def test_membrane_range_is_checked() -> None:
    with pytest.raises(
        ValueError,
        match=r"membrane probabilities must be finite and lie in \[0, 1\], got range \[0.0, 255.0\]; divide",
    ):
        membrane_to_segments(np.array([[0, 255]], np.uint8))


def perturb_membrane(membrane: np.ndarray) -> np.ndarray:
    """Erode the membrane in the left half (gaps close: merges), dilate it in the right (splits)."""
    cross = ndimage.generate_binary_structure(2, 1)
    half = membrane.shape[1] // 2
    out = membrane.copy()
    out[:, :half] = ndimage.binary_erosion(membrane, cross, iterations=2, border_value=1)[:, :half]
    out[:, half:] = ndimage.binary_dilation(membrane, cross, iterations=2)[:, half:]
    return out


def test_real_isbi_mask_against_references() -> None:
    if not ISBI_MASKS.is_dir():
        pytest.skip(f"ISBI 2012 masks not found at {ISBI_MASKS}; real-data check skipped")
    from PIL import Image

    membrane = np.array(Image.open(ISBI_MASKS / "07.png")) == 0  # 0 = membrane, 255 = interior
    gt = membrane_to_segments(membrane)
    pred = membrane_to_segments(perturb_membrane(membrane))
    assert gt.max() > 50 and pred.max() != gt.max()
    ours = isbi_scores(gt, pred)
    ref = dense_reference(gt, pred, singletons=True)
    for name, value in ref.items():
        assert getattr(ours, name) == pytest.approx(value, abs=1e-12), name
    sk = isbi_scores(gt, pred, pred_background="segment", distinct_pairs=True)
    are, precision, recall = adapted_rand_error(gt, pred)
    assert (sk.rand_error, sk.v_rand_split, sk.v_rand_merge) == pytest.approx(
        (are, precision, recall), abs=1e-12
    )
    assert (sk.vi_split, sk.vi_merge) == pytest.approx(
        tuple(variation_of_information(gt, pred, ignore_labels=(0,))), abs=1e-12
    )
    # Real membranes have gaps a 2-pixel erosion closes: merges must dominate splits somewhere.
    assert ours.v_rand < 1 and ours.v_rand_merge < ours.v_rand_split
    assert isbi_scores(gt, gt).v_rand == 1.0
