"""Upsampling operators against analytic oracles and torch's own ops."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.nn import (
    AvgUnpool,
    DeconvUpsample,
    Interpolate,
    MaxPoolWithIndices,
    MaxUnpool,
    avg_unpool,
    bilinear_kernel,
    conv_transpose_output_size,
    deconv_geometry,
    init_bilinear_,
    interpolate,
    max_unpool,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- transposed conv


def test_bilinear_kernel_values():
    k4 = torch.tensor([0.25, 0.75, 0.75, 0.25])
    assert torch.equal(bilinear_kernel(4), k4[:, None] * k4[None, :])
    k5 = torch.tensor([1 / 3, 2 / 3, 1.0, 2 / 3, 1 / 3])
    torch.testing.assert_close(bilinear_kernel(5), k5[:, None] * k5[None, :])
    assert torch.equal(bilinear_kernel(1), torch.ones(1, 1))


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 5, 8])
def test_deconv_geometry_gives_exactly_factor_times_input(factor):
    k, s, p = deconv_geometry(factor)
    assert s == factor
    assert k == (2 * factor if factor % 2 == 0 else 2 * factor - 1)
    for n in (1, 7, 33):
        assert conv_transpose_output_size(n, k, s, p) == n * factor
    up = DeconvUpsample(2, factor)
    assert up(torch.zeros(1, 2, 7, 5)).shape == (1, 2, 7 * factor, 5 * factor)


@pytest.mark.parametrize(("factor", "depthwise"), [(2, False), (3, True), (4, True), (5, False)])
def test_bilinear_deconv_equals_interpolation_away_from_border(factor, depthwise):
    x = torch.rand(2, 3, 7, 9, generator=_gen(factor)) + 0.5
    up = DeconvUpsample(3, factor, depthwise=depthwise)
    with torch.no_grad():
        y = up(x)
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    b = factor // 2  # the deconvolution sees zeros beyond the edge, interpolation repeats it
    torch.testing.assert_close(
        y[..., b : y.shape[-2] - b, b : y.shape[-1] - b], ref[..., b:-b, b:-b] if b else ref
    )
    differs = ((y - ref).abs() > 1e-4).any(0).any(0)  # (H·f, W·f)
    height, width = differs.shape
    rows = differs[:, b : width - b].any(1)  # rows that differ in the interior columns
    cols = differs[b : height - b, :].any(0)
    for flags, length in ((rows, height), (cols, width)):
        expected = torch.zeros(length, dtype=torch.bool)
        expected[:b], expected[length - b :] = True, True
        assert torch.equal(flags, expected)


def test_factor_1_is_the_identity():
    x = torch.rand(1, 2, 5, 3, generator=_gen(0))
    torch.testing.assert_close(DeconvUpsample(2, 1)(x), x)


def test_dense_bilinear_deconv_does_not_mix_channels():
    x = torch.zeros(1, 3, 5, 7)
    x[0, 1] = torch.rand(5, 7, generator=_gen(1))
    y = DeconvUpsample(3, 2)(x)
    assert y[0, 0].abs().max() == 0 and y[0, 2].abs().max() == 0 and y[0, 1].abs().max() > 0


def test_trainable_and_fixed_weights():
    learn = DeconvUpsample(4, 2, bias=True)
    assert {n for n, _ in learn.named_parameters()} == {"weight", "bias"}
    learn(torch.rand(1, 4, 3, 5)).sum().backward()
    assert learn.weight.grad is not None and learn.weight.grad.abs().sum() > 0

    fixed = DeconvUpsample(4, 2, depthwise=True, trainable=False)
    fixed.requires_grad_(True)  # a parent switching everything on must not unfreeze it
    assert list(fixed.parameters()) == []
    assert set(fixed.state_dict()) == {"weight"}
    assert fixed.weight.shape == (4, 1, 4, 4) and not fixed.weight.requires_grad
    torch.testing.assert_close(fixed.weight[2, 0], bilinear_kernel(4))


def test_fixed_random_weights_are_refused():
    with pytest.raises(
        ValueError, match=r"^a fixed \(trainable=False\) upsampling must be bilinear"
    ):
        DeconvUpsample(3, 2, bilinear=False, trainable=False)


def test_deconv_checks_its_input():
    with pytest.raises(ValueError, match=r"^x must have 3 channels"):
        DeconvUpsample(3, 2)(torch.zeros(1, 4, 5, 5))


def test_init_bilinear_refuses_channel_changing_convolutions():
    with pytest.raises(
        ValueError, match=r"^a bilinear-initialised transposed convolution must have"
    ):
        init_bilinear_(nn.ConvTranspose2d(3, 5, 4, 2, 1))


# --------------------------------------------------------------------------- interpolation


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic"])
def test_interpolate_matches_torch(mode):
    x = torch.rand(2, 3, 7, 5, generator=_gen(2))
    corners = None if mode == "nearest" else False
    for kwargs in ({"scale_factor": 3}, {"size": (11, 13)}):
        expected = F.interpolate(x, mode=mode, align_corners=corners, **kwargs)
        assert torch.equal(interpolate(x, mode=mode, **kwargs), expected)
        assert torch.equal(Interpolate(mode=mode, **kwargs)(x), expected)


def test_nearest_integer_upscaling_copies_blocks():
    x = torch.rand(1, 2, 5, 3, generator=_gen(3))
    y = interpolate(x, scale_factor=3, mode="nearest")
    for i, j in itertools.product(range(15), range(9)):
        assert torch.equal(y[..., i, j], x[..., i // 3, j // 3])


def test_nearest_resizes_integer_label_maps_exactly():
    labels = torch.randint(0, 300, (1, 1, 7, 5), generator=_gen(4))
    y = interpolate(labels, size=(14, 10), mode="nearest")
    assert y.dtype == torch.int64
    assert torch.equal(y, labels.repeat_interleave(2, -2).repeat_interleave(2, -1))


def test_interpolate_errors():
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(
        ValueError, match=r"^mode must be one of .* got 'bilnear'; did you mean 'bilinear'\?"
    ):
        interpolate(x, scale_factor=2, mode="bilnear")
    with pytest.raises(ValueError, match=r"^exactly one of size and scale_factor must be given"):
        interpolate(x, size=8, scale_factor=2)
    with pytest.raises(ValueError, match=r"^exactly one of size and scale_factor must be given"):
        interpolate(x)
    with pytest.raises(ValueError, match=r"^align_corners must be False for mode 'nearest'"):
        interpolate(x, scale_factor=2, mode="nearest", align_corners=True)
    with pytest.raises(ValueError, match=r"^size must be a positive int"):
        interpolate(x, size=(0, 3))
    with pytest.raises(TypeError, match=r"^x must be a floating-point tensor"):
        interpolate(x.long(), scale_factor=2, mode="bilinear")
    with pytest.raises(ValueError, match=r"did you mean 'bicubic'"):
        Interpolate(scale_factor=2, mode="bicubc")
    with pytest.raises(ValueError, match=r"^exactly one of size and scale_factor"):
        Interpolate(mode="nearest")  # refused when built, not at the first forward


# --------------------------------------------------------------------------- max-unpooling


def _distinct(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Distinct values, so every window has a unique argmax."""
    n = 1
    for s in shape:
        n *= s
    return torch.randperm(n, generator=_gen(seed)).reshape(shape).double()


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_pool_indices_point_at_each_window_max(ceil_mode):
    x = _distinct((2, 3, 11, 9), 5)
    values, indices = MaxPoolWithIndices(2, ceil_mode=ceil_mode)(x)
    h, w = x.shape[-2:]
    for n, c, i, j in itertools.product(*(range(s) for s in values.shape)):
        window = x[n, c, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
        r, q = divmod(int(window.argmax()), window.shape[1])
        assert int(indices[n, c, i, j]) == (2 * i + r) * w + (2 * j + q)
        assert values[n, c, i, j] == window.max()
    assert values.shape[-2:] == ((h + ceil_mode) // 2, (w + ceil_mode) // 2)


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_max_unpool_places_values_at_saved_positions_and_zeros_elsewhere(ceil_mode):
    x = _distinct((2, 3, 67, 45), 6) + 1  # odd sizes; strictly positive so zeros mean "empty"
    values, indices = MaxPoolWithIndices(2, ceil_mode=ceil_mode)(x)
    out = max_unpool(values, indices, output_size=x.shape)
    assert out.shape == x.shape
    expected = torch.zeros_like(x)
    for n, c in itertools.product(range(2), range(3)):
        for v, idx in zip(values[n, c].flatten(), indices[n, c].flatten(), strict=True):
            expected[n, c, idx // 45, idx % 45] = v
    assert torch.equal(out, expected)
    assert torch.equal(out[out != 0], x[out != 0])  # kept values sit where they came from
    assert torch.equal(MaxUnpool(2)(values, indices, x.shape[-2:]), out)
    assert torch.equal(F.max_pool2d(out, 2, ceil_mode=ceil_mode), values)


def test_max_unpool_with_overlapping_windows_matches_torch():
    x = _distinct((1, 2, 8, 6), 7)
    values, indices = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    ours = MaxUnpool(3, 2, 1)(values, indices, output_size=x.shape)
    assert torch.equal(ours, nn.MaxUnpool2d(3, 2, 1)(values, indices, output_size=x.shape))
    assert torch.equal(ours[ours != 0], x[ours != 0])


def test_max_unpool_errors():
    x = _distinct((1, 1, 4, 4), 8)
    values, indices = MaxPoolWithIndices(2)(x)
    with pytest.raises(ValueError, match=r"^output_size must be strictly between 2 and 6 along H"):
        max_unpool(values, indices, output_size=(7, 4))
    with pytest.raises(ValueError, match=r"^indices must lie in \[0, 9\) for output size \(3, 3\)"):
        max_unpool(values, indices, output_size=(3, 3))
    with pytest.raises(ValueError, match=r"^indices must be a tensor of the same shape as x"):
        max_unpool(values, indices[..., :1])


# --------------------------------------------------------------------------- average-unpooling


def test_avg_unpool_copies_each_value_into_its_block():
    x = torch.rand(2, 3, 5, 7, generator=_gen(9))
    y = avg_unpool(x, 3)
    assert y.shape == (2, 3, 15, 21)
    for i, j in itertools.product(range(15), range(21)):
        assert torch.equal(y[..., i, j], x[..., i // 3, j // 3])
    assert torch.equal(AvgUnpool(3)(x), y)


@pytest.mark.parametrize("factor", [2, 3])
def test_avg_unpool_and_avg_pool_invert_each_other(factor):
    x = torch.randint(-50, 50, (2, 3, 5, 7), generator=_gen(factor)).float()
    assert torch.equal(F.avg_pool2d(avg_unpool(x, factor), factor), x)
    block_constant = avg_unpool(x, factor)
    assert torch.equal(avg_unpool(F.avg_pool2d(block_constant, factor), factor), block_constant)


def test_avg_unpool_output_size_pads_or_crops_odd_sizes():
    x = torch.randint(1, 9, (1, 2, 67, 45), generator=_gen(10)).float()
    floor = F.avg_pool2d(x, 2)  # 33 × 22: the last row and column are not covered
    y = avg_unpool(floor, 2, output_size=(67, 45))
    assert y.shape == (1, 2, 67, 45)
    assert y[..., 66, :].abs().sum() == 0 and y[..., :, 44].abs().sum() == 0
    assert torch.equal(y[..., :66, :44], avg_unpool(floor, 2))
    ceil = F.avg_pool2d(x, 2, ceil_mode=True)  # 34 × 23
    assert torch.equal(avg_unpool(ceil, 2, output_size=x.shape), avg_unpool(ceil, 2)[..., :67, :45])
    with pytest.raises(
        ValueError, match=r"^output_size must be strictly between 64 and 68 along H"
    ):
        avg_unpool(floor, 2, output_size=(64, 45))
