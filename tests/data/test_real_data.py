"""The real data sets' encodings, read in place from ../shared/data (skipped when absent)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from pixelwise.data import (
    CamVidDataset,
    FolderDataset,
    InstanceDataset,
    MaskEncoding,
    read_palette,
    separate_touching,
    split_by_manifest,
    split_dataset,
)


def test_camvid_palette_png_and_class_file(real_data):
    root = real_data("camvid")
    palette = read_palette(root / "camvid11_palette.png")
    assert len(palette) == 12  # 11 classes and black void; the 256-wide padding is dropped
    assert (
        palette[0] == (128, 128, 128) and palette[3] == (128, 64, 128) and palette[11] == (0, 0, 0)
    )
    dataset = CamVidDataset(root, "val")
    assert len(dataset) == 101
    assert dataset.class_names[0] == "Sky" and dataset.class_names[-1] == "Bicyclist"


def test_camvid_void_is_ignored_and_colour_masks_decode_alike(real_data):
    root = real_data("camvid")
    path = sorted((root / "trainannot").iterdir())[0]
    raw = np.asarray(Image.open(path))
    assert (raw == 11).any(), "the first annotation is expected to contain void"
    index = MaskEncoding.index(11, ignore_values=(11,)).decode(raw)
    assert (index[raw == 11] == 255).all() and (index[raw != 11] == raw[raw != 11]).all()
    # Colour the annotation with the real palette; the palette encoding must undo it.
    palette = MaskEncoding.palette(root / "camvid11_palette.png", num_classes=11)
    colours = np.asarray(palette.colors, dtype=np.uint8)[raw]
    np.testing.assert_array_equal(palette.decode(colours), index)


def test_isbi_masks_are_binary_and_need_the_declared_table(real_data):
    root = real_data("isbi2012")
    binary = 'declare encoding = { kind = "values", value_map = { "0" = 0, "255" = 1 } }'
    with pytest.raises(ValueError, match=re.escape(binary)):
        FolderDataset(root, MaskEncoding.index(2))[0]
    dataset = FolderDataset(root, MaskEncoding.values({0: 0, 255: 1}), channels=1)
    assert len(dataset) == 25
    mask = dataset[0]["mask"]
    membrane = float((mask == 0).float().mean())
    assert 0.15 < membrane < 0.3  # README: membrane ~22 % of pixels
    assert dataset[0]["image"].shape == (1, 512, 512)


def test_nuclei_manifest_split_is_stratified_75_25(real_data):
    root = real_data("nuclei")
    train, val = split_by_manifest(root / "manifest.csv")
    assert (len(train), len(val)) == (30, 14) and not set(train) & set(val)
    dataset = InstanceDataset(root, weights=False)
    _, val_set = split_dataset(dataset, val_fraction=0.25, manifest=root / "manifest.csv")
    assert [val_set.sample_id(i) for i in range(len(val_set))] == val


def test_real_touching_nuclei_are_separated_and_weighted(real_data):
    root = real_data("nuclei")
    dataset = InstanceDataset(root)
    labels = np.asarray(Image.open(dataset.pairs[0][1])).astype(np.int64)
    grown = ndimage.grey_dilation(labels, size=3)
    touching = (labels > 0) & (grown != labels)
    assert touching.any(), "the first nuclei image is expected to have touching nuclei"
    separated = separate_touching(labels)
    assert not ((separated > 0) & (ndimage.grey_dilation(separated, size=3) != separated)).any()
    sample = dataset[0]
    assert sample["image"].shape[0] == 3 and sample["mask"].shape == labels.shape
    assert float(sample["weight"].max()) > 5.0  # the gaps between touching nuclei
