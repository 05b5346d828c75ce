"""Class weights counted from masks: hand-computed examples and a brute-force count."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pixelwise.losses.class_weights import (
    class_weights,
    count_classes,
    inverse_frequency_weights,
    median_frequency_weights,
)
from pixelwise.losses.cross_entropy import cross_entropy

IGNORE = 255

# Three masks of different sizes, K = 4; class 3 never occurs.
#   mask 0: 5 counted pixels, class 0 ×2, class 1 ×3
#   mask 1: 4 counted pixels, class 0 ×1, class 2 ×3
#   mask 2: 3 counted pixels, class 0 ×3
HAND_MASKS = [
    np.array([[0, 0, 1], [1, 1, IGNORE]]),
    np.array([[0, 2], [2, 2]]),
    np.array([[0, 0, 0, IGNORE]]),
]


def test_counts_by_hand():
    counts = count_classes(HAND_MASKS, 4)
    np.testing.assert_array_equal(counts.pixels, [6, 3, 3, 0])
    # Counted pixels of the images containing each class: 5 + 4 + 3, 5, 4, none.
    np.testing.assert_array_equal(counts.image_pixels, [12, 5, 4, 0])
    np.testing.assert_array_equal(counts.images_with_class, [3, 1, 1, 0])
    assert counts.num_images == 3


def test_median_frequency_by_hand():
    # freq = 6/12, 3/5, 3/4 = 0.5, 0.6, 0.75; median 0.6; class 3 absent -> 1.0.
    got = median_frequency_weights(count_classes(HAND_MASKS, 4))
    torch.testing.assert_close(got, torch.tensor([1.2, 1.0, 0.8, 1.0]))
    assert got.dtype == torch.float32


def test_median_of_an_even_number_of_classes_averages_the_middle_two():
    # One 10-pixel image: freq 0.2 and 0.8, median 0.5.
    mask = np.array([[0, 0, 1, 1, 1, 1, 1, 1, 1, 1]])
    got = class_weights([mask], 2, method="median_frequency")
    torch.testing.assert_close(got, torch.tensor([2.5, 0.625]))


def test_inverse_frequency_by_hand():
    # 12 counted pixels, 3 classes present: 12 / (3 · n_c) for n = 6, 3, 3.
    got = inverse_frequency_weights(count_classes(HAND_MASKS, 4))
    torch.testing.assert_close(got, torch.tensor([2 / 3, 4 / 3, 4 / 3, 1.0]))
    pixels = torch.tensor([6.0, 3.0, 3.0, 0.0])
    assert (got * pixels).sum().item() / pixels.sum().item() == pytest.approx(1.0)


def test_absent_class_is_logged_and_configurable(caplog):
    with caplog.at_level(logging.WARNING, logger="pixelwise.losses.class_weights"):
        got = class_weights(HAND_MASKS, 4, absent_weight=0.0)
    assert got[3].item() == 0.0
    assert "classes [3] never occur in 3 counted masks" in caplog.text


def brute_force_median_frequency(masks, k):
    """Count with explicit loops over images and pixels, then apply SegNet's rule."""
    freq = []
    for c in range(k):
        n_c = total = 0
        for mask in masks:
            valid = [v for v in mask.ravel().tolist() if v != IGNORE]
            if c in valid:
                n_c += valid.count(c)
                total += len(valid)
        freq.append(n_c / total if total else None)
    median = float(np.median([f for f in freq if f is not None]))
    return [median / f if f is not None else 1.0 for f in freq]


def test_random_masks_match_brute_force_and_stream_in_any_form():
    rng = np.random.default_rng(0)
    k = 6
    masks = []
    for i in range(7):
        present = rng.choice(k - 1, size=rng.integers(1, k), replace=False)  # never class 5
        mask = rng.choice(np.append(present, IGNORE), size=(9, 11))
        masks.append(mask.astype(np.uint8 if i % 2 else np.int64))
    expected = torch.tensor(brute_force_median_frequency(masks, k), dtype=torch.float32)
    from_arrays = class_weights(masks, k)
    torch.testing.assert_close(from_arrays, expected)
    as_tensors = (torch.from_numpy(m.astype(np.int64)) for m in masks)
    torch.testing.assert_close(class_weights(as_tensors, k), expected)
    as_batches = [np.stack(masks[:4]), np.stack(masks[4:])]
    torch.testing.assert_close(class_weights(as_batches, k), expected)


def test_weights_feed_cross_entropy():
    rng = np.random.default_rng(1)
    target = torch.from_numpy(
        rng.choice([0, 1, 2, IGNORE], p=[0.7, 0.2, 0.05, 0.05], size=(3, 5, 7))
    )
    weight = class_weights(target, 3)
    logits = torch.randn(3, 3, 5, 7, generator=torch.Generator().manual_seed(1))
    expected = F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE)
    torch.testing.assert_close(cross_entropy(logits, target, weight=weight), expected)


def test_errors_name_the_mask_and_values():
    masks = [np.zeros((2, 2), np.int64), np.array([[0, 7], [9, IGNORE]])]
    with pytest.raises(
        ValueError,
        match=r"^mask 1 values must be in \[0, 4\) or ignore_index 255, got 7, 9 \(2 pixels\)",
    ):
        count_classes(masks, 4)
    with pytest.raises(
        TypeError, match=r"^mask 0 must hold integer class indices, got dtype float64"
    ):
        count_classes([np.zeros((2, 2))], 4)
    with pytest.raises(ValueError, match=r"^mask 0 must have shape \(H, W\) or \(N, H, W\)"):
        count_classes([np.zeros((1, 1, 2, 2), np.int64)], 4)
    with pytest.raises(
        ValueError, match=r"^method must be one of .*did you mean 'inverse_frequency'"
    ):
        class_weights(HAND_MASKS, 4, method="inverse")
