"""Rendering the weight map: the numpy colour maps and the PNG round trip the CLI uses."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from pixelwise.data._io import read_labels
from pixelwise.losses.weight_map import unet_weight_map, weight_map_from_semantic
from pixelwise.report.colormap import BAD_COLOR, apply_colormap, colormap_lut
from pixelwise.report.weight_map import save_weight_map_png, weight_map_to_rgb


def test_lut_ends_and_gray_is_the_identity():
    viridis = colormap_lut("viridis")
    assert viridis.shape == (256, 3) and viridis.dtype == np.uint8
    assert tuple(viridis[0]) == (68, 1, 84) and tuple(viridis[-1]) == (253, 231, 37)
    gray = colormap_lut("gray")
    np.testing.assert_array_equal(gray, np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, 1))
    # Luminance rises along viridis (up to uint8 rounding), so the map reads in greyscale.
    luminance = viridis @ np.array([0.299, 0.587, 0.114])
    assert np.all(np.diff(luminance) > -1.0)
    jet = colormap_lut("jet", size=9)
    assert tuple(jet[0]) == (0, 0, 128) and tuple(jet[4]) == (128, 255, 128)


def test_apply_colormap_scaling_bad_values_and_constants():
    values = np.array([[0.0, 1.0, 2.0], [np.nan, np.inf, 4.0]])
    rgb = apply_colormap(values, name="gray")
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 64, 128])
    assert tuple(rgb[1, 0]) == BAD_COLOR and tuple(rgb[1, 1]) == BAD_COLOR
    assert tuple(rgb[1, 2]) == (255, 255, 255)
    clipped = apply_colormap(values, name="gray", vmin=1.0, vmax=2.0)
    np.testing.assert_array_equal(clipped[0, :, 0], [0, 0, 255])
    flat = apply_colormap(np.full((2, 2), 3.0))
    assert np.all(flat == colormap_lut()[0])
    with pytest.raises(ValueError, match=r"^vmax must be >= vmin = 2.0, got 1.0; swap"):
        apply_colormap(values, vmin=2.0, vmax=1.0)
    with pytest.raises(ValueError, match=r"^colormap must be one of .*did you mean 'viridis'"):
        apply_colormap(values, name="viridi")


def test_weight_map_to_rgb_puts_the_largest_weight_at_the_top_colour():
    labels = np.zeros((15, 17), np.uint8)
    labels[3:12, 2:8] = 1
    labels[3:12, 9:15] = 2
    weights = unet_weight_map(labels)
    rgb = weight_map_to_rgb(weights, colormap="jet")
    assert rgb.shape == (15, 17, 3)
    top = np.unravel_index(np.argmax(weights), weights.shape)
    assert tuple(rgb[top]) == tuple(colormap_lut("jet")[-1])
    assert top[1] == 8  # the one-pixel gap between the two objects


def write_png(path, array):
    Image.fromarray(array).save(path)
    return path


def test_saves_the_map_of_a_16_bit_instance_png(tmp_path):
    labels = np.zeros((21, 25), np.uint16)
    labels[2:9, 3:10] = 300
    labels[9:15, 3:10] = 1200  # touches object 300, ids above 255 need 16 bits
    mask = write_png(tmp_path / "instances.png", labels)
    before = mask.read_bytes()
    out = tmp_path / "maps" / "weights.png"
    weights = save_weight_map_png(mask, out, colormap="jet", border="everywhere")
    np.testing.assert_array_equal(weights, unet_weight_map(labels, border="everywhere"))
    with Image.open(out) as image:
        assert image.mode == "RGB" and image.size == (25, 21)
        np.testing.assert_array_equal(np.array(image), weight_map_to_rgb(weights, colormap="jet"))
    assert mask.read_bytes() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["weights.png"]  # no temp files


def test_saves_the_map_of_an_8_bit_semantic_png(tmp_path):
    mask = np.full((13, 15), 255, np.uint8)
    mask[6, :] = 0
    path = write_png(tmp_path / "membrane.png", mask)
    np.testing.assert_array_equal(read_labels(path, "mask file"), mask)
    weights = save_weight_map_png(path, tmp_path / "w.png", semantic=True)
    np.testing.assert_array_equal(weights, weight_map_from_semantic(mask))
    assert weights[6].max() > 5  # the membrane between the two cells


def test_errors_name_the_file_and_never_overwrite(tmp_path):
    rgb = write_png(tmp_path / "photo.png", np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(
        ValueError,
        match=rf"^mask file {rgb} must be a single-channel 8- or 16-bit label image, "
        r"got mode 'RGB' with 3 channels; save",
    ):
        save_weight_map_png(rgb, tmp_path / "out.png")
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    with pytest.raises(
        ValueError, match=rf"^mask file {junk} must be a readable, complete image file, got "
    ):
        read_labels(junk, "mask file")
    missing = tmp_path / "missing.png"
    with pytest.raises(FileNotFoundError, match=rf"^mask file {missing} must exist"):
        save_weight_map_png(missing, tmp_path / "out.png")
    labels = write_png(tmp_path / "labels.png", np.eye(6, dtype=np.uint8))
    before = labels.read_bytes()
    link = tmp_path / "link.png"
    os.symlink(labels, link)
    for same in (labels, tmp_path / "." / "labels.png", link):
        with pytest.raises(ValueError, match=r"^output path must differ from the mask file"):
            save_weight_map_png(labels, same)
    assert labels.read_bytes() == before
    with pytest.raises(ValueError, match=r"^output path must end in .png, got '.*out.jpg'"):
        save_weight_map_png(labels, tmp_path / "out.jpg")
    assert not (tmp_path / "out.png").exists()
