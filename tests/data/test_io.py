"""The one label-image reader (pixelwise.data._io.read_labels), used by data sets and weightmap."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from pixelwise.data._io import read_image, read_labels, read_mask
from pixelwise.data.encoding import MaskEncoding


def test_reads_16_bit_palette_and_tiff_labels_as_int64(tmp_path):
    labels = np.array([[0, 1, 300], [7, 0, 65535]], np.uint16)
    Image.fromarray(labels).save(tmp_path / "wide.png")
    out = read_labels(tmp_path / "wide.png")
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, labels)
    indexed = Image.fromarray(np.array([[0, 2], [1, 2]], np.uint8), mode="P")
    indexed.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    indexed.save(tmp_path / "indexed.png")
    np.testing.assert_array_equal(read_labels(tmp_path / "indexed.png"), [[0, 2], [1, 2]])
    tifffile.imwrite(tmp_path / "labels.tif", labels.astype(np.int32))
    np.testing.assert_array_equal(read_labels(tmp_path / "labels.tif"), labels)


def test_refuses_colour_lossy_negative_and_missing_files(tmp_path):
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError) as info:
        read_labels(tmp_path / "rgb.png", "mask file")
    assert str(info.value) == (
        f"mask file {tmp_path / 'rgb.png'} must be a single-channel 8- or 16-bit label image, "
        "got mode 'RGB' with 3 channels; "
        "save one integer label per pixel as a greyscale (L) or 16-bit PNG"
    )
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "labels.jpg")
    with pytest.raises(ValueError, match=r"must be stored losslessly \(PNG, TIFF or BMP\)"):
        read_labels(tmp_path / "labels.jpg")
    tifffile.imwrite(tmp_path / "negative.tif", -np.ones((2, 2), np.int32))
    with pytest.raises(ValueError, match=r"^labels in .*negative.tif must be >= 0, got minimum -1"):
        read_labels(tmp_path / "negative.tif")
    with pytest.raises(FileNotFoundError) as info:
        read_labels(tmp_path / "none.png")
    assert str(info.value) == (
        f"instance image {tmp_path / 'none.png'} must exist, got no such file; check the path"
    )


def _with_orientation(array: np.ndarray, path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(array).save(path, exif=exif)


def test_an_image_is_read_as_viewers_show_it_exif_orientation_applied(tmp_path):
    pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3) * 2
    _with_orientation(pixels, tmp_path / "turned.png", 6)  # 6: rotate 90° clockwise to view
    image = read_image(tmp_path / "turned.png", channels=3)  # (H, W, C)
    expected = np.rot90(pixels, k=-1).astype(np.float32) / 255  # (6, 4, 3), clockwise
    assert image.shape == (6, 4, 3)
    np.testing.assert_allclose(image, expected)


def test_a_mask_with_an_orientation_tag_is_refused(tmp_path):
    _with_orientation(np.zeros((4, 6), np.uint8), tmp_path / "mask.png", 8)
    with pytest.raises(ValueError) as info:
        read_mask(tmp_path / "mask.png", MaskEncoding.index(2))
    assert str(info.value) == (
        f"mask {tmp_path / 'mask.png'} must be stored upright (EXIF orientation 1), got EXIF "
        "orientation 8; save the mask again without the orientation tag"
    )


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_one_pixel_limit_guards_every_reader(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"huge{suffix}"
    pixels = np.zeros((20, 30), np.uint8)
    if suffix == ".tif":
        tifffile.imwrite(path, pixels)
    else:
        Image.fromarray(pixels).save(path)
    monkeypatch.setenv("PIXELWISE_MAX_PIXELS", "100")
    with pytest.raises(ValueError) as info:
        read_image(path)
    text = str(info.value)
    assert "\n" not in text and str(path) in text
    if suffix == ".tif":  # refused from the declared size, before decoding
        assert text == (
            f"image {path} must have at most 100 pixels (the image size limit), got 20×30 = "
            "600 pixels; split the image, or raise the limit with PIXELWISE_MAX_PIXELS"
        )
    monkeypatch.delenv("PIXELWISE_MAX_PIXELS")
    assert read_image(path).shape[:2] == (20, 30)
