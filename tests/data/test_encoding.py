"""Mask encodings: declared tables decode exactly, anything undeclared is a one-line error."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import numpy as np
import pytest

from pixelwise.data.encoding import EXAMPLE, MaskEncoding, read_class_names, read_palette


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
        "the mask looks binary: "
        'declare encoding = { kind = "values", value_map = { "0" = 0, "255" = 1 } }'
    )


def test_index_encoding_names_every_undeclared_value_and_the_encoding_that_ignores_them():
    raw = np.array([[0, 3, 7], [7, 2, 1]], dtype=np.uint16)
    with pytest.raises(ValueError) as info:
        MaskEncoding.index(3).decode(raw, source="m.png")
    assert str(info.value) == (
        "mask m.png must hold classes 0..2, got values [3, 7]; "
        'declare encoding = { kind = "index", num_classes = 3, ignore_values = [3, 7] } '
        'to ignore them, or a value map (kind = "values") to read them as classes'
    )


def test_many_undeclared_values_are_counted_and_the_fix_says_where_they_go():
    raw = np.arange(20, dtype=np.uint8).reshape(4, 5)
    with pytest.raises(ValueError) as info:
        MaskEncoding.index(2).decode(raw, source="m.png")
    assert str(info.value) == (
        "mask m.png must hold classes 0..1, got values [2, 3, 4, 5, 6, 7, 8, 9, … 10 more]; "
        'list them in ignore_values, or declare a value map (kind = "values")'
    )


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
        "add them to the value map, e.g. "
        'encoding = { kind = "values", value_map = { "0" = 0, "17" = 255, "255" = 1 } } '
        "to ignore them"
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


# --- the one spelling: to_toml ----------------------------------------------------------------


def test_to_toml_is_the_run_file_spelling_with_defaults_left_out():
    assert MaskEncoding.values({0: 0, 255: 1}) == EXAMPLE
    assert EXAMPLE.to_toml() == '{ kind = "values", value_map = { "0" = 0, "255" = 1 } }'
    camvid = MaskEncoding.index(11, ignore_values=(11,))
    assert camvid.to_toml() == '{ kind = "index", num_classes = 11, ignore_values = [11] }'
    palette = MaskEncoding.palette([(1, 2, 3), (4, 5, 6)], num_classes=1, ignore_index=-100)
    assert palette.to_toml() == (
        '{ kind = "palette", palette = [[1, 2, 3], [4, 5, 6]], num_classes = 1, '
        "ignore_index = -100 }"
    )
    wider = MaskEncoding.values({0: 0, 255: 1}, num_classes=3, ignore_index=-100)
    assert wider.to_toml() == (
        '{ kind = "values", value_map = { "0" = 0, "255" = 1 }, num_classes = 3, '
        "ignore_index = -100 }"
    )


def test_the_shipped_run_files_spell_encodings_as_to_toml_does():
    configs = Path(__file__).resolve().parents[2] / "configs"
    lines = [
        line.split("=", 1)[1].strip()
        for path in sorted(configs.glob("*.toml"))
        for line in path.read_text().splitlines()
        if line.startswith("encoding = ")
    ]
    assert lines  # both shipped data sets declare one
    for text in lines:
        assert MaskEncoding.from_config(tomllib.loads(f"e = {text}")["e"]).to_toml() == text


ENCODINGS = [
    MaskEncoding.index(11, ignore_values=(11,)),
    MaskEncoding.index(3),
    MaskEncoding.values({0: 0, 255: 1}),
    MaskEncoding.values({0: 0, 7: 1, 128: -100, 255: 1}, num_classes=2, ignore_index=-100),
    MaskEncoding.values({0: 0, 1000: 1, 2000: 2}),
    MaskEncoding.palette([(1, 2, 3), (4, 5, 6), (0, 0, 0)], num_classes=2),
    MaskEncoding.palette([(9, 9, 9), (250, 0, 3)]),
]


@pytest.mark.parametrize("encoding", ENCODINGS, ids=lambda e: e.kind)
def test_to_toml_round_trips_through_tomllib(encoding):
    text = encoding.to_toml()
    assert "\n" not in text
    assert MaskEncoding.from_config(tomllib.loads(f"encoding = {text}")["encoding"]) == encoding


def test_a_table_is_required_and_the_fix_shows_the_spelling():
    with pytest.raises(TypeError) as info:
        MaskEncoding.from_config('{ kind = "index" }')
    assert str(info.value) == (
        "encoding must be a MaskEncoding or a table, got str; "
        'e.g. { kind = "values", value_map = { "0" = 0, "255" = 1 } }'
    )


# --- encode: classes back to mask values ------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS, ids=lambda e: e.kind)
def test_encode_is_the_inverse_of_decode_for_every_class(encoding):
    classes = np.arange(encoding.num_classes).reshape(1, -1)  # (1, K)
    raw = encoding.encode(classes)
    assert raw.shape == (
        (1, encoding.num_classes, 3) if encoding.kind == "palette" else classes.shape
    )
    np.testing.assert_array_equal(encoding.decode(raw), classes)


def test_encode_writes_a_class_as_its_smallest_value_and_ignore_as_an_ignored_value():
    enc = MaskEncoding.values({0: 0, 10: 1, 5: 1, 200: 255, 128: 255})
    raw = enc.encode(np.array([[0, 1, 255], [1, 0, 0]]))
    assert raw.dtype == np.uint8
    np.testing.assert_array_equal(raw, [[0, 5, 128], [5, 0, 0]])
    np.testing.assert_array_equal(enc.decode(raw), [[0, 1, 255], [1, 0, 0]])


def test_encode_gives_16_bit_values_above_255_and_keeps_indices_as_they_are():
    wide = MaskEncoding.values({0: 0, 1000: 1, 2000: 2}).encode(np.array([[2, 1, 0]]))
    assert wide.dtype == np.uint16
    np.testing.assert_array_equal(wide, [[2000, 1000, 0]])
    camvid = MaskEncoding.index(11, ignore_values=(11,))
    raw = camvid.encode(np.array([[0, 10, 255]]))
    assert raw.dtype == np.uint8
    np.testing.assert_array_equal(raw, [[0, 10, 11]])


def test_encode_palette_writes_the_palette_colours_and_the_first_ignored_colour():
    enc = MaskEncoding.palette([(128, 128, 128), (128, 0, 0), (0, 0, 0)], num_classes=2)
    raw = enc.encode(np.array([[1, 0, 255]]))
    assert raw.dtype == np.uint8 and raw.shape == (1, 3, 3)
    np.testing.assert_array_equal(raw, [[[128, 0, 0], [128, 128, 128], [0, 0, 0]]])


def test_encode_refuses_values_that_are_not_classes():
    with pytest.raises(ValueError) as info:
        EXAMPLE.encode(np.array([[0, 1, 7, -1]]))
    assert str(info.value) == (
        "classes to encode must be in [0, 2) or ignore_index 255, got values [-1, 7]"
    )
    with pytest.raises(TypeError, match="classes to encode must be integers, got float64"):
        EXAMPLE.encode(np.zeros((2, 2)))


def test_encode_refuses_a_class_the_encoding_has_no_value_for():
    gap = MaskEncoding.values({0: 0, 255: 2})  # nothing is class 1
    with pytest.raises(ValueError) as info:
        gap.encode(np.array([[0, 1, 2]]))
    assert str(info.value) == (
        'the encoding { kind = "values", value_map = { "0" = 0, "255" = 2 } } must have a mask '
        "value for every class it writes, got none for [1]; add one to the value map (or the "
        "palette), or write class indices (pixelwise predict --mask-format index)"
    )
    with pytest.raises(ValueError, match=r"got none for \[ignore_index 255\]"):
        EXAMPLE.encode(np.array([[255]]))  # no value of the 0/255 table is ignored
