"""The built-in data: deterministic, fast, and hard in the intended way."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from pixelwise.data import SyntheticNuclei, make_blobs, synthetic_splits


def _touching_pairs(instances: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of objects at most 2 pixels apart (touching but for the background gap)."""
    height, width = instances.shape
    padded = np.pad(instances, 2)
    pairs = set()
    for dy in range(5):
        for dx in range(5):
            neighbour = padded[dy : dy + height, dx : dx + width]
            near = (instances > 0) & (neighbour > 0) & (neighbour != instances)
            pairs |= {tuple(sorted(p)) for p in zip(instances[near], neighbour[near], strict=True)}
    return pairs


def _between_two_objects(instances: np.ndarray) -> np.ndarray:
    """Background pixels with two different objects among their 8 neighbours."""
    objects = instances > 0
    biggest = ndimage.grey_dilation(instances, size=3)
    smallest = -ndimage.grey_dilation(-np.where(objects, instances, 10**6), size=3)
    return ~objects & (biggest > 0) & (smallest < 10**6) & (biggest != smallest)


def test_same_seed_gives_identical_arrays_other_seeds_and_splits_differ():
    first = SyntheticNuclei(8, seed=5, weights=False)
    again = SyntheticNuclei(8, seed=5, weights=False)
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.instances, again.instances)
    assert not np.array_equal(first.images, SyntheticNuclei(8, seed=6, weights=False).images)
    val = SyntheticNuclei(8, seed=5, split="val", weights=False)
    assert not any(np.array_equal(a, b) for a in first.images for b in val.images)
    image, labels = make_blobs(96, seed=5, index=3)  # one image alone, same stream
    np.testing.assert_array_equal(image, first.images[3])
    np.testing.assert_array_equal(labels, first.instances[3])


def test_the_default_train_and_val_sets_have_their_sizes():
    # Speed is measured in benchmarks, never asserted in tests.
    train, val = synthetic_splits()
    assert (len(train), len(val)) == (64, 16) and train.images.shape == (64, 96, 96)


def test_every_image_has_several_touching_pairs_separated_by_a_gap():
    for index in range(16):
        _, instances = make_blobs(96, seed=0, index=index)
        assert len(_touching_pairs(instances)) >= 2
        # The labels keep touching objects apart: no two objects are 8-neighbours.
        grown = ndimage.grey_dilation(instances, size=3)
        assert not ((instances > 0) & (grown != instances)).any()


def test_gaps_are_only_faintly_darker_than_the_blobs():
    gap_means, blob_means, background_means = [], [], []
    for index in range(16):
        image, instances = make_blobs(96, seed=1, index=index)
        objects = instances > 0
        gap = _between_two_objects(instances)
        gap_means.append(image[gap].mean())
        blob_means.append(image[ndimage.binary_erosion(objects, iterations=2)].mean())
        background_means.append(image[~ndimage.binary_dilation(objects, iterations=3)].mean())
    gap, blob, background = np.mean(gap_means), np.mean(blob_means), np.mean(background_means)
    assert background < gap < blob
    assert gap > background + 0.6 * (blob - background), "the gap should be faint"


def test_samples_hold_mask_instances_and_a_weight_map_heavy_on_the_gaps():
    dataset = SyntheticNuclei(4, seed=2)
    assert dataset.class_names == ("background", "nucleus") and dataset.num_classes == 2
    sample = dataset[1]
    assert sample["image"].shape == (1, 96, 96) and sample["image"].dtype == torch.float32
    assert float(sample["image"].min()) >= 0.0 and float(sample["image"].max()) <= 1.0
    torch.testing.assert_close(sample["mask"], (sample["instances"] > 0).long())
    between = torch.from_numpy(_between_two_objects(sample["instances"].numpy()))
    weight = sample["weight"]
    assert between.any()
    assert float(weight[between].mean()) > float(weight[sample["mask"] == 1].mean()) + 5


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="size must be an integer >= 32, got 8"):
        make_blobs(8)
    with pytest.raises(ValueError, match="did you mean 'val'"):
        SyntheticNuclei(2, split="vali")
