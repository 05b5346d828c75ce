"""Post-processing against hand-made label images: touching discs, holes, fragments."""

from __future__ import annotations

import numpy as np
import pytest

from pixelwise.instances import (
    InstanceParameters,
    choose_parameters,
    components,
    instances_from_probabilities,
    watershed_objects,
)
from pixelwise.metrics import mean_average_precision


def disc(shape: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def two_touching_discs() -> np.ndarray:
    """Two discs of radius 10 whose centres are 18 apart: they overlap in a thin lens."""
    labels = np.zeros((40, 60), np.int32)
    labels[disc(labels.shape, (20, 20), 10)] = 1
    labels[disc(labels.shape, (20, 38), 10) & (labels == 0)] = 2
    return labels


def test_watershed_separates_touching_discs_that_components_merge():
    truth = two_touching_discs()
    foreground = truth > 0
    assert components(foreground).max() == 1  # one blob
    split = watershed_objects(foreground.astype(float), min_size=0)
    assert split.max() == 2
    assert mean_average_precision(truth, split) > 0.9
    # From an interior map (the discs' cores) instead of distance peaks: the same split.
    core = disc(truth.shape, (20, 20), 5) | disc(truth.shape, (20, 38), 5)
    seeded = watershed_objects(foreground.astype(float), core.astype(float), min_size=0)
    assert seeded.max() == 2 and mean_average_precision(truth, seeded) > 0.9


def test_peak_seeds_split_interiors_joined_by_a_neck_that_region_seeds_keep_as_one():
    truth = two_touching_discs()
    foreground = (truth > 0).astype(float)
    # The interior class under-predicts the boundary between the two: the cores of radius 7
    # are joined by a 3-pixel neck along the line through both centres.
    core = disc(truth.shape, (20, 20), 7) | disc(truth.shape, (20, 38), 7)
    core[19:22, 20:38] = True
    interior = core.astype(float)
    regions = watershed_objects(foreground, interior, min_size=0, seeds="regions")
    assert regions.max() == 1  # one region over the seed threshold: one marker
    peaks = watershed_objects(foreground, interior, min_size=0, seeds="peaks")
    assert peaks.max() == 2 and mean_average_precision(truth, peaks) > 0.9
    # The neck is ~1.5 pixels from the background and each core's centre 7: a dynamic of
    # ~5.5, over any h here.
    for h in (1.0, 2.0, 5.0):
        split = watershed_objects(foreground, interior, min_size=0, seeds="hmaxima", h=h)
        assert split.max() == 2 and mean_average_precision(truth, split) > 0.9
    with pytest.raises(ValueError, match="seeds must be one of"):
        InstanceParameters(seeds="corners")


def test_h_maxima_seeds_keep_a_waisted_object_whole_where_peaks_split_it():
    # One object with a slight waist: two discs of radius 8 whose centres are 8 apart. Its
    # distance transform peaks at both centres (8.06) with a saddle of 7.0 between them: a
    # dynamic of 1.06.
    shape = (40, 60)
    truth = (disc(shape, (20, 22), 8) | disc(shape, (20, 30), 8)).astype(np.int32)
    foreground = truth.astype(float)
    interior = foreground  # the whole object over the seed threshold
    peaks = watershed_objects(foreground, interior, min_size=0, seeds="peaks", min_distance=5)
    assert peaks.max() == 2  # the two centres are 8 apart, over min_distance
    kept = watershed_objects(foreground, interior, min_size=0, seeds="hmaxima", h=2.0)
    assert kept.max() == 1 and np.array_equal(kept, truth)
    low = watershed_objects(foreground, interior, min_size=0, seeds="hmaxima", h=1.0)
    assert low.max() == 2  # h under the dynamic: a marker each
    from pixelwise.instances.postprocess import _h_maxima

    assert _h_maxima(np.zeros((6, 6)), 1.0).max() == 0  # nothing inside: no marker
    with pytest.raises(ValueError, match="h must be a number of pixels > 0"):
        InstanceParameters(seeds="hmaxima", h=0)


def test_distance_peaks_are_the_local_maxima_and_a_flat_top_is_one_marker():
    from scipy import ndimage
    from skimage.feature import peak_local_max

    from pixelwise.instances.postprocess import _distance_peaks

    # A map without ties: the peaks are scikit-image's local maxima at the same spacing.
    rng = np.random.default_rng(0)
    smooth = ndimage.gaussian_filter(rng.random((96, 128)), 3)
    distance = 1 + 50 * (smooth - smooth.min())
    markers = _distance_peaks(distance, 5)
    expected = peak_local_max(distance, min_distance=5, threshold_abs=1, exclude_border=False)
    found = np.argwhere(markers > 0)
    assert markers.max() == len(expected) > 3
    assert sorted(map(tuple, found)) == sorted(map(tuple, expected))
    # A square's distance map has a flat top of four pixels: one marker. Pixels at distance
    # < 1 are never peaks.
    square = np.zeros((20, 20), bool)
    square[5:15, 5:15] = True
    peaks = _distance_peaks(ndimage.distance_transform_edt(square), 3)
    assert peaks.max() == 1 and (peaks > 0).sum() == 4 and peaks[9:11, 9:11].all()
    assert _distance_peaks(np.full((8, 8), 0.5), 2).max() == 0
    # A speckled map (a barely trained network's) gives a marker per speck, in one pass.
    speckled = ndimage.distance_transform_edt(rng.random((512, 512)) > 0.3)
    markers = _distance_peaks(speckled, 5)
    assert markers.max() > 1000
    top = ndimage.maximum_filter(speckled, size=11, mode="constant")
    assert (speckled[markers > 0] == top[markers > 0]).all()


def test_a_hole_is_filled_and_a_small_fragment_dropped():
    mask = np.zeros((30, 30), bool)
    mask[5:20, 5:20] = True
    mask[10:13, 10:13] = False  # a hole of 9 pixels
    mask[25:27, 25:27] = True  # a fragment of 4 pixels
    labels = components(mask, min_size=5)
    assert labels.max() == 1
    assert (labels[5:20, 5:20] == 1).all()  # hole filled
    assert (labels[25:27, 25:27] == 0).all()  # fragment dropped
    kept = components(mask, min_size=0, fill_holes=False)
    assert kept.max() == 2 and (kept[10:13, 10:13] == 0).all()
    watershed = watershed_objects(mask.astype(float), min_size=5)
    assert watershed.max() == 1 and (watershed[10:13, 10:13] == 1).all()


def test_labels_are_sequential_and_marker_less_regions_are_kept():
    foreground = np.zeros((20, 40))
    foreground[2:8, 2:8] = 0.9
    foreground[10:18, 20:38] = 0.9
    interior = np.zeros_like(foreground)
    interior[4:6, 4:6] = 0.95  # a seed in the first object only
    labels = watershed_objects(foreground, interior, min_size=0)
    assert sorted(np.unique(labels)) == [0, 1, 2]


def test_from_probabilities_and_a_parameter_search_on_validation_images():
    truth = two_touching_discs()
    probabilities = np.zeros((2, *truth.shape))
    probabilities[1] = np.where(truth > 0, 0.9, 0.1)
    probabilities[0] = 1 - probabilities[1]
    merged = instances_from_probabilities(probabilities, InstanceParameters(method="components"))
    assert merged.max() == 1
    best, score = choose_parameters([probabilities], [truth])
    assert best.method == "watershed" and score > 0.9
    grid = {"method": ["components"], "threshold": [0.5], "min_size": [0]}
    only, only_score = choose_parameters([probabilities], [truth], grid=grid)
    # One merged object against two discs: IoU with the first 317 / 623 = 0.509, a match at
    # the 0.5 threshold only, where TP / (TP + FP + FN) = 1 / 2: the mean over ten is 0.05.
    assert only.method == "components" and only_score == pytest.approx(0.05)


def test_the_default_grid_holds_each_distinct_candidate_once():
    from pixelwise.instances.postprocess import GRID, _grid

    seeded = list(_grid(GRID, seeded=True))
    # components: 3 thresholds x 3 sizes; watershed: 3 thresholds x 3 seed thresholds x
    # (regions, peaks, h-maxima) x 3 sizes.
    assert len(seeded) == len(set(seeded)) == 3 * 3 + 3 * 3 * 3 * 3
    # h varies only with h-maxima seeds: two values give two h-maxima candidates, no more.
    two = list(_grid({**GRID, "h": (1.0, 2.0)}, seeded=True))
    assert len(two) == len(seeded) + 3 * 3 * 3
    assert {p.h for p in two if p.seeds != "hmaxima"} == {InstanceParameters.h}
    # Without an interior map: components, and watershed from distance peaks.
    assert len(list(_grid(GRID, seeded=False))) == 3 * 3 + 3 * 3


def test_bad_parameters_are_one_line():
    with pytest.raises(ValueError, match="method must be one of"):
        InstanceParameters(method="blobs")
    with pytest.raises(ValueError, match=r"threshold must be a probability in \[0, 1\]"):
        InstanceParameters(threshold=1.5)
    with pytest.raises(ValueError, match="min_size must be an integer >= 0"):
        InstanceParameters(min_size=-1)
    with pytest.raises(ValueError, match=r"be an \(H, W\) map"):
        components(np.zeros((2, 3, 4), bool))
