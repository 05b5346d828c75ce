"""The fingerprint of a data folder: layout, the encoding the mask values imply, statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from pixelwise.data import MaskEncoding
from pixelwise.plan.fingerprint import (
    MAX_CLASSES,
    detect_layout,
    fingerprint,
    propose_encoding,
)


def _save(path: Path, array: np.ndarray, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)


@pytest.mark.parametrize(
    ("values", "expected", "reason"),
    [
        ([0, 255], MaskEncoding.values({0: 0, 255: 1}), "mask values {0, 255}: binary"),
        ([0, 1, 2], MaskEncoding.index(3), "mask values 0..2 are class indices"),
        ([1, 3], MaskEncoding.index(4), "mask values 0..3 are class indices"),
        (
            [0, 1, 255],
            MaskEncoding.index(2, ignore_values=(255,)),
            "mask values 0..1 are classes and 255 is void (ignored)",
        ),
        (
            [0, 128, 255],
            MaskEncoding.values({0: 0, 128: 1, 255: 2}),
            "mask values [0, 128, 255] (3 values) are classes in this order",
        ),
        (
            [255],
            MaskEncoding.values({255: 0}),
            "mask values [255] (1 values) are classes in this order",
        ),
    ],
)
def test_mask_values_propose_an_encoding(values, expected, reason):
    proposal = propose_encoding(values)
    assert proposal.encoding == expected and proposal.reason == reason


def test_ambiguous_values_propose_nothing_and_show_what_was_found():
    many = list(range(0, 2 * MAX_CLASSES, 2))  # JPEG noise, a probability map, instance ids
    proposal = propose_encoding(many)
    assert proposal.encoding is None
    assert proposal.reason == (
        "mask values [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, ...] (64 values) are neither "
        "0..k nor a few grey levels; declare data.encoding in a run config"
    )
    too_many = list(range(MAX_CLASSES + 1))
    proposal = propose_encoding(too_many)
    assert proposal.encoding is None
    assert proposal.reason == (
        f"mask values [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, ...] (more than {MAX_CLASSES} values) are "
        "too many for classes; declare data.encoding in a run config"
    )
    both = propose_encoding([0, 1], [(255, 0, 0)])
    assert both.encoding is None and both.reason.startswith("masks are both grey and colour")
    assert propose_encoding().encoding is None


def test_colour_masks_propose_a_palette_in_colour_order():
    proposal = propose_encoding(colors=[(255, 0, 0), (0, 0, 0), (0, 128, 0)])
    assert proposal.encoding == MaskEncoding.palette([(0, 0, 0), (0, 128, 0), (255, 0, 0)])
    assert proposal.reason == "3 mask colours: [0, 0, 0], [0, 128, 0], [255, 0, 0]"


def test_layouts_are_told_by_the_folder_shape(tmp_path):
    for name in ("images", "masks"):
        (tmp_path / "f" / name).mkdir(parents=True)
    for name in ("images", "instances"):
        (tmp_path / "i" / name).mkdir(parents=True)
    for name in ("train", "trainannot", "val", "valannot"):
        (tmp_path / "c" / name).mkdir(parents=True)
    (tmp_path / "t").mkdir()
    for name in ("volume.tif", "labels.tif"):
        tifffile.imwrite(tmp_path / "t" / name, np.zeros((2, 8, 8), np.uint8))
    assert detect_layout(tmp_path / "f").layout == "folders"
    assert detect_layout(tmp_path / "i").layout == "instances"
    assert detect_layout(tmp_path / "c").table("R") == {
        "layout": "camvid",
        "root": "R",
        "images": "train",
        "masks": "val",
    }
    tiff = detect_layout(tmp_path / "t")
    assert (tiff.layout, tiff.images, tiff.masks) == ("tiff", "volume.tif", "labels.tif")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "pictures").mkdir()
    with pytest.raises(ValueError) as info:
        detect_layout(tmp_path / "x")
    assert str(info.value).startswith(f"data folder {tmp_path / 'x'} must hold images/ and masks/")
    assert str(info.value).endswith(
        "got 1 entries ['pictures']; arrange the files so, or write a run config"
    )
    with pytest.raises(FileNotFoundError, match="must be a folder, got a missing folder"):
        detect_layout(tmp_path / "nope")


def test_a_folder_fingerprint_counts_what_is_there(tmp_path):
    rng = np.random.default_rng(0)
    images, masks = [], []
    for index in range(5):
        image = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
        mask = np.where(rng.random((40, 30)) < 0.25, 255, 0).astype(np.uint8)
        _save(tmp_path / "images" / f"{index}.jpg", image, quality=95)
        _save(tmp_path / "masks" / f"{index}.png", mask)
        images.append(np.asarray(Image.open(tmp_path / "images" / f"{index}.jpg")) / 255.0)
        masks.append(mask)
    found = fingerprint(tmp_path)
    assert found.layout.layout == "folders" and found.num_images == 5 and found.num_val == 0
    assert found.sizes == ((40, 30),) * 5 and found.channels == 3 and found.median_size == (40, 30)
    assert found.proposal.encoding == MaskEncoding.values({0: 0, 255: 1})
    share = np.mean([(m == 255).mean() for m in masks])
    assert found.class_fractions == pytest.approx((1 - share, share))
    pixels = np.concatenate([i.reshape(-1, 3) for i in images])
    assert found.mean == pytest.approx(tuple(pixels.mean(0)), abs=1e-5)
    assert found.std == pytest.approx(tuple(pixels.std(0)), abs=1e-5)
    assert not found.upright and found.manifest is None
    # A declared encoding is taken as it is.
    declared = fingerprint(tmp_path, {"kind": "values", "value_map": {"0": 1, "255": 0}})
    assert declared.proposal.reason == "declared"
    assert declared.class_fractions == pytest.approx((share, 1 - share))


def test_scenes_with_sky_above_road_have_an_up_direction(tmp_path):
    rng = np.random.default_rng(1)
    for index in range(4):
        mask = np.zeros((30, 30), np.uint8)
        mask[15:] = 1  # class 1 below, class 0 above
        mask[rng.random((30, 30)) < 0.1] = 2
        _save(tmp_path / "images" / f"{index}.png", rng.integers(0, 256, (30, 30), dtype=np.uint8))
        _save(tmp_path / "masks" / f"{index}.png", mask)
    assert fingerprint(tmp_path).upright
    for index in range(4):  # the same classes, scattered: no up direction
        _save(tmp_path / "masks" / f"{index}.png", rng.integers(0, 3, (30, 30), dtype=np.uint8))
    assert not fingerprint(tmp_path).upright


def test_instance_labels_give_object_counts_sizes_and_touching(tmp_path):
    label = np.zeros((20, 20), np.uint16)
    label[2:6, 2:6] = 1  # 16 pixels, touches 2
    label[2:6, 6:9] = 2  # 12 pixels, touches 1
    label[12:17, 12:17] = 3  # 25 pixels, alone
    _save(tmp_path / "images" / "a.png", np.zeros((20, 20), np.uint8))
    (tmp_path / "instances").mkdir()
    tifffile.imwrite(tmp_path / "instances" / "a.tif", label)
    (tmp_path / "manifest.csv").write_text("id,group\na,g1\n")
    found = fingerprint(tmp_path)
    assert found.layout.layout == "instances" and found.num_classes == 2
    assert found.objects_per_image == 3 and found.object_area == 16
    assert found.touching == pytest.approx(2 / 3)
    assert found.class_fractions == pytest.approx((1 - 53 / 400, 53 / 400))
    assert found.manifest == "manifest.csv"
