"""Overlap-tile prediction: exact where the theory says so, bounded layouts, mirrored borders."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.signal import windows
from torch import nn

from pixelwise.inference.segmenter import Segmenter
from pixelwise.inference.tiling import (
    extract_tile,
    mirror_indices,
    output_margin,
    plan_tiles,
    predict,
    window,
)
from pixelwise.models import create_model
from pixelwise.nn.padding import mirror_pad
from pixelwise.nn.trace import trace_stages

HEIGHT, WIDTH = 67, 45


def image(channels: int = 2, height: int = HEIGHT, width: int = WIDTH) -> torch.Tensor:
    return torch.rand(channels, height, width, generator=torch.Generator().manual_seed(1))


def patch_classifier(patch_size: int = 13) -> nn.Module:
    torch.manual_seed(0)
    return create_model(
        "patch_classifier", num_classes=3, in_channels=2, patch_size=patch_size, width=4
    ).eval()


def valid_unet(depth: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return create_model(
        "unet",
        num_classes=3,
        in_channels=2,
        depth=depth,
        base_width=4,
        padding="valid",
        batch_norm=False,
    ).eval()


def whole(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x[None])[0]


# --------------------------------------------------------------------------- blended tiles


def test_tiles_equal_the_whole_image_when_the_receptive_field_fits_in_half_the_overlap():
    model = patch_classifier(13)
    field = trace_stages(model, (1, 2, 33, 33))[-1].receptive_field
    assert field == 13  # r = 6: the condition is ⌊overlap · tile⌋ // 2 >= 6
    x = image()
    expected = whole(model, x)
    plan = plan_tiles(model, HEIGHT, WIDTH, tile=24, overlap=0.5)
    assert len(plan.rows) > 2 and len(plan.cols) > 1  # interior tiles on both axes
    for blend in ("constant", "gaussian"):
        got = predict(model, x, tile=24, overlap=0.5, blend=blend, batch_size=3)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_the_condition_is_tight_one_pixel_less_margin_differs():
    model = patch_classifier(13)
    x = image()
    # ⌊0.45 · 24⌋ = 10 shared pixels, margin 5 < r = 6: inner tile sides leak padding.
    got = predict(model, x, tile=24, overlap=0.45, blend="constant")
    assert (got - whole(model, x)).abs().max() > 1e-4


def test_prediction_runs_an_optimised_copy_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = create_model("unet", num_classes=3, in_channels=2, depth=2, base_width=4)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = image()
    fast = predict(model, x, tile=48)
    plain = predict(model, x, tile=48, optimize=False)
    # Folded batch norms change the logits by float rounding only.
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5 * plain.abs().max().item())
    assert model.training and not getattr(model, "pixelwise_optimized", False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_an_encoder_variant_predicts_in_tiles():
    pytest.importorskip("timm", reason="the efficientnet_lite0 encoder needs timm")
    torch.manual_seed(0)
    model = create_model(
        "unet", num_classes=3, in_channels=2, encoder="efficientnet_lite0", base_width=4
    ).eval()
    x = image(height=160, width=96)
    expected = whole(model, x)
    # Within one tile: the whole image, bit for bit; folded batch norms: to float rounding.
    assert torch.equal(predict(model, x, tile=192, optimize=False), expected)
    folded = predict(model, x, tile=192)
    torch.testing.assert_close(folded, expected, rtol=1e-4, atol=1e-4 * expected.abs().max())
    # In overlapping tiles (96 = 3 · the size divisor 32): every pixel predicted.
    got = predict(model, x, tile=96, overlap=0.5)
    assert got.shape == expected.shape == (3, 160, 96) and torch.isfinite(got).all()


def test_an_image_within_one_tile_is_predicted_whole():
    torch.manual_seed(0)
    model = create_model("unet", num_classes=3, in_channels=2, depth=2, base_width=4).eval()
    x = image()
    # optimize=False: the same computation, bit for bit.
    assert torch.equal(predict(model, x, tile=128, optimize=False), whole(model, x))
    valid = valid_unet(depth=2)
    assert torch.equal(predict(valid, x, tile=512, optimize=False), mirror_padded_whole(valid, x))
    # Longer than the tile along H only: one tile along W, of the image's width.
    plan = plan_tiles(model, HEIGHT, WIDTH, tile=48)
    assert len(plan.cols) == 1 and plan.cols[0].length == WIDTH
    assert all(r.length == 48 for r in plan.rows)


@pytest.mark.parametrize("size, tile, overlap", [(67, 24, 0.5), (45, 16, 0.25), (100, 32, 0.0)])
def test_blend_layout_covers_the_axis_with_the_requested_overlap(size, tile, overlap):
    plan = plan_tiles(patch_classifier(), size, 20, tile=tile, overlap=overlap)
    rows, shared = plan.rows, math.floor(overlap * tile)
    assert rows[0].start == 0 and rows[-1].start + tile == size
    assert all(r.length == tile for r in rows)
    gaps = [b.start - a.start for a, b in itertools.pairwise(rows)]
    assert all(tile - gap >= shared for gap in gaps)
    # The fewest tiles that achieve that overlap.
    assert len(rows) == math.ceil((size - tile) / (tile - shared)) + 1
    kept = np.zeros(size, int)
    for r in rows:
        kept[r.dst : r.dst + r.kept] += 1
    assert kept.min() >= 1
    row_sum, _ = plan.weight_sums()
    assert row_sum.min() > 0


def test_gaussian_window_is_scipys_with_sigma_an_eighth_of_the_tile():
    for length in (8, 33, 512):
        expected = windows.gaussian(length, std=length / 8)
        np.testing.assert_allclose(window(length, "gaussian").numpy(), expected, rtol=1e-6)
    assert torch.equal(window(5, "constant"), torch.ones(5))


# --------------------------------------------------------------------------- overlap-tile


def mirror_padded_whole(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The whole-image oracle: mirror-pad by the margin (and up to an accepted size), run once."""
    margin = output_margin(model)
    sizes = [model.valid_input_sizes_near(n + 2 * margin)[1] for n in x.shape[-2:]]
    pad = max(s - n for s, n in zip(sizes, x.shape[-2:], strict=True))
    padded = mirror_pad(x[None], pad)  # (1, C, H + 2·pad, W + 2·pad)
    start = pad - margin
    window_ = padded[..., start : start + sizes[0], start : start + sizes[1]]
    with torch.no_grad():
        return model(window_)[0, :, : x.shape[-2], : x.shape[-1]]


