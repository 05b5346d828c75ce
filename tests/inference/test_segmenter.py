"""The Normalize module and the Segmenter: a network with its normalisation, classes, palette."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pixelwise.inference import Segmenter, as_segmenter, predict_logits
from pixelwise.inference.tiling import predict as tiled
from pixelwise.models import create_model
from pixelwise.nn.normalise import Normalize, normalise_images
from pixelwise.report.palette import class_palette

NORM = {"mean": [0.25, 0.5, 0.75], "std": [0.5, 2.0, 0.25]}


def unet(padding: str = "same") -> nn.Module:
    torch.manual_seed(0)
    return create_model(
        "unet", num_classes=3, in_channels=3, depth=2, base_width=4, padding=padding
    ).eval()


# --- Normalize ------------------------------------------------------------------------------


def test_normalize_is_per_channel_and_round_trips_its_dict():
    norm = Normalize(NORM["mean"], NORM["std"])
    images = torch.rand(2, 3, 5, 7)
    mean, std = torch.tensor(NORM["mean"])[:, None, None], torch.tensor(NORM["std"])[:, None, None]
    assert torch.equal(norm(images), (images - mean) / std)
    assert torch.equal(norm(images[0]), norm(images)[0])  # (C, H, W)
    assert norm.as_dict() == NORM and Normalize.from_dict(NORM).as_dict() == NORM
    assert norm.channels == 3 and not norm.identity
    assert torch.equal(normalise_images(images, NORM), norm(images))
    assert norm.state_dict() == {}  # the statistics travel as the checkpoint's dict
    assert norm(torch.ones(1, 3, 2, 2, dtype=torch.uint8)).dtype == torch.float32


def test_normalize_without_statistics_is_the_identity():
    for norm in (Normalize(), Normalize.from_dict(None), Normalize.from_dict({})):
        images = torch.rand(1, 5, 4, 4)
        assert norm.identity and norm.channels is None and norm.as_dict() == {}
        assert norm(images) is images


def test_normalize_errors_are_one_line():
    with pytest.raises(ValueError) as info:
        Normalize(NORM["mean"], NORM["std"])(torch.rand(1, 2, 4, 4))
    assert str(info.value) == (
        "images must have shape (N, C, H, W) or (C, H, W) with C = 3 (the checkpoint's "
        "channels), got shape (1, 2, 4, 4)"
    )
    with pytest.raises(ValueError, match=r"^normalisation std must be > 0 for every channel"):
        Normalize([0.5], [0.0])
    with pytest.raises(ValueError, match=r"^normalisation must hold 'mean' and 'std' lists"):
        Normalize.from_dict({"mean": [0.5, 0.5], "std": [1.0]})


# --- Segmenter ------------------------------------------------------------------------------


def test_segmenter_is_network_after_normalize_and_wraps_without_copying():
    net = unet()
    segmenter = Segmenter(net, NORM, class_names=("sky", "road", "car"), ignore_index=7)
    assert segmenter.network is net  # a live model is held, not copied
    images = torch.rand(2, 3, 16, 20)
    with torch.no_grad():
        assert torch.equal(segmenter(images), net(normalise_images(images, NORM)))
    assert (segmenter.num_classes, segmenter.in_channels) == (3, 3)
    assert segmenter.class_names == ("sky", "road", "car") and segmenter.ignore_index == 7
    assert segmenter.size_divisor == 4 and segmenter.output_margin == 0
    np.testing.assert_array_equal(segmenter.palette, class_palette(("sky", "road", "car")))
    assert not segmenter.training  # mirrors the network's mode


def test_segmenter_defaults_and_meta():
    segmenter = Segmenter(unet("valid"))
    assert segmenter.class_names == ("0", "1", "2") and segmenter.ignore_index == 255
    assert segmenter.normalize.identity and segmenter.output_margin == 20
    assert segmenter.checkpoint is None
    assert segmenter.meta() == {
        "model_name": "unet",
        "model_args": {
            "num_classes": 3,
            "in_channels": 3,
            "depth": 2,
            "base_width": 4,
            "padding": "valid",
        },
        "class_names": ["0", "1", "2"],
        "ignore_index": 255,
        "normalisation": {},
        "num_classes": 3,
        "in_channels": 3,
        "input_scale": 1.0,
    }
    user = Segmenter(nn.Conv2d(3, 2, 1), NORM)
    assert user.meta()["model_name"] == "torch.nn.modules.conv.Conv2d"
    assert (user.num_classes, user.in_channels, user.class_names) == (None, 3, ())
    palette = [[1, 2, 3], [4, 5, 6]]
    named = Segmenter(nn.Conv2d(3, 2, 1), class_names=("a", "b"), palette=palette)
    assert named.num_classes == 2 and named.palette.tolist() == palette


def test_segmenter_refuses_class_names_of_another_count():
    with pytest.raises(ValueError) as info:
        Segmenter(unet(), class_names=("a", "b"))
    assert str(info.value) == (
        "class_names must name the network's 3 classes, got 2 names ['a', 'b']"
    )


def test_predict_is_the_whole_image_or_tiled_argmax():
    segmenter = Segmenter(unet("valid"), NORM)
    image = torch.rand(3, 45, 67)
    whole = predict_logits(segmenter, image)
    torch.testing.assert_close(segmenter.predict_logits(image), whole)
    mask = segmenter.predict(image)
    assert mask.dtype == torch.int64 and mask.shape == (45, 67)
    assert torch.equal(mask, whole.argmax(0))
    # Overlap-tile equals the whole image to float rounding.
    tiles = segmenter.predict_logits(image, tile=48, optimize=False)
    torch.testing.assert_close(tiles, tiled(segmenter, image, tile=48, optimize=False))
    torch.testing.assert_close(tiles, whole, atol=1e-4, rtol=1e-4)
    assert segmenter.predict(image, tta="flips").shape == (45, 67)


def test_as_segmenter_wraps_a_bare_network_once():
    net = unet()
    segmenter = as_segmenter(net)
    assert segmenter.network is net and segmenter.normalize.identity
    assert as_segmenter(segmenter) is segmenter
    with pytest.raises(TypeError, match=r"^model must be a Segmenter or a torch.nn.Module"):
        as_segmenter("unet")
    other = segmenter.with_network(unet("valid"))
    assert other.class_names == segmenter.class_names and other.output_margin == 20
