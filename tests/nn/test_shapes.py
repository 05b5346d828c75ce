"""Output-size and receptive-field arithmetic against torch's own operators."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.nn import (
    Layer,
    ReceptiveField,
    conv_output_size,
    conv_transpose_output_size,
    pool_output_size,
    receptive_field,
)

SIZES = (1, 2, 5, 8, 13)
KERNELS = (1, 2, 3, 5)
STRIDES = (1, 2, 3)
PADDINGS = (0, 1, 2)
DILATIONS = (1, 2, 3)


def _torch_len(fn, n: int, *args, **kwargs) -> int | None:
    """Output length torch produces, or None when torch refuses or produces nothing."""
    try:
        out = fn(torch.zeros(1, 1, n), *args, **kwargs).shape[-1]
    except RuntimeError:
        return None
    return out if out >= 1 else None


def _ours(fn, *args, **kwargs) -> int | None:
    try:
        return fn(*args, **kwargs)
    except ValueError:
        return None


def test_conv_output_size_matches_torch_over_grid():
    checked = 0
    for n, k, s, p, d in itertools.product(SIZES, KERNELS, STRIDES, PADDINGS, DILATIONS):
        weight = torch.zeros(1, 1, k)
        expected = _torch_len(F.conv1d, n, weight, stride=s, padding=p, dilation=d)
        assert _ours(conv_output_size, n, k, s, p, d) == expected, (n, k, s, p, d)
        checked += expected is not None
    assert checked > 300  # the grid is mostly valid geometry, not mostly errors


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_pool_output_size_matches_max_pool_over_grid(ceil_mode):
    checked = 0
    for n, k, s, p, d in itertools.product(SIZES, KERNELS, STRIDES, PADDINGS, DILATIONS):
        expected = _torch_len(F.max_pool1d, n, k, s, p, d, ceil_mode=ceil_mode)
        assert _ours(pool_output_size, n, k, s, p, d, ceil_mode) == expected, (n, k, s, p, d)
        checked += expected is not None
    assert checked > 150


def test_pool_output_size_matches_avg_pool_with_ceil_mode():
    for n, k, s, p in itertools.product(range(1, 12), KERNELS, STRIDES, PADDINGS):
        expected = _torch_len(F.avg_pool1d, n, k, s, p, ceil_mode=True)
        assert _ours(pool_output_size, n, k, s, p, ceil_mode=True) == expected, (n, k, s, p)


def test_ceil_mode_drops_a_window_starting_in_the_right_padding():
    # (5 + 2 − 2 + 1) / 2 rounds up to 3 → 4 windows, but the 4th starts at 6 ≥ 5 + 1.
    assert pool_output_size(5, 2, 2, padding=1, ceil_mode=True) == 3
    assert F.max_pool1d(torch.zeros(1, 1, 5), 2, 2, 1, ceil_mode=True).shape[-1] == 3
    assert pool_output_size(67, 2, ceil_mode=True) == 34
    assert pool_output_size(67, 2) == 33


def test_conv_transpose_output_size_matches_torch_over_grid():
    checked = 0
    grid = itertools.product(SIZES, KERNELS, STRIDES, PADDINGS, (0, 1, 2), DILATIONS)
    for n, k, s, p, op, d in grid:
        weight = torch.zeros(1, 1, k)
        expected = _torch_len(
            F.conv_transpose1d, n, weight, stride=s, padding=p, output_padding=op, dilation=d
        )
        assert _ours(conv_transpose_output_size, n, k, s, p, op, d) == expected, (n, k, s, p, op, d)
        checked += expected is not None
    assert checked > 500


def test_lecture_note_formulas():
    # floor((N − K)/s) + 1 and O = (I − 1)s − 2p + k
    assert conv_output_size(7, 3, stride=2) == (7 - 3) // 2 + 1 == 3
    assert conv_output_size(227, 11, stride=4) == 55
    assert conv_transpose_output_size(2, 3, stride=2) == (2 - 1) * 2 + 3 == 5
    assert conv_transpose_output_size(2, 3, stride=2, padding=1) == 3
    assert conv_transpose_output_size(2, 3, stride=2, padding=1, output_padding=1) == 4


def test_error_messages():
    with pytest.raises(
        ValueError,
        match=r"^output_padding must be smaller than the stride \(2\) or the dilation \(1\), "
        r"got 2; lower output_padding",
    ):
        conv_transpose_output_size(4, 3, stride=2, output_padding=2)
    with pytest.raises(ValueError, match=r"^the padded input size N \+ 2p must be at least .* = 5"):
        conv_output_size(2, 3, dilation=2)
    with pytest.raises(ValueError, match=r"^pooling padding must be at most half the kernel size"):
        pool_output_size(10, 3, padding=2)
    with pytest.raises(ValueError, match=r"transposed-convolution output size must be at least 1"):
        conv_transpose_output_size(1, 3, padding=3)
    with pytest.raises(ValueError, match=r"^stride must be an integer >= 1, got 0"):
        conv_output_size(10, 3, stride=0)
    with pytest.raises(ValueError, match=r"^padding must be an integer >= 0, got -1"):
        Layer(3, padding=-1)


# --------------------------------------------------------------------------- receptive field


def test_vgg16_receptive_fields():
    conv, pool = Layer(3, 1, 1), Layer(2, 2)
    blocks = [2, 2, 3, 3, 3]
    layers, expected = [], [(6, 2), (16, 4), (44, 8), (100, 16), (212, 32)]
    for count, (size, jump) in zip(blocks, expected, strict=True):
        layers += [conv] * count + [pool]
        rf = receptive_field(layers)
        assert (rf.size, rf.jump) == (size, jump)
    assert receptive_field(layers[:-1]).size == 196  # conv5_3


def test_dilated_rates_1_2_4_give_15():
    rf = receptive_field([Layer(3, padding=r, dilation=r) for r in (1, 2, 4)])
    assert rf == ReceptiveField(size=15, jump=1, start=-7)
    assert rf.center == 0.0


def test_receptive_field_unpacks_and_starts():
    size, jump, start = receptive_field([Layer(7, 2, 3), Layer(3, 2, 1)])
    assert (size, jump, start) == (7 + 2 * 2, 4, -3 - 2)
    assert receptive_field([]) == ReceptiveField(1, 1, 0)


def test_layer_from_module_reads_per_axis_geometry():
    conv = nn.Conv2d(1, 1, (3, 5), stride=(1, 2), padding=(1, 2), dilation=(2, 1))
    assert Layer.from_module(conv, axis=0) == Layer(3, 1, 1, 2)
    assert Layer.from_module(conv, axis=1) == Layer(5, 2, 2, 1)
    assert Layer.from_module(nn.MaxPool2d(3, 2, 1)) == Layer(3, 2, 1, 1)
    assert Layer.from_module(nn.AvgPool2d(2)) == Layer(2, 2, 0, 1)
    with pytest.raises(TypeError, match=r"^module must be an nn.Conv2d"):
        Layer.from_module(nn.ReLU())


def _window_by_gradient(layers: list[Layer], n: int, index: int) -> tuple[int, int]:
    """First and last input index with a nonzero gradient of output ``index`` (1-D, positive
    weights), clipped to the input like the zero padding clips it."""
    x = torch.ones(1, 1, n, dtype=torch.float64, requires_grad=True)
    y = x
    for layer in layers:
        weight = torch.ones(1, 1, layer.kernel_size, dtype=torch.float64)
        y = F.conv1d(y, weight, stride=layer.stride, padding=layer.padding, dilation=layer.dilation)
    (grad,) = torch.autograd.grad(y[0, 0, index], x)
    support = torch.nonzero(grad[0, 0]).flatten()
    return int(support[0]), int(support[-1])


def test_window_of_each_output_matches_gradient_support():
    rng = random.Random(0)
    exact = 0
    for _ in range(25):
        layers = [
            Layer(
                k := rng.choice([1, 2, 3, 5]),
                rng.choice([1, 2]),
                rng.randint(0, k // 2),
                rng.choice([1, 1, 2]),
            )
            for _ in range(rng.randint(1, 4))
        ]
        n = 61
        rf = receptive_field(layers)
        out = n
        for layer in layers:
            out = conv_output_size(
                out, layer.kernel_size, layer.stride, layer.padding, layer.dilation
            )
        for index in (0, out // 2, out - 1):
            first = rf.start + index * rf.jump
            last = first + rf.size - 1
            got = _window_by_gradient(layers, n, index)
            if first >= 0 and last < n:
                assert got == (first, last), (layers, index)
                exact += 1
            else:  # clipped by the padding; with dilation the clipped ends may be holes
                assert max(first, 0) <= got[0] <= got[1] <= min(last, n - 1), (layers, index)
    assert exact >= 25  # at least the centre windows are checked exactly


# --------------------------------------------------------------------------- dilation


@pytest.mark.parametrize("rate", [1, 2, 4, 6])
def test_dilated_conv_with_padding_rate_keeps_resolution(rate):
    conv = nn.Conv2d(2, 3, 3, padding=rate, dilation=rate)
    assert conv(torch.zeros(1, 2, 67, 45)).shape == (1, 3, 67, 45)
    assert conv_output_size(67, 3, padding=rate, dilation=rate) == 67
    assert receptive_field([Layer(3, padding=rate, dilation=rate)]).size == 2 * rate + 1


def _input_gradient_support(net: nn.Module, shape: tuple[int, int, int, int]) -> torch.Tensor:
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.constant_(module.weight, 1.0)
            nn.init.zeros_(module.bias)
    x = torch.ones(shape, dtype=torch.float64, requires_grad=True)
    y = net.double()(x)
    (grad,) = torch.autograd.grad(y[0, :, y.shape[2] // 2, y.shape[3] // 2].sum(), x)
    return grad[0].sum(0) != 0  # (H, W)


def test_dilated_stack_gradient_support_equals_arithmetic_rf():
    net = nn.Sequential(*[nn.Conv2d(1, 1, 3, padding=r, dilation=r) for r in (1, 2, 4)])
    support = _input_gradient_support(net, (1, 1, 31, 29))
    rows = torch.nonzero(support.any(1)).flatten()
    cols = torch.nonzero(support.any(0)).flatten()
    assert (rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) == (15, 15)
    assert support.sum() == 15 * 15  # rates 1, 2, 4 tile the field without holes
    assert (rows[0], cols[0]) == (15 - 7, 14 - 7)


def test_single_dilated_conv_sees_a_sparse_grid():
    net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=3, dilation=3))
    support = _input_gradient_support(net, (1, 1, 17, 19))
    expected = torch.zeros(17, 19, dtype=torch.bool)
    expected[5:12:3, 6:13:3] = True
    assert torch.equal(support, expected)
