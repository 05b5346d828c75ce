"""The shared input checks of pixelwise._checks: one message per fault, for losses, metrics, tiling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelwise._checks import check_images, check_label_image, check_logits, check_target


def test_check_images_takes_one_image_with_ndim_3():
    image = torch.zeros(3, 4, 5)
    assert check_images(image, 3, "image", ndim=3) is image
    with pytest.raises(ValueError) as info:
        check_images(torch.zeros(1, 3, 4, 5), what="image", ndim=3)
    assert str(info.value) == (
        "image must have 3 dimensions (C, H, W), got shape (1, 3, 4, 5); "
        "predict one image at a time: image[0]"
    )
    with pytest.raises(ValueError) as info:
        check_images(image, 1, "image", ndim=3)
    assert str(info.value) == (
        "image must have 1 channels (the model's in_channels), got 3 channels in shape (3, 4, 5); "
        "convert the image to the model's channels"
    )
    with pytest.raises(TypeError, match=r"^image must be a floating-point tensor, got torch.int64"):
        check_images(torch.zeros(3, 4, 5, dtype=torch.long), what="image", ndim=3)


def test_check_images_batches_keep_their_messages():
    with pytest.raises(ValueError) as info:
        check_images(torch.zeros(3, 4, 5))
    assert str(info.value) == (
        "images must have 4 dimensions (N, C, H, W), got shape (3, 4, 5); "
        "add a batch axis with x.unsqueeze(0)"
    )


def test_check_target_against_logits_and_alone():
    logits = check_logits(torch.zeros(2, 3, 4, 5))
    target = torch.zeros(2, 4, 5, dtype=torch.int32)
    checked = check_target(target, 3, 255, like=logits)
    assert checked.dtype == torch.int64 and checked.shape == (2, 4, 5)
    with pytest.raises(ValueError) as info:
        check_target(torch.zeros(2, 4, 6, dtype=torch.long), 3, 255, like=logits)
    assert str(info.value) == (
        "target must have shape (N, H, W) = (2, 4, 5) to match logits (2, 3, 4, 5), got shape "
        "(2, 4, 6); drop the channel axis of the target or resize it to the logits"
    )
    with pytest.raises(ValueError) as info:
        check_target(torch.zeros(4, 5, dtype=torch.long), 3, 255)
    assert str(info.value) == (
        "target must have 3 dimensions (N, H, W), got shape (4, 5); "
        "add a batch axis with target.unsqueeze(0)"
    )
    with pytest.raises(ValueError) as info:
        check_target(torch.full((1, 1, 2), 7), 3, 255, fix="fix it")
    assert str(info.value) == (
        "target values must be in [0, 3) or ignore_index 255, got 7 (2 pixels); fix it"
    )


def test_check_label_image_reads_arrays_tensors_and_masks():
    out = check_label_image(torch.tensor([[0, 2], [1, 0]], dtype=torch.int16), "labels")
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [[0, 2], [1, 0]])
    mask = check_label_image(np.array([[True, False]]), "mask", allow_bool=True)
    np.testing.assert_array_equal(mask, [[1, 0]])
    with pytest.raises(TypeError) as info:
        check_label_image(np.array([[True, False]]), "segments", fix="label them")
    assert str(info.value) == "segments must hold integer labels, got bool; label them"
    with pytest.raises(ValueError) as info:
        check_label_image(-np.ones((2, 2), int), "labels", nonnegative=True)
    assert str(info.value) == "labels must be >= 0, got minimum -1"
    with pytest.raises(ValueError) as info:
        check_label_image(np.zeros((1, 2, 2), int), "labels")
    assert str(info.value) == (
        "labels must be a 2-D label image (H, W), got shape (1, 2, 2); pass one image at a time"
    )


def test_a_message_is_one_line_whatever_the_names_and_values():
    from pixelwise._checks import message

    text = message("image data/a\nb.png", "be readable", "a\rb\x00", "fix\nit")
    assert "\n" not in text and "\r" not in text and "\x00" not in text
    assert text == "image data/a\\nb.png must be readable, got a\\rb\\x00; fix\\nit"
    long = message("config x.toml", "be short", "y" * 10_000_000)
    assert len(long) < 400 and long.endswith("... (10000000 characters)")


def test_a_newline_in_a_file_name_stays_on_its_line(tmp_path):
    import numpy as np
    from PIL import Image

    from pixelwise.data import FolderDataset, MaskEncoding

    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "images" / "a\nb.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "masks" / "c.png")
    with pytest.raises(ValueError) as info:
        FolderDataset(tmp_path, MaskEncoding.index(2))
    assert "\n" not in str(info.value) and "a\\nb.png" in str(info.value)
