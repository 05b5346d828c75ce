"""The background / interior / boundary (and core) targets built from instance labels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pixelwise.config import DataConfig
from pixelwise.data import build_datasets
from pixelwise.data.datasets import InstanceDataset, core_target, three_class_target
from pixelwise.engine.instances import interior_class
from pixelwise.instances import InstanceParameters, instances_from_probabilities


def test_two_touching_squares_get_their_edges_and_contact_as_boundary():
    labels = np.zeros((8, 12), np.int32)
    labels[1:7, 1:6] = 1
    labels[1:7, 6:11] = 2  # touches object 1 along column 5 | 6
    target = three_class_target(labels, boundary_width=1)
    expected = np.zeros_like(target)
    expected[1:7, 1:11] = 2  # every object pixel next to something else ...
    expected[2:6, 2:5] = 1  # ... except the interiors, which see only their own object
    expected[2:6, 7:10] = 1
    np.testing.assert_array_equal(target, expected)
    # Two pixels wide: one more ring inward.
    wide = three_class_target(labels, boundary_width=2)
    assert (wide[3:5, 3:4] == 1).all() and (wide[2, 2:5] == 2).all() and (wide == 1).sum() == 4
    assert (wide[labels == 0] == 0).all()


def _instance_folder(root, labels: np.ndarray, names: tuple[str, ...]) -> None:
    """``root/images`` (flat grey) and ``root/instances`` (``labels``), one pair per name."""
    for sub in ("images", "instances"):
        (root / sub).mkdir()
    for name in names:
        Image.fromarray(np.full(labels.shape, 128, np.uint8)).save(root / "images" / f"{name}.png")
        Image.fromarray(labels).save(root / "instances" / f"{name}.png")


def test_an_instance_folder_trains_three_classes(tmp_path):
    labels = np.zeros((16, 16), np.uint16)
    labels[2:10, 2:8] = 1
    labels[2:10, 8:14] = 2
    _instance_folder(tmp_path, labels, ("a", "b"))
    data = InstanceDataset(tmp_path, target="three_class", boundary_width=1, weights=False)
    sample = data[0]
    assert data.class_names == ("background", "interior", "boundary")
    assert data.num_classes == 3
    np.testing.assert_array_equal(
        sample["mask"].numpy(), three_class_target(labels.astype(np.int32), 1)
    )
    config = DataConfig(
        layout="instances", root=str(tmp_path), instance_target="three_class", val_fraction=0.5
    )
    train, val = build_datasets(config)
    assert train.num_classes == 3 and set(np.unique(val[0]["mask"].numpy())) == {0, 1, 2}


def test_the_target_is_checked_with_its_key():
    with pytest.raises(ValueError, match=r"data\.instance_target must be one of"):
        DataConfig(layout="instances", root="x", instance_target="boundary")
    with pytest.raises(ValueError, match=r"data\.instance_target must go with layout 'instances'"):
        DataConfig(layout="folders", root="x", instance_target="three_class")
    with pytest.raises(ValueError, match="boundary_width"):
        DataConfig(layout="instances", root="x", boundary_width=0)


def _disc(shape: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_the_core_is_the_inner_half_of_each_object_and_touching_cores_lie_apart():
    shape = (40, 60)
    labels = np.zeros(shape, np.int32)
    labels[_disc(shape, (20, 18), 12)] = 1
    labels[_disc(shape, (20, 41), 12) & (labels == 0)] = 2  # overlaps: the two touch
    target = core_target(labels, boundary_width=2)
    three = three_class_target(labels, boundary_width=2)
    # The background and the boundary are the three-class target's; core (3) takes part of
    # the interior (1) and nothing else.
    np.testing.assert_array_equal(target == 0, three == 0)
    np.testing.assert_array_equal(target == 2, three == 2)
    np.testing.assert_array_equal((target == 1) | (target == 3), three == 1)
    # Each core is the pixels at least half the object's largest distance from its edge:
    # computed here by brute force, pixel by pixel, from the definition.
    for index in (1, 2):
        own = labels == index
        outside = np.argwhere(~np.pad(own, 1)) - 1  # every pixel that is not the object
        inside = np.argwhere(own)
        distance = np.sqrt(((inside[:, None, :] - outside[None, :, :]) ** 2).sum(-1).min(axis=1))
        expected = np.zeros(shape, bool)
        expected[tuple(inside[distance >= 0.5 * distance.max()].T)] = True
        expected &= three == 1
        np.testing.assert_array_equal((target == 3) & own, expected)
    # Two cores, the gap between them wider than the boundary: one seed each.
    from scipy import ndimage

    _, count = ndimage.label(target == 3)
    assert count == 2
    columns = np.nonzero((target == 3).any(axis=0))[0]
    gaps = np.diff(columns)
    assert gaps.max() >= 8  # the outer halves of both discs lie between the cores
    # An object too small to keep an interior has no core.
    speck = np.zeros((5, 5), np.int32)
    speck[1:4, 1:4] = 1
    assert not (core_target(speck, boundary_width=2) == 3).any()


def test_watershed_from_the_core_separates_touching_discs_the_interior_merges():
    """Two large touching discs whose contact the network misses: the boundary class is
    absent where they meet, so the interior regions join into one seed; the cores stay two."""
    shape = (40, 60)
    labels = np.zeros(shape, np.int32)
    labels[_disc(shape, (20, 18), 12)] = 1
    labels[_disc(shape, (20, 41), 12) & (labels == 0)] = 2
    target = core_target(labels, boundary_width=2)
    target[(target == 2) & (np.abs(np.arange(60) - 29.5) < 6)[None, :]] = 1  # contact missed
    probabilities = np.stack([(target == k).astype(float) for k in range(4)])
    names = ("background", "interior", "boundary", "core")
    assert interior_class(names) == 3 and interior_class(names[:3]) == 1
    params = InstanceParameters(method="watershed", seeds="regions", min_size=0)
    by_core = instances_from_probabilities(probabilities, params, interior_class=3)
    assert by_core.max() == 2
    # Each object comes out as its own: most of each true disc in one predicted label.
    for index in (1, 2):
        values, counts = np.unique(by_core[labels == index], return_counts=True)
        assert counts.max() / counts.sum() > 0.9 and values[counts.argmax()] != 0
    interior = probabilities[1] + probabilities[3]  # the three-class network's interior
    three = np.stack([probabilities[0], interior, probabilities[2]])
    by_interior = instances_from_probabilities(three, params, interior_class=1)
    assert by_interior.max() == 1  # one seed: merged


def test_an_instance_folder_trains_the_core_target(tmp_path):
    labels = np.zeros((24, 24), np.uint16)
    labels[2:20, 2:12] = 1
    labels[2:20, 12:22] = 2
    _instance_folder(tmp_path, labels, ("a",))
    data = InstanceDataset(tmp_path, target="core", boundary_width=1, weights=False)
    assert data.class_names == ("background", "interior", "boundary", "core")
    assert data.num_classes == 4
    np.testing.assert_array_equal(data[0]["mask"].numpy(), core_target(labels.astype(np.int32), 1))
    assert set(np.unique(data[0]["mask"].numpy())) == {0, 1, 2, 3}
    DataConfig(layout="instances", root=str(tmp_path), instance_target="core")
