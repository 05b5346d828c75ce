"""Bad input: each case is one line naming the file, raised before training starts."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from pixelwise.data import (
    DataProblems,
    FolderDataset,
    InstanceDataset,
    MaskEncoding,
    PairedDataset,
    TiffStackDataset,
    check_dataset,
    check_splits,
    check_training_sizes,
    class_frequencies,
)

ENC3 = MaskEncoding.index(3)


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def _first_problem(err: pytest.ExceptionInfo, count: int) -> str:
    """The first of ``count`` problems, each reported on its own line."""
    assert isinstance(err.value, DataProblems) and len(err.value.problems) == count
    assert all("\n" not in p for p in err.value.problems)
    return err.value.problems[0]


def test_image_without_mask_and_mask_without_image_name_the_files(make_folder):
    root = make_folder(stems=("a", "b", "c", "d"))
    (root / "masks" / "b.png").unlink()
    (root / "masks" / "d.png").unlink()
    (root / "masks" / "z.png").write_bytes((root / "masks" / "a.png").read_bytes())
    with pytest.raises(ValueError) as info:
        FolderDataset(root, ENC3)
    assert _one_line(info) == (
        f"every image in {root / 'images'} and mask in {root / 'masks'} must pair up by file "
        "stem, got 2 image(s) without one: [b.png, d.png]; 1 mask(s) without an image: [z.png]; "
        "add the missing files or remove the unpaired ones"
    )


@pytest.mark.parametrize("target", ["folder", "nowhere"])
def test_an_image_name_that_is_no_file_is_named_not_skipped(make_folder, tmp_path, target):
    root = make_folder(stems=("a", "b"))
    image = root / "images" / "b.png"
    image.unlink()
    pointed = tmp_path if target == "folder" else tmp_path / "gone"
    image.symlink_to(pointed)
    with pytest.raises(ValueError) as info:
        FolderDataset(root, ENC3)
    kind = "a folder" if target == "folder" else "a broken link"
    assert _one_line(info) == (
        f"image {image} must be an image file, got {kind} (a link to {pointed}); remove it or "
        "link it to an image"
    )


def test_unpaired_files_are_named_with_their_own_suffix(make_folder):
    root = make_folder(stems=("a", "orphan"), image_ext=".tif")
    (root / "masks" / "orphan.png").unlink()
    with pytest.raises(ValueError) as info:
        FolderDataset(root, ENC3)
    assert "got 1 image(s) without one: [orphan.tif]; add the missing" in _one_line(info)


def test_image_and_mask_of_different_sizes_give_both_sizes(make_folder, save):
    root = make_folder(stems=("a",))
    save(root / "masks" / "a.png", np.zeros((44, 67), np.uint8))
    with pytest.raises(ValueError) as info:
        FolderDataset(root, ENC3)[0]
    assert _one_line(info) == (
        f"mask {root / 'masks' / 'a.png'} must have the size of its image "
        f"{root / 'images' / 'a.png'}, (H, W) = (45, 67), got (H, W) = (44, 67); "
        "pair the right files, or resize the mask with nearest-neighbour interpolation"
    )


def test_mask_value_that_is_no_class_is_named(make_folder):
    root = make_folder(values=(0, 1, 2, 5))
    with pytest.raises(ValueError) as info:
        check_dataset(FolderDataset(root, ENC3))
    assert _first_problem(info, 3).startswith(  # all 3 masks
        f"mask {root / 'masks' / 'a.png'} must hold classes 0..2, got values [5]; "
    )


def test_binary_masks_suggest_the_value_map(make_folder):
    root = make_folder(values=(0, 255))
    with pytest.raises(ValueError) as info:
        check_dataset(FolderDataset(root, MaskEncoding.index(2)))
    assert _first_problem(info, 3).endswith(
        "got values [255]; the mask looks binary: "
        'declare encoding = { kind = "values", value_map = { "0" = 0, "255" = 1 } }'
    )
    summary = check_dataset(FolderDataset(root, MaskEncoding.values({0: 0, 255: 1})))
    assert summary.num_samples == 3


def _png_bytes(tmp_path: Path, save) -> bytes:
    rng = np.random.default_rng(1)
    return save(
        tmp_path / "src.png", rng.integers(0, 256, (45, 67, 3), dtype=np.uint8)
    ).read_bytes()


def test_truncated_png_is_named(make_folder, tmp_path, save):
    root = make_folder()
    data = _png_bytes(tmp_path, save)
    (root / "images" / "b.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError) as info:
        check_dataset(FolderDataset(root, ENC3))
    assert _one_line(info) == (
        f"image {root / 'images' / 'b.png'} must be a readable, complete image file, "
        "got OSError: image file is truncated; re-export the file or remove it from the data set"
    )


def test_unreadable_and_corrupt_files_are_named(make_folder, tmp_path, save):
    root = make_folder()
    (root / "masks" / "a.png").write_bytes(b"not an image")
    data = bytearray(_png_bytes(tmp_path, save))
    data[200] ^= 0xFF  # inside the compressed pixel data
    (root / "images" / "c.png").write_bytes(bytes(data))
    dataset = FolderDataset(root, ENC3)
    with pytest.raises(
        ValueError, match=re.escape(f"mask {root / 'masks' / 'a.png'} must be a readable")
    ):
        dataset[0]
    with pytest.raises(
        ValueError, match=re.escape(f"image {root / 'images' / 'c.png'} must be a readable")
    ):
        dataset[2]


def test_truncated_tiff_stack_is_named(tmp_path):
    pages = np.random.default_rng(0).integers(0, 256, (4, 20, 20), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "full.tif", pages, photometric="minisblack")
    tifffile.imwrite(tmp_path / "labels.tif", pages // 128, photometric="minisblack")
    data = (tmp_path / "full.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError) as info:
        TiffStackDataset(tmp_path / "cut.tif", tmp_path / "labels.tif", MaskEncoding.index(2))
    assert _one_line(info).startswith(
        f"image stack {tmp_path / 'cut.tif'} must be a readable, complete image file, got "
    )


def test_jpeg_masks_are_refused_by_name_and_by_content(make_folder, save):
    root = make_folder()
    mask = np.zeros((45, 67), np.uint8)
    save(root / "masks" / "a.jpg", mask)
    (root / "masks" / "a.png").unlink()
    with pytest.raises(ValueError) as info:
        FolderDataset(root, ENC3)
    assert _one_line(info) == (
        f"mask {root / 'masks' / 'a.jpg'} must be stored losslessly (PNG, TIFF or BMP), got "
        "JPEG; JPEG compression changes label values along edges; export the masks as PNG"
    )
    (root / "masks" / "a.jpg").unlink()
    save(root / "masks" / "a.png", mask, format="JPEG")
    with pytest.raises(
        ValueError, match=re.escape(f"mask {root / 'masks' / 'a.png'} must be stored losslessly")
    ):
        FolderDataset(root, ENC3)[0]


def test_rgb_image_where_one_channel_is_expected(make_folder):
    root = make_folder()
    with pytest.raises(ValueError) as info:
        FolderDataset(root, ENC3, channels=1)[0]
    assert _one_line(info) == (
        f"image {root / 'images' / 'a.png'} must have 1 channel (channels=1), got 3 (mode RGB); "
        "convert the images, or set channels=3 and the model's in_channels to match"
    )


def test_rgb_mask_under_an_index_encoding(make_folder, save):
    root = make_folder()
    save(root / "masks" / "a.png", np.zeros((45, 67, 3), np.uint8))
    colourful = np.zeros((45, 67, 3), np.uint8)
    colourful[..., 0] = 1
    save(root / "masks" / "b.png", colourful)
    dataset = FolderDataset(root, ENC3)
    with pytest.raises(ValueError) as info:
        dataset[0]
    assert _one_line(info) == (
        f"mask {root / 'masks' / 'a.png'} must have 1 channel for the index encoding, got 3 "
        "(mode RGB); its channels are equal: save it as a single-channel (mode L) PNG"
    )
    with pytest.raises(ValueError, match=re.escape("declare MaskEncoding.palette(...)")):
        dataset[1]


def test_index_mask_under_a_palette_encoding(make_folder):
    root = make_folder()
    with pytest.raises(ValueError, match="must have 3 channels for the palette encoding, got 1"):
        FolderDataset(root, MaskEncoding.palette([(0, 0, 0), (1, 1, 1), (2, 2, 2)]))[0]


def test_images_with_different_channels_are_found_by_the_check(make_folder, save):
    root = make_folder()
    save(root / "images" / "c.png", np.zeros((45, 67), np.uint8))
    with pytest.raises(ValueError) as info:
        check_dataset(FolderDataset(root, ENC3))
    assert _one_line(info) == (
        f"image {root / 'images' / 'c.png'} must have the 3 channel(s) of the data set's first "
        f"image {root / 'images' / 'a.png'}, got 1; convert the images so that all have the "
        "same channels"
    )


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        FolderDataset(tmp_path / "nowhere", ENC3)
    assert _one_line(info) == (
        f"data set folder {tmp_path / 'nowhere'} must exist, got a missing folder"
    )
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError) as info:
        FolderDataset(tmp_path, ENC3)
    assert _one_line(info) == (
        f"image folder {tmp_path / 'images'} must contain images "
        "['.png', '.tif', '.tiff', '.jpg', '.jpeg', '.bmp', '.gif'], got none"
    )
    (tmp_path / "images" / "notes.txt").write_text("x")
    with pytest.raises(
        ValueError, match=re.escape("got no image files (other files: [notes.txt])")
    ):
        FolderDataset(tmp_path, ENC3)
    Image.new("L", (3, 3)).save(tmp_path / "images" / "a.png")
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"mask folder {tmp_path / 'masks'} must exist")
    ):
        FolderDataset(tmp_path, ENC3)
    with pytest.raises(FileNotFoundError, match=r"instance image folder .* must exist"):
        InstanceDataset(tmp_path)


def test_explicit_pairs_name_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        PairedDataset([(tmp_path / "x.png", tmp_path / "y.png")], ENC3)
    assert (
        _one_line(info)
        == f"image {tmp_path / 'x.png'} must be an existing file, got a missing file"
    )


def test_masks_with_nothing_but_ignore_are_refused(make_folder):
    root = make_folder(values=(11,))
    with pytest.raises(ValueError) as info:
        check_dataset(FolderDataset(root, MaskEncoding.index(11, ignore_values=(11,))))
    assert _one_line(info) == (
        "the masks must label at least one pixel with a class, got only ignore_index 255 in 3 "
        "masks; check the mask encoding"
    )


def test_summary_and_class_frequencies_count_pixels_ignore_excluded(make_folder, caplog):
    root = make_folder(values=(0, 1, 11))
    dataset = FolderDataset(root, MaskEncoding.index(3, ignore_values=(11,)))
    masks = [np.asarray(Image.open(root / "masks" / f"{s}.png")) for s in "abc"]
    expected = [sum(int((m == c).sum()) for m in masks) for c in range(3)]
    np.testing.assert_array_equal(class_frequencies(dataset), expected)
    seen = []
    with caplog.at_level(logging.WARNING, logger="pixelwise.data.checks"):
        summary = check_dataset(dataset, progress=lambda done, total: seen.append((done, total)))
    assert summary.class_pixels == tuple(expected) and expected[2] == 0
    assert summary.ignored_pixels == sum(int((m == 11).sum()) for m in masks)
    assert summary.absent_classes == ("class_2",) and "class_2" in caplog.text
    assert summary.sizes == ((45, 67),) and summary.channels == 3
    assert sum(summary.class_fractions) == pytest.approx(1.0)
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_every_problem_is_reported_one_line_each(make_folder, save):
    root = make_folder(stems=("a", "b", "c", "d"))
    (root / "images" / "b.png").write_bytes(b"")  # 0 bytes
    save(root / "masks" / "d.png", np.full((45, 67), 7, np.uint8))  # no such class
    with pytest.raises(DataProblems) as info:
        check_dataset(FolderDataset(root, ENC3))
    lines = str(info.value).splitlines()
    assert lines[0] == "2 problems in the data:"
    assert lines[1].startswith(f"image {root / 'images' / 'b.png'} must be a readable")
    assert lines[2].startswith(f"mask {root / 'masks' / 'd.png'} must hold classes 0..2")
    assert len(lines) == 3


def test_the_problem_list_is_capped_with_a_count():
    problems = DataProblems([f"file {i} is bad" for i in range(25)])
    lines = str(problems).splitlines()
    assert lines[0] == "25 problems in the data:" and lines[-1] == "... and 5 more"
    assert len(lines) == 1 + 20 + 1 and len(problems.problems) == 25


def test_both_splits_are_checked_together(make_folder, save):
    train = make_folder(stems=("a", "b"))
    val = make_folder(stems=("v",), root=train.parent / "val")
    save(val / "masks" / "v.png", np.full((44, 67), 1, np.uint8))  # wrong size
    (train / "images" / "a.png").write_bytes(b"not a png")
    with pytest.raises(DataProblems) as info:
        check_splits({"train": FolderDataset(train, ENC3), "val": FolderDataset(val, ENC3)})
    lines = str(info.value).splitlines()
    assert lines[0] == "2 problems in the data:"
    assert str(train / "images" / "a.png") in lines[1] and str(val / "masks" / "v.png") in lines[2]


def test_mixed_sizes_without_a_crop_are_refused_naming_an_image_of_each_size(make_folder, save):
    root = make_folder(stems=("a", "b", "c"))
    save(root / "images" / "b.png", np.zeros((1, 1, 3), np.uint8))
    save(root / "masks" / "b.png", np.zeros((1, 1), np.uint8))
    summary = check_dataset(FolderDataset(root, ENC3))
    assert summary.size_files == {
        (1, 1): (1, str(root / "images" / "b.png")),
        (45, 67): (2, str(root / "images" / "a.png")),
    }
    with pytest.raises(ValueError) as info:
        check_training_sizes(summary, crop_size=None, batch_size=4)
    assert _one_line(info) == (
        "training images without data.crop_size (batch_size 4) must share one size, got "
        f"2 of 45×67 (e.g. {root / 'images' / 'a.png'}), 1 of 1×1 ({root / 'images' / 'b.png'}); "
        "set data.crop_size, or train.batch_size = 1"
    )
    # One image a batch, or a crop: nothing to refuse (a 1×1 image is padded up to the crop).
    assert check_training_sizes(summary, crop_size=None, batch_size=1) == []
    assert check_training_sizes(summary, crop_size=32, batch_size=4) == []


def test_random_scale_or_rotating_non_square_images_need_a_crop(make_folder):
    summary = check_dataset(FolderDataset(make_folder(), ENC3))  # all 45×67
    assert check_training_sizes(summary, crop_size=None, batch_size=2) == []
    with pytest.raises(ValueError, match="not rotate non-square images, got rot90 of 45×67"):
        check_training_sizes(summary, crop_size=None, batch_size=2, rot90=True)
    with pytest.raises(ValueError, match=r"not scale at random, got data.scale \(0.5, 2.0\)"):
        check_training_sizes(summary, crop_size=None, batch_size=2, scale=(0.5, 2.0))
    assert check_training_sizes(summary, crop_size=None, batch_size=2, scale=(0.5, 0.5)) == []


def test_a_crop_larger_than_every_image_is_a_warning_with_the_sizes(make_folder):
    summary = check_dataset(FolderDataset(make_folder(), ENC3))  # all 45×67
    assert check_training_sizes(summary, crop_size=(45, 67), batch_size=4) == []
    assert check_training_sizes(summary, crop_size=(90, 67), batch_size=4) == [
        "data.crop_size 90×67 is larger than every training image (largest 45×67): at least "
        "50.0% of each crop is padding; a crop no larger than the images trains faster"
    ]