def test_valid_unet_tiles_equal_the_whole_mirror_padded_image():
    model = valid_unet(depth=2)
    margin = output_margin(model)
    assert margin == 20
    x = image()
    plan = plan_tiles(model, HEIGHT, WIDTH, tile=64)
    assert plan.strategy == "overlap-tile"
    assert len(plan.rows) >= 3 and len(plan.cols) >= 2
    got = predict(model, x, tile=64, batch_size=4)
    torch.testing.assert_close(got, mirror_padded_whole(model, x), atol=1e-5, rtol=1e-5)


def test_valid_unet_output_tiles_abut_and_inputs_add_the_context():
    model = valid_unet(depth=2)
    margin = output_margin(model)
    plan = plan_tiles(model, HEIGHT, WIDTH, tile=64)
    for axis, size in ((plan.rows, HEIGHT), (plan.cols, WIDTH)):
        assert [t.dst for t in axis] == [sum(t.kept for t in axis[:i]) for i in range(len(axis))]
        assert sum(t.kept for t in axis) == size  # every pixel written once
        for t in axis:
            assert model.is_valid_input_size(t.length)
            assert t.start == t.dst - margin and t.src == 0
            assert t.dst % model.size_divisor == 0  # on the pooling grid of the whole image
            assert t.kept <= model.output_size(t.length)
            assert torch.equal(t.weights, torch.ones(t.kept))


@pytest.mark.parametrize("height, width", [(5, 3), (1, 9), (2, 2)])
def test_valid_unet_on_images_smaller_than_the_mirror_context(height, width):
    model = valid_unet(depth=2)  # context 20 pixels: reflected several times over
    x = image(height=height, width=width)
    got = predict(model, x, tile=64)
    assert got.shape == (3, height, width)
    torch.testing.assert_close(got, mirror_padded_whole(model, x), atol=1e-5, rtol=1e-5)


