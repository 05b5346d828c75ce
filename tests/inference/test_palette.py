"""Class palettes, colour masks and overlays (pixelwise.report.palette), as prediction writes them."""

from __future__ import annotations

import numpy as np
import pytest

from pixelwise.report.palette import (
    CAMVID_CLASSES,
    CAMVID_COLORS,
    DISTINCT_COLORS,
    IGNORE_COLOR,
    as_rgb8,
    class_palette,
    colorize,
    overlay,
)


def test_camvid_names_get_segnets_palette_whatever_the_case():
    np.testing.assert_array_equal(class_palette(CAMVID_CLASSES), CAMVID_COLORS)
    lower = [n.lower() for n in CAMVID_CLASSES]
    np.testing.assert_array_equal(class_palette(lower), CAMVID_COLORS)


def test_other_names_get_the_fixed_distinct_colours():
    palette = class_palette(["membrane", "interior"])
    assert palette.dtype == np.uint8 and palette.shape == (2, 3)
    np.testing.assert_array_equal(palette, DISTINCT_COLORS[:2])
    np.testing.assert_array_equal(class_palette(2), palette)


def test_many_classes_stay_distinct_and_fixed():
    palette = class_palette(60)
    assert len({tuple(c) for c in palette}) == 60
    np.testing.assert_array_equal(palette, class_palette(60))
    assert IGNORE_COLOR not in {tuple(c) for c in palette}


@pytest.mark.parametrize("bad", [0, -1, [], "abc", True])
def test_palette_refuses_no_classes(bad):
    with pytest.raises(ValueError) as info:
        class_palette(bad)
    assert str(info.value) == (
        f"classes must be class names or a number of classes >= 1, got {bad!r}"
    )


def test_colorize_paints_classes_and_blacks_out_ignore():
    palette = class_palette(3)
    mask = np.array([[0, 1], [2, 255]])
    rgb = colorize(mask, palette)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    np.testing.assert_array_equal(rgb[0, 0], palette[0])
    np.testing.assert_array_equal(rgb[1, 0], palette[2])
    np.testing.assert_array_equal(rgb[1, 1], IGNORE_COLOR)


def test_colorize_refuses_values_without_a_colour():
    with pytest.raises(ValueError) as info:
        colorize(np.array([[0, 3, 7]]), class_palette(3))
    assert str(info.value) == (
        "mask values must be classes 0..2 or ignore_index 255, got values [3, 7]; "
        "give a palette with a colour per class"
    )


def test_colorize_refuses_a_bad_palette():
    with pytest.raises(ValueError) as info:
        colorize(np.zeros((2, 2), int), np.zeros((3, 4), np.uint8))
    assert str(info.value) == (
        "palette must have shape (K, 3), got shape (3, 4); use class_palette"
    )


def test_overlay_blends_labelled_pixels_and_keeps_ignored_ones():
    image = np.full((1, 3, 3), 100, np.uint8)
    palette = np.array([[200, 0, 0], [0, 200, 0]], np.uint8)
    mask = np.array([[0, 1, 255]])
    out = overlay(image, mask, palette, alpha=0.25)
    np.testing.assert_array_equal(out[0, 0], [125, 75, 75])  # 0.75·100 + 0.25·200
    np.testing.assert_array_equal(out[0, 1], [75, 125, 75])
    np.testing.assert_array_equal(out[0, 2], [100, 100, 100])
    np.testing.assert_array_equal(overlay(image, mask, palette, alpha=0), image)


def test_overlay_takes_grey_and_float_images():
    grey = np.array([[0.0, 1.0]])
    out = overlay(grey, np.array([[255, 255]]), class_palette(2), alpha=1.0)
    np.testing.assert_array_equal(out, [[[0, 0, 0], [255, 255, 255]]])
    assert as_rgb8(np.zeros((2, 2, 4), np.uint8)).shape == (2, 2, 3)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, "half"])
def test_overlay_refuses_alpha_outside_0_1(alpha):
    with pytest.raises(ValueError) as info:
        overlay(np.zeros((2, 2)), np.zeros((2, 2), int), class_palette(2), alpha)
    assert str(info.value) == f"alpha must lie in [0, 1], got {alpha!r}"


def test_overlay_refuses_a_mask_of_another_size():
    with pytest.raises(ValueError) as info:
        overlay(np.zeros((2, 3)), np.zeros((3, 2), int), class_palette(2))
    assert str(info.value) == "mask must have the image's size (2, 3), got (3, 2)"


def _stripes(num_classes: int) -> np.ndarray:
    """One column of 3 pixels per class, 6 rows: class k in columns 3k..3k+2."""
    return np.repeat(np.arange(num_classes), 3)[None].repeat(6, axis=0)  # (6, 3K)


@pytest.mark.parametrize("names", [list(CAMVID_CLASSES), ["background", "cell", "edge"]])
def test_training_overlays_and_predict_colour_every_class_identically(tmp_path, names):
    import torch
    from PIL import Image

    from pixelwise.inference.predict import save_prediction
    from pixelwise.report.palette import save_overlay

    num_classes = len(names)
    mask = _stripes(num_classes)  # (6, 3K)
    image = torch.zeros(1, *mask.shape)  # black, so alpha 1 shows the pure class colour
    # As `pixelwise predict` does: the palette of the checkpoint's class names.
    paths = {kind: tmp_path / f"p_{kind}.png" for kind in ("mask", "color", "overlay")}
    save_prediction(image, torch.from_numpy(mask), paths, class_palette(names))
    predicted = np.asarray(Image.open(paths["color"]).convert("RGB"))  # (6, 3K, 3)
    # As the trainer does: its class names, here without background and fully opaque.
    trained = save_overlay(
        tmp_path / "t.png", image, mask, None, num_classes=num_classes, class_names=names, alpha=1.0
    )
    drawn = np.asarray(Image.open(trained).convert("RGB"))
    factor = 4  # 6 rows are enlarged to 24 (at most 4×)
    left = mask.shape[1] * factor + 4  # the prediction panel, after the image and a gap
    top = int(np.flatnonzero((drawn[:, left] != 255).any(axis=-1))[0])  # below its title
    for k in range(num_classes):
        column = 3 * k + 1
        from_predict = predicted[2, column]
        in_training = drawn[top + 2 * factor + 1, left + column * factor + 1]
        np.testing.assert_array_equal(in_training, from_predict, err_msg=f"class {k}")
        # The legend under the panels shows the same colour as a swatch of 12 × 12 pixels.
        legend = drawn[top + mask.shape[0] * factor :]
        assert (legend == from_predict).all(axis=-1).sum() >= 144, f"class {k} legend"
