"""build_datasets: a small config gives DataLoader-ready training and validation sets."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from torch.utils.data import DataLoader

from pixelwise.data import DataConfig, build_datasets
from pixelwise.data.build import evaluation_dataset


def test_folders_layout_needs_a_declared_encoding(make_folder):
    root = make_folder(stems=[f"s{i}" for i in range(5)], values=(0, 255))
    with pytest.raises(ValueError) as info:
        build_datasets({"layout": "folders", "root": str(root)})
    assert str(info.value) == (
        "the mask encoding of layout 'folders' must be declared, got nothing; "
        'e.g. encoding = { kind = "values", value_map = { "0" = 0, "255" = 1 } }'
    )
    config = {
        "layout": "folders",
        "root": str(root),
        "encoding": {"kind": "values", "value_map": {"0": 0, "255": 1}},
        "crop_size": [32, 40],
        "hflip": True,
        "elastic_std": 10.0,
        "val_fraction": 0.4,
        "shuffle_split": False,
    }
    train, val = build_datasets(config, generator=torch.Generator().manual_seed(0))
    assert [val.sample_id(i) for i in range(len(val))] == ["s3", "s4"]
    assert train.num_classes == 2 and train.class_names == ("class_0", "class_1")
    batch = next(iter(DataLoader(train, batch_size=3)))
    assert batch["image"].shape == (3, 3, 32, 40) and batch["mask"].shape == (3, 32, 40)
    assert set(batch["mask"].unique().tolist()) <= {0, 1, 255}
    assert val[0]["image"].shape == (3, 45, 67)  # validation is not augmented


def binary_folder(make_folder, **keys: object) -> dict:
    """The [data] table of a folder of four 0/255 samples, with ``keys``."""
    root = make_folder(stems=[f"s{i}" for i in range(4)], values=(0, 255))
    encoding = {"kind": "values", "value_map": {"0": 0, "255": 1}}
    return {"layout": "folders", "root": str(root), "encoding": encoding, **keys}


def test_colour_augmentation_changes_training_images_only(make_folder):
    config = binary_folder(make_folder, val_fraction=0.25, shuffle_split=False)
    plain_train, plain_val = build_datasets(config)
    train, val = build_datasets({**config, "colour_jitter": 0.0, "invert": 1.0})
    torch.testing.assert_close(train[0]["image"], 1 - plain_train[0]["image"])
    assert torch.equal(train[0]["mask"], plain_train[0]["mask"])
    assert torch.equal(val[0]["image"], plain_val[0]["image"])
    evaluated = evaluation_dataset({**config, "colour_jitter": 0.5, "invert": 1.0}, "train")
    assert torch.equal(evaluated[0]["image"], plain_train[0]["image"])


def test_folders_weight_map_crops_with_the_mask(make_folder):
    config = binary_folder(
        make_folder, weight_map_background=0, crop_size=32, rot90=True, val_fraction=0.25
    )
    root = config["root"]
    train, val = build_datasets(config)
    batch = next(iter(DataLoader(train, batch_size=3)))
    assert batch["weight"].shape == (3, 32, 32) and bool((batch["weight"] > 0).all())
    assert val[0]["weight"].shape == (45, 67)
    with pytest.raises(ValueError, match=r"^data.weight_map_background must go with layout"):
        DataConfig(layout="instances", root=root, weight_map_background=0)


def test_unknown_keys_and_layouts_get_suggestions():
    with pytest.raises(
        ValueError, match="data key must be known, got 'crop'; did you mean 'crop_size'"
    ):
        build_datasets({"layout": "synthetic", "crop": 64})
    with pytest.raises(ValueError, match="did you mean 'camvid'"):
        DataConfig(layout="camvd", root=".")
    with pytest.raises(ValueError, match="data root for layout 'tiff' must be given, got nothing"):
        DataConfig(layout="tiff")


def test_synthetic_layout_gives_weight_maps_that_crop_with_the_mask():
    config = DataConfig(
        layout="synthetic", num_train=4, num_val=2, image_size=64, crop_size=48, rot90=True
    )
    train, val = build_datasets(config)
    assert (len(train), len(val)) == (4, 2)
    batch = next(iter(DataLoader(train, batch_size=4)))
    assert batch["weight"].shape == (4, 48, 48) and batch["instances"].shape == (4, 48, 48)
    torch.testing.assert_close(batch["mask"], (batch["instances"] > 0).long())


def test_instances_layout_splits_by_the_manifest(tmp_path, save):
    rng = np.random.default_rng(0)
    for name in ("p0", "p1", "p2", "p3", "q0", "q1"):
        save(tmp_path / "images" / f"{name}.png", rng.integers(0, 256, (21, 23, 3), dtype=np.uint8))
        labels = np.zeros((21, 23), np.uint16)
        labels[3:9, 4:12], labels[3:9, 12:20] = 1, 2
        save(tmp_path / "instances" / f"{name}.png", labels)
    (tmp_path / "manifest.csv").write_text("id,group\np0,p\np1,p\np2,p\np3,p\nq0,q\nq1,q\n")
    config = {
        "layout": "instances",
        "root": str(tmp_path),
        "manifest": "manifest.csv",
        "val_fraction": 0.25,
    }
    train, val = build_datasets(config)
    assert [train.sample_id(i) for i in range(len(train))] == ["p0", "p1", "p2", "q0"]
    assert [val.sample_id(i) for i in range(len(val))] == ["p3", "q1"]
    assert val[0]["weight"].shape == (21, 23) and train.class_names == ("background", "object")


def test_tiff_layout_reads_isbi_style_stacks(tmp_path):
    rng = np.random.default_rng(0)
    tifffile.imwrite(
        tmp_path / "train-volume.tif",
        rng.integers(0, 256, (10, 19, 17), dtype=np.uint8),
        photometric="minisblack",
    )
    labels = rng.choice(np.array([0, 255], np.uint8), (10, 19, 17))
    tifffile.imwrite(tmp_path / "train-labels.tif", labels, photometric="minisblack")
    config = {
        "layout": "tiff",
        "root": str(tmp_path),
        "encoding": {"kind": "values", "value_map": {"0": 0, "255": 1}},
        "shuffle_split": False,
    }
    train, val = build_datasets(config)
    assert (len(train), len(val)) == (8, 2)
    np.testing.assert_array_equal(val[1]["mask"].numpy(), labels[9] // 255)


def test_camvid_layout_uses_its_train_and_val_folders(tmp_path, save):
    for split, count in (("train", 3), ("val", 2)):
        for i in range(count):
            save(tmp_path / split / f"{i}.png", np.zeros((9, 11, 3), np.uint8))
            save(tmp_path / f"{split}annot" / f"{i}.png", np.full((9, 11), i, np.uint8))
    train, val = build_datasets({"layout": "camvid", "root": str(tmp_path), "crop_size": 8})
    assert (len(train), len(val)) == (3, 2) and train.num_classes == 11
    assert train[0]["image"].shape == (3, 8, 8) and val[0]["image"].shape == (3, 9, 11)


def test_input_scale_resizes_training_samples_before_the_crop_not_validation(make_folder):
    root = make_folder(stems=[f"s{i}" for i in range(5)], values=(0, 255))
    config = {
        "layout": "folders",
        "root": str(root),
        "encoding": {"kind": "values", "value_map": {"0": 0, "255": 1}},
        "input_scale": 0.5,
        "val_fraction": 0.4,
    }
    train, val = build_datasets(config, generator=torch.Generator().manual_seed(0))
    sample = train[0]  # 45×67 at 0.5: round(22.5) = 22, round(33.5) = 34
    assert sample["image"].shape == (3, 22, 34) and sample["mask"].shape == (22, 34)
    assert set(sample["mask"].unique().tolist()) <= {0, 1}  # nearest: no new values
    assert val[0]["image"].shape == (3, 45, 67) and val[0]["mask"].shape == (45, 67)
    cropped, _ = build_datasets({**config, "crop_size": 16, "scale": [0.5, 0.5]})
    assert cropped[0]["image"].shape == (3, 16, 16)
    quarter, _ = build_datasets({**config, "scale": [0.5, 0.5]})  # (0.5·0.5, 0.5·0.5)
    assert quarter[0]["image"].shape == (3, 11, 17)  # round(11.25), round(16.75)