def test_extract_tile_mirrors_like_mirror_pad():
    x = image(height=7, width=4)
    padded = mirror_pad(x[None], 12)[0]  # (C, 7 + 24, 4 + 24)
    plan = plan_tiles(valid_unet(depth=2), 7, 4, tile=64)
    (row,), (col,) = plan.rows, plan.cols
    tile = extract_tile(x, row, col)
    # mirror_pad by 12 is not enough for a 44-pixel tile; compare where it reaches.
    for i, j in [(0, 0), (5, 9), (row.length - 1, col.length - 1)]:
        r, c = row.start + i, col.start + j
        if -12 <= r < 7 + 12 and -12 <= c < 4 + 12:
            assert torch.equal(tile[:, i, j], padded[:, r + 12, c + 12])
    rows = mirror_indices(row.start, row.length, 7)
    cols = mirror_indices(col.start, col.length, 4)
    assert torch.equal(tile, x[:, rows][:, :, cols])
    assert torch.equal(mirror_indices(-3, 10, 4), torch.tensor([3, 2, 1, 0, 1, 2, 3, 2, 1, 0]))
    assert torch.equal(mirror_indices(-2, 4, 1), torch.zeros(4, dtype=torch.int64))


def test_a_tile_inside_the_image_is_a_view():
    x = image()
    plan = plan_tiles(patch_classifier(), HEIGHT, WIDTH, tile=24)
    tile = extract_tile(x, plan.rows[1], plan.cols[1])
    assert tile.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()


# --------------------------------------------------------------------------- the call


def test_progress_reports_tiles_after_each_batch():
    model = patch_classifier()
    calls = []
    predict(model, image(), tile=24, batch_size=4, progress=lambda *a: calls.append(a))
    total = len(plan_tiles(model, HEIGHT, WIDTH, tile=24))
    assert [c[1] for c in calls] == [total] * math.ceil(total / 4)
    assert [c[0] for c in calls] == [min(4 * (i + 1), total) for i in range(len(calls))]


def test_normalisation_is_applied_per_tile():
    model = patch_classifier()
    norm = {"mean": [0.5, 0.25], "std": [0.2, 0.4]}
    x = image()
    normalised = (x - torch.tensor([0.5, 0.25])[:, None, None]) / torch.tensor([0.2, 0.4])[
        :, None, None
    ]
    got = predict(Segmenter(model, norm), x, tile=24, overlap=0.5)
    torch.testing.assert_close(got, predict(model, normalised, tile=24, overlap=0.5))


def test_the_model_mode_is_restored_and_nothing_needs_grad():
    model = patch_classifier().train()
    logits = predict(model, image(), tile=32)
    assert model.training
    assert not logits.requires_grad and logits.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"tile": 0}, ValueError, r"^tile must be an integer >= 1, got 0"),
        ({"tile": (8, 8, 8)}, TypeError, r"^tile must be an int or a pair \(H, W\)"),
        ({"overlap": 1.0}, ValueError, r"^overlap must be a fraction of the tile in \[0, 1\)"),
        ({"blend": "gauss"}, ValueError, r"^blend must be one of .*did you mean 'gaussian'\?"),
        ({"batch_size": 0}, ValueError, r"^batch_size must be an integer >= 1"),
        ({"tta": "spin"}, ValueError, r"^tta must be False, True"),
    ],
)
def test_bad_arguments_raise_one_line(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        predict(patch_classifier(), image(), **kwargs)


def test_bad_images_raise_one_line():
    model = patch_classifier()
    with pytest.raises(ValueError, match=r"^image must have 3 dimensions \(C, H, W\), got shape"):
        predict(model, image()[None])
    with pytest.raises(
        ValueError, match=r"^image must have 2 channels \(the model's in_channels\)"
    ):
        predict(model, image(channels=3))
    with pytest.raises(TypeError, match=r"^image must be a floating-point tensor"):
        predict(model, torch.zeros(2, 8, 8, dtype=torch.uint8))
    with pytest.raises(TypeError, match=r"^image must be a torch.Tensor"):
        predict(model, np.zeros((2, 8, 8), np.float32))


@pytest.mark.gpu
def test_cuda_model_with_a_cpu_image_returns_cpu_logits():
    model = patch_classifier().cuda()
    x = image()
    got = predict(model, x, tile=24, overlap=0.5)
    assert got.device.type == "cpu"
    torch.testing.assert_close(
        got, predict(model.cpu(), x, tile=24, overlap=0.5), atol=1e-4, rtol=1e-4
    )
