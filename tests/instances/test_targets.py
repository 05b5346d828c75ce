"""The background / interior / boundary target built from instance labels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pixelwise.config import DataConfig
from pixelwise.data import build_datasets
from pixelwise.data.datasets import InstanceDataset, three_class_target


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


def test_an_instance_folder_trains_three_classes(tmp_path):
    for sub in ("images", "instances"):
        (tmp_path / sub).mkdir()
    labels = np.zeros((16, 16), np.uint16)
    labels[2:10, 2:8] = 1
    labels[2:10, 8:14] = 2
    for name in ("a", "b"):
        Image.fromarray(np.full((16, 16), 128, np.uint8)).save(tmp_path / "images" / f"{name}.png")
        Image.fromarray(labels).save(tmp_path / "instances" / f"{name}.png")
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
