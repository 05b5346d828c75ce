"""Folder, CamVid, instance and TIFF data sets return the documented sample dict."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from pixelwise.data import (
    CamVidDataset,
    FolderDataset,
    InstanceDataset,
    MaskEncoding,
    PairedDataset,
    TiffStackDataset,
    separate_touching,
)
from pixelwise.losses.weight_map import unet_weight_map

H, W = 45, 67
ENC3 = MaskEncoding.index(3)


def test_folder_pairs_by_stem_across_extensions_and_scales_uint8(tmp_path, save, rng):
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    mask = rng.integers(0, 3, (H, W), dtype=np.uint8)
    save(tmp_path / "images" / "x.bmp", image)
    save(tmp_path / "masks" / "x.png", mask)
    sample = FolderDataset(tmp_path, ENC3)[0]
    assert set(sample) == {"image", "mask", "path"}
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, H, W)
    np.testing.assert_allclose(sample["image"].numpy(), image.transpose(2, 0, 1) / 255.0, rtol=1e-6)
    assert sample["mask"].dtype == torch.int64
    np.testing.assert_array_equal(sample["mask"].numpy(), mask)
    assert sample["path"] == str(tmp_path / "images" / "x.bmp")


def _membrane_folder(tmp_path, save, rng):
    """One EM-like sample: 0/255 mask, membranes (0) a grid between four cells (255), a few
    pixels 128 (declared ignored)."""
    mask = np.full((H, W), 255, dtype=np.uint8)
    mask[20:23, :] = 0  # horizontal membrane
    mask[:, 30:32] = 0  # vertical membrane
    mask[0, 0] = 128
    save(tmp_path / "images" / "s.png", rng.integers(0, 256, (H, W), dtype=np.uint8))
    save(tmp_path / "masks" / "s.png", mask)
    encoding = MaskEncoding.values({0: 0, 255: 1, 128: 255})  # 128: ignored
    return encoding, mask


def test_folder_weight_map_from_the_components_of_the_other_classes(tmp_path, save, rng):
    from pixelwise.losses.weight_map import weight_map_from_semantic

    encoding, raw = _membrane_folder(tmp_path, save, rng)
    dataset = FolderDataset(tmp_path, encoding, weight_map_background=0)
    sample = dataset[0]
    assert set(sample) == {"image", "mask", "weight", "path"}
    semantic = (raw == 255).astype(np.int64)  # the ignored pixel counts as membrane
    expected = weight_map_from_semantic(semantic, background=0)
    np.testing.assert_array_equal(sample["weight"].numpy(), expected)
    # The border term lifts the membrane between the cells above the class weight alone.
    assert sample["weight"][21, 10] > 2 * sample["weight"][5, 10]
    assert dataset[0]["weight"] is sample["weight"]  # computed once, then cached
    assert "weight" not in FolderDataset(tmp_path, encoding)[0]


@pytest.mark.parametrize("bad", [2, -1, "0"])
def test_folder_weight_map_background_must_be_a_class(tmp_path, save, rng, bad):
    encoding, _ = _membrane_folder(tmp_path, save, rng)
    with pytest.raises(
        ValueError, match=r"^weight_map_background must be a class index in \[0, 2\)"
    ):
        FolderDataset(tmp_path, encoding, weight_map_background=bad)


def test_jpeg_images_pair_with_png_masks(make_folder):
    root = make_folder(image_ext=".jpg")
    dataset = FolderDataset(root, ENC3)
    assert len(dataset) == 3 and [dataset.sample_id(i) for i in range(3)] == ["a", "b", "c"]
    assert dataset[2]["image"].shape == (3, H, W)


def test_sixteen_bit_images_scale_by_65535_and_alpha_is_dropped(tmp_path, save):
    grey = np.array([[0, 65535, 32768]], dtype=np.uint16)
    save(tmp_path / "images" / "g.png", grey)
    save(tmp_path / "masks" / "g.png", np.zeros((1, 3), np.uint8))
    rgba = np.full((1, 3, 4), 200, dtype=np.uint8)
    rgba[..., 3] = 0
    save(tmp_path / "images" / "r.png", rgba)
    save(tmp_path / "masks" / "r.png", np.zeros((1, 3), np.uint8))
    dataset = FolderDataset(tmp_path, MaskEncoding.index(1))
    np.testing.assert_allclose(dataset[0]["image"].numpy(), [[[0.0, 1.0, 32768 / 65535]]])
    assert dataset[1]["image"].shape == (3, 1, 3)
    np.testing.assert_allclose(dataset[1]["image"].numpy(), 200 / 255.0)


def test_tiff_images_in_a_folder_read_with_tifffile(tmp_path, save):
    image = np.arange(H * W, dtype=np.uint16).reshape(H, W)
    (tmp_path / "images").mkdir()
    tifffile.imwrite(tmp_path / "images" / "t.tif", image)
    save(tmp_path / "masks" / "t.png", np.ones((H, W), np.uint8))
    sample = FolderDataset(tmp_path, MaskEncoding.index(2))[0]
    np.testing.assert_allclose(sample["image"][0].numpy(), image / 65535.0, rtol=1e-6)


def test_class_names_come_from_classes_txt(make_folder):
    root = make_folder()
    assert FolderDataset(root, ENC3).class_names == ("class_0", "class_1", "class_2")
    (root / "classes.txt").write_text("0 sky\n1 road\n2 car\n3 void\n")
    dataset = FolderDataset(root, ENC3)
    assert dataset.class_names == ("sky", "road", "car")
    assert dataset.num_classes == 3 and dataset.ignore_index == 255


def test_palette_masks_decode_to_classes(tmp_path, save):
    colors = [(128, 128, 128), (128, 0, 0), (0, 0, 0)]
    classes = np.array([[0, 1, 2], [2, 1, 0]])
    save(tmp_path / "images" / "p.png", np.zeros((2, 3), np.uint8))
    save(tmp_path / "masks" / "p.png", np.asarray(colors, np.uint8)[classes])
    dataset = FolderDataset(tmp_path, MaskEncoding.palette(colors, num_classes=2))
    np.testing.assert_array_equal(dataset[0]["mask"].numpy(), [[0, 1, 255], [255, 1, 0]])


def test_palette_mode_index_masks_are_read_as_indices(tmp_path, save):
    mask = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), mode="L").convert("P")
    mask.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    (tmp_path / "masks").mkdir()
    mask.save(tmp_path / "masks" / "v.png")
    save(tmp_path / "images" / "v.png", np.zeros((2, 2), np.uint8))
    np.testing.assert_array_equal(
        FolderDataset(tmp_path, ENC3)[0]["mask"].numpy(), [[0, 1], [2, 1]]
    )


def test_camvid_layout_picks_the_split_and_ignores_void(tmp_path, save):
    for split in ("train", "val"):
        save(tmp_path / split / f"{split}1.png", np.zeros((5, 7, 3), np.uint8))
        save(tmp_path / f"{split}annot" / f"{split}1.png", np.full((5, 7), 11, np.uint8))
    dataset = CamVidDataset(tmp_path, "val")
    assert dataset.sample_id(0) == "val1" and dataset.num_classes == 11
    assert (dataset[0]["mask"] == 255).all()
    with pytest.raises(ValueError, match="did you mean 'val'"):
        CamVidDataset(tmp_path, "vall")


def test_explicit_pairs(make_folder):
    root = make_folder()
    pairs = [(root / "images" / "b.png", root / "masks" / "b.png")]
    dataset = PairedDataset(pairs, ENC3, class_names=("x", "y", "z"))
    assert len(dataset) == 1 and dataset.class_names == ("x", "y", "z")
    assert dataset[0]["path"].endswith("b.png")
    assert dataset[-1]["path"].endswith("b.png")
    with pytest.raises(IndexError):
        dataset[1]


def _separate_by_loop(labels: np.ndarray) -> np.ndarray:
    out = labels.copy()
    for y in range(labels.shape[0]):
        for x in range(labels.shape[1]):
            window = labels[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2]
            if labels[y, x] > 0 and (window > labels[y, x]).any():
                out[y, x] = 0
    return out


def test_separate_touching_matches_a_pixel_loop_and_leaves_no_touching_objects(rng):
    labels = np.zeros((23, 31), np.int64)
    labels[2:12, 3:15] = 1
    labels[2:12, 15:25] = 2  # touches 1 along a column
    labels[12:20, 10:20] = 3  # touches 1 and 2 along a row
    labels[20:23, 20:23] = 4  # touches 3 only at a corner
    out = separate_touching(labels)
    np.testing.assert_array_equal(out, _separate_by_loop(labels))
    padded = np.pad(out, 1)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            neighbour = padded[1 + dy : 24 + dy, 1 + dx : 32 + dx]
            assert not ((out > 0) & (neighbour > 0) & (neighbour != out)).any()
    assert (out[labels == 4] == 4).all()  # the largest label loses nothing
    np.testing.assert_array_equal(np.unique(out), [0, 1, 2, 3, 4])


def _write_instances(tmp_path, save, labels: np.ndarray) -> None:
    save(tmp_path / "images" / "n1.png", np.full((*labels.shape, 3), 90, np.uint8))
    save(tmp_path / "instances" / "n1.png", labels.astype(np.uint16))


def test_instance_folder_gives_a_separated_mask_and_the_unet_weight_map(tmp_path, save):
    labels = np.zeros((H, W), np.int64)
    labels[5:25, 5:30] = 300  # 16-bit ids
    labels[5:25, 30:50] = 301
    _write_instances(tmp_path, save, labels)
    sample = InstanceDataset(tmp_path)[0]
    assert set(sample) == {"image", "mask", "instances", "weight", "path"}
    separated = separate_touching(labels)
    assert (separated[5:25, 29] == 0).all()  # the gap column
    np.testing.assert_array_equal(sample["instances"].numpy(), separated)
    np.testing.assert_array_equal(sample["mask"].numpy(), (separated > 0).astype(np.int64))
    np.testing.assert_array_equal(sample["weight"].numpy(), unet_weight_map(separated))
    assert sample["weight"][15, 29] > sample["weight"][15, 60] + 5  # the gap weighs most


def test_instance_weight_fn_is_called_once_per_sample_on_separated_labels(tmp_path, save):
    labels = np.zeros((9, 11), np.int64)
    labels[2:6, 2:5], labels[2:6, 5:9] = 1, 2
    _write_instances(tmp_path, save, labels)
    calls = []

    def weight_fn(instances):
        calls.append(instances.copy())
        return np.full(instances.shape, 2.5)

    dataset = InstanceDataset(tmp_path, weight_fn=weight_fn)
    first, second = dataset[0], dataset[0]
    assert len(calls) == 1
    np.testing.assert_array_equal(calls[0], separate_touching(labels))
    assert first["weight"].dtype == torch.float32 and (second["weight"] == 2.5).all()
    assert "weight" not in InstanceDataset(tmp_path, weights=False)[0]


def test_tiff_stacks_pair_pages_in_order(tmp_path, rng):
    images = rng.integers(0, 256, (4, 13, 17), dtype=np.uint8)
    labels = rng.choice(np.array([0, 255], np.uint8), (4, 13, 17))
    tifffile.imwrite(tmp_path / "volume.tif", images, photometric="minisblack")
    tifffile.imwrite(tmp_path / "labels.tif", labels, photometric="minisblack")
    dataset = TiffStackDataset(
        tmp_path / "volume.tif", tmp_path / "labels.tif", MaskEncoding.values({0: 0, 255: 1})
    )
    assert len(dataset) == 4
    sample = dataset[2]
    np.testing.assert_allclose(sample["image"][0].numpy(), images[2] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(sample["mask"].numpy(), labels[2] // 255)
    assert sample["path"] == f"{tmp_path / 'volume.tif'} page 2"


def test_tiff_stacks_with_different_page_counts_are_refused(tmp_path):
    tifffile.imwrite(tmp_path / "v.tif", np.zeros((3, 5, 5), np.uint8), photometric="minisblack")
    tifffile.imwrite(tmp_path / "l.tif", np.zeros((2, 5, 5), np.uint8), photometric="minisblack")
    with pytest.raises(ValueError) as info:
        TiffStackDataset(tmp_path / "v.tif", tmp_path / "l.tif", MaskEncoding.index(2))
    assert str(info.value) == (
        f"label stack {tmp_path / 'l.tif'} must have one page per page of "
        f"{tmp_path / 'v.tif'} (3), got 2 pages"
    )


def test_tiff_label_page_with_undeclared_values_names_the_page(tmp_path):
    tifffile.imwrite(tmp_path / "v.tif", np.zeros((2, 5, 5), np.uint8), photometric="minisblack")
    labels = np.zeros((2, 5, 5), np.uint8)
    labels[1, 0, 0] = 9
    tifffile.imwrite(tmp_path / "l.tif", labels, photometric="minisblack")
    dataset = TiffStackDataset(tmp_path / "v.tif", tmp_path / "l.tif", MaskEncoding.index(2))
    dataset[0]
    with pytest.raises(
        ValueError,
        match=f"^mask {tmp_path / 'l.tif'} page 1 must hold classes 0..1, got values \\[9\\]",
    ):
        dataset[1]


def test_subset_has_its_own_transform_and_keeps_class_names(make_folder):
    dataset = FolderDataset(make_folder(), ENC3, class_names=("x", "y", "z"))
    view = dataset.subset([2, 0], transform=lambda s: {**s, "mask": s["mask"] * 0})
    assert view.class_names == ("x", "y", "z") and len(view) == 2
    assert view.sample_id(0) == "c"
    assert (view[0]["mask"] == 0).all() and (dataset[2]["mask"] != 0).any()
    with pytest.raises(IndexError, match="subset indices must lie in"):
        dataset.subset([3])


def test_weight_cache_computes_each_sample_once():
    from pixelwise.data.datasets import WeightCache

    calls = []
    cache = WeightCache()
    first = cache.weight(3, lambda: calls.append(3) or np.ones((2, 2)))
    again = cache.weight(3, lambda: calls.append(3) or np.zeros((2, 2)))
    other = cache.weight(4, lambda: calls.append(4) or np.full((1, 2), 2.0))
    assert calls == [3, 4] and again is first and first.dtype == torch.float32
    torch.testing.assert_close(other, torch.full((1, 2), 2.0))
