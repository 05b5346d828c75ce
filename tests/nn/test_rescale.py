"""``Rescaled``: the network at a reduced input scale, its logits at the input's size, and the
facts the rest of pixelwise reads from a network kept."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pixelwise.engine.checkpoint import load_checkpoint, save_checkpoint
from pixelwise.inference import Segmenter
from pixelwise.inference._model import (
    input_scale,
    model_in_channels,
    model_num_classes,
    output_margin,
    rescaled_part,
    unwrap_model,
)
from pixelwise.inference.optimize import optimize_for_inference
from pixelwise.models import create_model
from pixelwise.nn.rescale import Rescaled, antialias_weights, check_scale


def unet(padding: str = "same") -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(
        "unet", num_classes=3, in_channels=2, depth=2, base_width=4, padding=padding
    ).eval()


def test_forward_is_resize_network_resize_at_the_input_size():
    network = unet()
    images = torch.rand(2, 2, 45, 67, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = Rescaled(network, 0.5)(images)
        small = F.interpolate(  # round(22.5) = 22, round(33.5) = 34, as the training resize
            images, size=(22, 34), mode="bilinear", align_corners=False, antialias=True
        )
        want = F.interpolate(network(small), size=(45, 67), mode="bilinear", align_corners=False)
    assert got.shape == (2, 3, 45, 67)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("scale", "size"), [(0.5, (45, 67)), (0.25, (64, 64)), (0.3, (37, 50))])
def test_the_export_form_equals_the_forward_pass(scale, size):
    model = Rescaled(unet(), scale)
    images = torch.rand(1, 2, *size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model.export_module()(images), model(images), atol=1e-5, rtol=0)


def test_antialias_weights_are_torchs_antialiased_resize():
    rows = antialias_weights(10, 0.5, torch.zeros(()))  # (5, 10)
    assert rows.shape == (5, 10)
    # Each output pixel: the triangle of half-width 2 at the centre of two input pixels.
    assert rows[1].tolist() == pytest.approx([0, 0.125, 0.375, 0.375, 0.125, 0, 0, 0, 0, 0])
    assert rows[0].tolist()[:3] == pytest.approx([3 / 7, 3 / 7, 1 / 7])  # cut by the border
    signal = torch.arange(10.0)[None, None, None, :]  # (1, 1, 1, 10)
    torch_resized = F.interpolate(
        signal, size=(1, 5), mode="bilinear", align_corners=False, antialias=True
    )
    torch.testing.assert_close((rows @ signal[0, 0, 0])[None], torch_resized[0, 0])


def test_the_facts_of_the_network_are_kept(tmp_path):
    network = unet()
    model = Rescaled(network, 0.5)
    assert unwrap_model(model) is network and rescaled_part(model) is model
    assert (model_in_channels(model), model_num_classes(model), output_margin(model)) == (2, 3, 0)
    assert (model.in_channels, model.num_classes, model.size_divisor) == (2, 3, 8)
    segmenter = Segmenter(model, {"mean": [0.5, 0.5], "std": [0.2, 0.2]})
    assert segmenter.input_scale == 0.5 and input_scale(segmenter) == 0.5
    assert (segmenter.num_classes, segmenter.in_channels, segmenter.size_divisor) == (3, 2, 8)
    meta = segmenter.meta()
    assert meta["model_name"] == "unet" and meta["input_scale"] == 0.5
    assert meta["model_args"] == network.pixelwise_args
    assert Segmenter(network).input_scale == 1.0 and Segmenter(network).size_divisor == 4
    # A checkpoint holds the bare network's weights, under the bare network's names.
    path = save_checkpoint(
        tmp_path / "m.pt",
        model=segmenter,
        class_names=("a", "b", "c"),
        ignore_index=255,
        normalisation=None,
        config={},
        epoch=0,
        metrics={},
    )
    assert list(load_checkpoint(path).state_dict) == list(network.state_dict())
    # Optimised for inference, it is still rescaled and computes the same.
    optimized = optimize_for_inference(model)
    assert input_scale(optimized) == 0.5
    images = torch.rand(1, 2, 40, 52, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(optimized(images), model(images), atol=1e-5, rtol=1e-5)


def test_tiled_prediction_of_a_rescaled_network_has_the_image_size():
    segmenter = Segmenter(Rescaled(unet(), 0.5))
    image = torch.rand(2, 70, 90, generator=torch.Generator().manual_seed(4))
    whole = segmenter.predict_logits(image)  # (3, 70, 90)
    one_tile = segmenter.predict_logits(image, tile=128, optimize=False)
    assert whole.shape == one_tile.shape == (3, 70, 90)
    torch.testing.assert_close(one_tile, whole, atol=1e-6, rtol=0)  # one tile: the whole image
    tiled = segmenter.predict_logits(image, tile=48)
    assert tiled.shape == (3, 70, 90) and torch.isfinite(tiled).all()


def test_bad_scales_and_shrinking_networks_are_refused_in_one_line():
    for bad in (0, 1.5, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match=r"^input scale must be a finite number > 0"):
            check_scale(bad)
    assert check_scale(1) == 1.0
    with pytest.raises(ValueError) as info:
        Rescaled(unet("valid"), 0.5)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("a network run at an input scale must keep its input size")
