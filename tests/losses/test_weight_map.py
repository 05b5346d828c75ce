"""The U-Net weight map against a brute-force reference over every pair of pixels."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from pixelwise.losses.weight_map import (
    border_distances,
    class_balance_map,
    influence_radius,
    instances_from_semantic,
    unet_weight_map,
    weight_map_from_semantic,
)

NUCLEI = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "nuclei"


def two_smallest_distances(labels):
    """For every pixel, the distances to every pixel of every object; keep the two smallest."""
    rows, cols = np.indices(labels.shape)
    grid = np.stack([rows.ravel(), cols.ravel()], axis=1).astype(np.float64)  # (P, 2)
    per_object = []
    for label in np.unique(labels[labels > 0]):
        pixels = np.argwhere(labels == label).astype(np.float64)  # (m, 2)
        gaps = np.sqrt(((grid[:, None, :] - pixels[None, :, :]) ** 2).sum(-1))  # (P, m)
        per_object.append(gaps.min(axis=1))
    per_object += [np.full(labels.size, np.inf)] * 2
    ranked = np.sort(np.stack(per_object), axis=0)
    return ranked[0].reshape(labels.shape), ranked[1].reshape(labels.shape)


def reference_map(labels, w0, sigma, border, classes=None):
    """Eq. 2 from the brute-force distances, with w_c = P / (C · n_c) per class."""
    classes = (labels > 0).astype(int) if classes is None else classes
    values, counts = np.unique(classes, return_counts=True)
    share = dict(zip(values.tolist(), counts.tolist(), strict=True))
    w_c = np.vectorize(lambda c: classes.size / (len(values) * share[c]))(classes)
    d1, d2 = two_smallest_distances(labels)
    term = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    if border == "background":
        term[labels > 0] = 0
    return w_c + term


def four_objects():
    """23 × 31: two touching rectangles, an object cut by two image edges, a disc; ids 1 2 5 9."""
    labels = np.zeros((23, 31), np.uint16)
    labels[2:8, 3:10] = 1
    labels[2:8, 10:15] = 2  # shares an edge with object 1
    rows, cols = np.indices(labels.shape)
    labels[((rows - 22) ** 2 + cols**2 <= 30) & (labels == 0)] = 5  # bottom-left corner
    labels[(rows - 13) ** 2 + (cols - 19) ** 2 <= 12] = 9
    return labels


@pytest.mark.parametrize("border", ["background", "everywhere"])
def test_matches_brute_force_on_touching_and_edge_objects(border):
    labels = four_objects()
    expected = reference_map(labels, 10.0, 5.0, border)
    got = unet_weight_map(labels, border=border)
    assert got.dtype == np.float32 and got.shape == labels.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    # The largest border weight lies at the contact of objects 1 and 2: on the background just
    # beyond its ends, or (everywhere) on the contact columns themselves.
    row, col = np.unravel_index(np.argmax(got), got.shape)
    if border == "background":
        assert row in (1, 8) and col in (9, 10)
    else:
        assert 2 <= row < 8 and col in (9, 10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_truncation_matches_brute_force_on_random_blobs(seed):
    # σ = 2 gives an influence radius of ~11 px, much smaller than the image, so the boxes
    # really cut the transforms.
    rng = np.random.default_rng(seed)
    labels = np.zeros((45, 53), np.int32)
    rows, cols = np.indices(labels.shape)
    for label in range(1, 10):
        r, c, rad = rng.integers(0, 45), rng.integers(0, 53), rng.uniform(1, 5)
        labels[(rows - r) ** 2 + (cols - c) ** 2 <= rad**2] = label
    assert influence_radius(10.0, 2.0) < 12
    for border in ("background", "everywhere"):
        expected = reference_map(labels, 10.0, 2.0, border)
        got = unet_weight_map(labels, sigma=2.0, border=border)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_border_distances_exact_up_to_max_distance():
    labels = four_objects()
    d1_ref, d2_ref = two_smallest_distances(labels)
    d1, d2 = border_distances(labels, max_distance=4.0)
    for got, ref in ((d1, d1_ref), (d2, d2_ref)):
        near = ref <= 4.0
        np.testing.assert_allclose(got[near], ref[near], rtol=0, atol=1e-12)
        assert np.all(got[~near] > 4.0)
    full1, full2 = border_distances(labels)
    np.testing.assert_allclose(full1, d1_ref, atol=1e-12)
    np.testing.assert_allclose(full2, d2_ref, atol=1e-12)


def test_sparse_large_ids_give_the_same_map():
    labels = four_objects().astype(np.int64)
    sparse = np.select([labels == 1, labels == 2, labels == 5, labels == 9], [7, 10**12, 3, 5])
    np.testing.assert_array_equal(unet_weight_map(sparse), unet_weight_map(labels))


def test_no_object_and_one_object_leave_only_class_balance():
    empty = np.zeros((11, 13), np.uint8)
    np.testing.assert_array_equal(unet_weight_map(empty), np.ones((11, 13), np.float32))
    one = empty.copy()
    one[3:6, 4:8] = 7  # 12 of 143 pixels
    expected = np.where(one > 0, 143 / (2 * 12), 143 / (2 * 131))
    np.testing.assert_allclose(unet_weight_map(one, border="everywhere"), expected, rtol=1e-6)
    d1, d2 = border_distances(one)
    assert np.isinf(d2).all() and d1.max() < np.inf


def test_touching_objects_everywhere_value_at_contact():
    labels = np.zeros((5, 8), np.uint8)
    labels[1:4, 1:4] = 1
    labels[1:4, 4:7] = 2
    got = unet_weight_map(labels, class_weights="none", border="everywhere", w0=10, sigma=5)
    # On the contact column d1 = 0 (own object) and d2 = 1 (the neighbour).
    assert got[2, 3] == pytest.approx(1 + 10 * math.exp(-1 / 50), rel=1e-6)
    background_only = unet_weight_map(labels, class_weights="none")
    assert background_only[2, 3] == 1.0


def test_class_balance_options():
    classes = np.zeros((3, 4), np.uint8)
    classes[0, :3] = 1  # 3 of 12 pixels
    balanced = class_balance_map(classes, "balanced")
    np.testing.assert_allclose(balanced[classes == 1], 12 / (2 * 3))
    np.testing.assert_allclose(balanced[classes == 0], 12 / (2 * 9))
    assert balanced.mean() == pytest.approx(1.0)
    np.testing.assert_array_equal(class_balance_map(classes, "none"), np.ones((3, 4)))
    np.testing.assert_array_equal(
        class_balance_map(classes, (0.5, 3.0)), np.where(classes, 3.0, 0.5)
    )
    with pytest.raises(
        ValueError, match=r"^class_weights must be 'balanced', 'none' or 2\+ finite"
    ):
        class_balance_map(classes, [1.0])


def test_instances_from_semantic_connectivity_and_classes():
    mask = np.array(
        [
            [1, 0, 0, 2, 2],
            [0, 1, 0, 1, 1],
            [0, 0, 0, 0, 0],
        ]
    )
    four, n4 = instances_from_semantic(mask, connectivity=1)
    eight, n8 = instances_from_semantic(mask, connectivity=2)
    assert (n4, n8) == (4, 3)  # the diagonal pair joins only with 8-connectivity
    assert four[0, 0] != four[1, 1] and eight[0, 0] == eight[1, 1]
    assert four[0, 3] != four[1, 3]  # touching regions of different classes stay apart
    with pytest.raises(ValueError, match=r"^connectivity must be 1 \(4-neighbour\) or 2"):
        instances_from_semantic(mask, connectivity=3)


def test_semantic_map_equals_instance_map_of_its_components():
    # Cells (255) separated by a membrane (0), as in the ISBI 2012 masks.
    mask = np.full((19, 21), 255, np.uint8)
    mask[:, 9] = 0
    mask[8, :] = 0
    objects, count = instances_from_semantic(mask)
    assert count == 4
    expected = reference_map(objects, 10.0, 5.0, "background", classes=mask)
    np.testing.assert_allclose(weight_map_from_semantic(mask), expected, rtol=0, atol=1e-5)


def test_radius_follows_from_w0_sigma_and_tol():
    r = influence_radius(10.0, 5.0, 1e-6)
    assert 10.0 * math.exp(-(r**2) / 50) == pytest.approx(1e-6)
    assert influence_radius(10.0, 5.0, 0.0) == math.inf
    assert influence_radius(1e-7, 5.0, 1e-6) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        (
            {"instances": np.zeros((2, 3, 4), np.int32)},
            ValueError,
            r"^instance labels must be a 2-D",
        ),
        ({"instances": np.zeros((3, 4))}, TypeError, r"^instance labels must hold integer labels"),
        ({"instances": -np.ones((3, 4), np.int32)}, ValueError, r"^instance labels must be >= 0"),
        ({"sigma": 0.0}, ValueError, r"^sigma must be a finite number > 0 \(pixels\), got 0.0"),
        ({"w0": -1.0}, ValueError, r"^w0 must be a finite number >= 0, got -1.0"),
        ({"border": "backgrnd"}, ValueError, r"^border must be one of .*did you mean 'background'"),
        ({"class_weights": "balance"}, ValueError, r"did you mean 'balanced'"),
    ],
)
def test_errors(kwargs, error, pattern):
    arguments = {"instances": np.zeros((3, 4), np.int32), **kwargs}
    with pytest.raises(error, match=pattern):
        unet_weight_map(**arguments)


def test_real_nuclei_match_full_transforms():
    if not (NUCLEI / "manifest.csv").is_file():
        pytest.skip(f"nuclei data not found at {NUCLEI}")
    with open(NUCLEI / "manifest.csv", newline="") as stream:
        rows = [r for r in csv.DictReader(stream) if int(r["width"]) * int(r["height"]) <= 65536]
    row = max(rows, key=lambda r: int(r["n_instances"]))
    labels = np.array(Image.open(NUCLEI / "instances" / f"{row['id']}.png"))
    assert len(np.unique(labels)) - 1 == int(row["n_instances"])
    # The naive computation: one full-image transform per object, then the two smallest.
    per_object = [ndimage.distance_transform_edt(labels != i) for i in np.unique(labels)[1:]]
    ranked = np.sort(np.stack(per_object), axis=0)
    term = 10 * np.exp(-((ranked[0] + ranked[1]) ** 2) / 50) * (labels == 0)
    expected = class_balance_map((labels > 0).astype(np.uint8), "balanced") + term
    np.testing.assert_allclose(unet_weight_map(labels), expected, rtol=0, atol=1e-5)
