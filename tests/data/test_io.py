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
    # Refused from the declared size, before decoding, by TIFF and Pillow readers alike.
    assert text == (
        f"image {path} must have at most 100 pixels (the image size limit), got 20×30 = "
        "600 pixels; split the image, or raise the limit with PIXELWISE_MAX_PIXELS"
    )
    with pytest.raises(ValueError, match=r"at most 100 pixels .* got 20×30 = 600 pixels; split"):
        read_labels(path)  # the label reader (weightmap, instances) too
    monkeypatch.delenv("PIXELWISE_MAX_PIXELS")
    assert read_image(path).shape[:2] == (20, 30)


def test_a_png_far_over_the_pixel_limit_is_refused_with_the_limit_and_no_warning(
    tmp_path, monkeypatch, recwarn
):
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(path)
    monkeypatch.setenv("PIXELWISE_MAX_PIXELS", "200")  # 600 > 2 × 200: Pillow's own refusal
    with pytest.raises(ValueError) as info:
        read_image(path)
    assert str(info.value) == (
        f"image {path} must have at most 200 pixels (the image size limit), got 20×30 = 600 "
        "pixels; split the image, or raise the limit with PIXELWISE_MAX_PIXELS"
    )
    monkeypatch.setenv("PIXELWISE_MAX_PIXELS", "500")  # Pillow warns between 500 and 1000
    with pytest.raises(ValueError, match=r"at most 500 pixels .* got 20×30 = 600 pixels; split"):
        read_image(path)
    assert not [w for w in recwarn if "decompression" in str(w.message).lower()]


def test_float_images_with_nan_or_infinity_are_refused(tmp_path):
    pixels = np.full((4, 5), 0.5, np.float32)
    pixels[0, 0], pixels[1, 1] = np.nan, np.inf
    tifffile.imwrite(tmp_path / "nodata.tif", pixels)
    with pytest.raises(ValueError) as info:
        read_image(tmp_path / "nodata.tif")
    assert str(info.value) == (
        f"image {tmp_path / 'nodata.tif'} must hold finite pixel values, got 2 NaN or infinite "
        "pixels of 20; replace them (e.g. with numpy.nan_to_num) and save the image again"
    )
    tifffile.imwrite(tmp_path / "huge.tif", np.full((2, 2), 1e300))  # float64 past float32
    with pytest.raises(ValueError, match=r"must hold finite pixel values, got 4 NaN or inf"):
        read_image(tmp_path / "huge.tif")


@pytest.mark.parametrize("suffix", [".gif", ".png"])
def test_an_animation_is_refused_not_read_as_its_first_frame(tmp_path, suffix):
    frames = [Image.fromarray(np.full((4, 5), 60 * i, np.uint8)) for i in range(3)]
    path = tmp_path / f"clip{suffix}"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    kind = "GIF" if suffix == ".gif" else "PNG"
    for read, what in ((read_image, "image"), (read_labels, "instance image")):
        with pytest.raises(ValueError) as info:
            read(path)
        assert str(info.value) == (
            f"{what} {path} must be a single image, got an animation of 3 frames ({kind}); "
            "save the frame to use as its own PNG"
        )


def test_class_names_must_be_distinct_in_classes_txt(tmp_path):
    from pixelwise.data.encoding import read_class_names

    (tmp_path / "classes.txt").write_text("sky\nroad\nsky\n", encoding="utf-8")
    with pytest.raises(ValueError) as info:
        read_class_names(tmp_path / "classes.txt", 3)
    assert str(info.value) == (
        f"class names in {tmp_path / 'classes.txt'} must be distinct, got 'sky' repeated; "
        "rename them"
    )
    (tmp_path / "classes.txt").write_bytes(b"sky\n\xff\xfe\n")
    with pytest.raises(ValueError) as info:
        read_class_names(tmp_path / "classes.txt", 2)
    assert str(info.value) == (
        f"class file {tmp_path / 'classes.txt'} must be UTF-8 text, got byte 4: invalid start byte"
    )
