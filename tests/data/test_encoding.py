"""Mask encodings: declared tables decode exactly, anything undeclared is a one-line error."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pixelwise.data.encoding import MaskEncoding, read_class_names, read_palette


def test_index_encoding_keeps_classes_and_maps_declared_ignore_values():
    raw = np.array([[0, 1, 10], [11, 11, 3]], dtype=np.uint8)
    enc = MaskEncoding.index(11, ignore_values=(11,))  # CamVid: 11 = void
    out = enc.decode(raw)
    np.testing.assert_array_equal(out, [[0, 1, 10], [255, 255, 3]])
    assert out.dtype == np.int64


def test_index_encoding_refuses_a_binary_mask_and_suggests_the_value_map():
    raw = np.array([[0, 255], [255, 0]], dtype=np.uint8)
    with pytest.raises(ValueError) as info:
        MaskEncoding.index(2).decode(raw, source="m.png")
    assert str(info.value) == (
        "mask m.png must hold classes 0..1, got values [255]; "
        "the mask looks binary: declare MaskEncoding.values({0: 0, 255: 1})"
    )


def test_index_encoding_names_every_undeclared_value():
    raw = np.array([[0, 3, 7], [7, 2, 1]], dtype=np.uint16)
    with pytest.raises(ValueError, match=re.escape("got values [3, 7]; declare them with")):
        MaskEncoding.index(3).decode(raw, source="m.png")


def test_value_table_maps_binary_masks_and_ignores_declared_values():
    raw = np.array([[0, 255, 128]], dtype=np.uint8)
    enc = MaskEncoding.values({0: 0, 255: 1, 128: 255})
    assert enc.num_classes == 2
    np.testing.assert_array_equal(enc.decode(raw), [[0, 1, 255]])


def test_value_table_refuses_values_it_does_not_declare():
    raw = np.array([[0, 255, 17]], dtype=np.uint8)
    with pytest.raises(ValueError) as info:
        MaskEncoding.values({0: 0, 255: 1}).decode(raw, source="m.png")
    assert str(info.value) == (
        "mask m.png must hold only the declared values [0, 255], got values [17]; "
        "add the values to the value map (map a value to ignore_index to ignore it)"
    )


def test_palette_maps_colours_by_position_and_ignores_positions_past_num_classes():
    palette = [(128, 128, 128), (128, 0, 0), (0, 0, 0)]
    enc = MaskEncoding.palette(palette, num_classes=2)
    raw = np.array([[[128, 0, 0], [0, 0, 0], [128, 128, 128]]], dtype=np.uint8)
    np.testing.assert_array_equal(enc.decode(raw), [[1, 255, 0]])


def test_palette_names_unknown_colours():
    enc = MaskEncoding.palette([(1, 2, 3), (4, 5, 6)])
    raw = np.array([[[1, 2, 3], [9, 9, 9]]], dtype=np.uint8)
    with pytest.raises(ValueError, match=re.escape("got other colours [(9, 9, 9)]")):
        enc.decode(raw, source="m.png")


def test_palette_image_is_read_in_row_order_and_trailing_padding_dropped(tmp_path, save):
    pixels = np.zeros((1, 256, 4), dtype=np.uint8)
    pixels[0, :3, :3] = [(10, 20, 30), (40, 50, 60), (0, 0, 0)]
    pixels[..., 3] = 255
    path = save(tmp_path / "palette.png", pixels)
    assert read_palette(path) == ((10, 20, 30), (40, 50, 60), (0, 0, 0))
    assert MaskEncoding.palette(path).num_classes == 3


def test_palette_image_with_a_repeat_inside_is_refused(tmp_path, save):
    pixels = np.array([[(1, 1, 1), (2, 2, 2), (1, 1, 1), (3, 3, 3)]], dtype=np.uint8)
    with pytest.raises(ValueError, match="must hold distinct colours, got"):
        read_palette(save(tmp_path / "palette.png", pixels))


def test_ignore_index_may_not_be_a_class():
    with pytest.raises(ValueError, match=r"ignore_index must lie outside the classes \[0, 3\)"):
        MaskEncoding.index(3, ignore_index=2)


@pytest.mark.parametrize(
    "encoding",
    [
        MaskEncoding.index(11, ignore_values=(11,)),
        MaskEncoding.values({0: 0, 255: 1}),
        MaskEncoding.palette([(1, 2, 3), (4, 5, 6)], num_classes=1, ignore_index=-100),
    ],
)
def test_config_round_trip(encoding):
    assert MaskEncoding.from_config(encoding.to_config()) == encoding


def test_config_takes_toml_string_keys_and_suggests_misspelt_keys():
    enc = MaskEncoding.from_config({"kind": "values", "value_map": {"0": 0, "255": 1}})
    assert enc == MaskEncoding.values({0: 0, 255: 1})
    with pytest.raises(ValueError, match="did you mean 'value_map'"):
        MaskEncoding.from_config({"kind": "values", "valuemap": {"0": 0}})
    with pytest.raises(ValueError, match="did you mean 'palette'"):
        MaskEncoding.from_config({"kind": "palete"})


def test_class_names_numbered_or_plain_first_k_kept(tmp_path):
    numbered = tmp_path / "a.txt"
    numbered.write_text("0 Sky\n1 Building\n2 Unlabelled\n")
    assert read_class_names(numbered, 2) == ("Sky", "Building")
    plain = tmp_path / "b.txt"
    plain.write_text("background\n\nforeground object\n")
    assert read_class_names(plain, 2) == ("background", "foreground object")


def test_class_file_with_too_few_names_is_named(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("0 Sky\n")
    with pytest.raises(ValueError) as info:
        read_class_names(path, 3)
    assert str(info.value) == (
        f"class file {path} must name all 3 classes, got 1 names; "
        "add the missing names or fix num_classes"
    )
