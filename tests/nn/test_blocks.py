"""Shared blocks: output shapes from the convolution arithmetic, padding and its crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pixelwise.nn import ConvBNReLU, DoubleConv, conv_output_size, crop_padding, pad_to_multiple


@pytest.mark.parametrize(("dilation", "stride"), [(1, 1), (2, 1), (3, 2)])
def test_conv_bn_relu_default_padding_follows_the_arithmetic(dilation, stride):
    block = ConvBNReLU(2, 5, dilation=dilation, stride=stride).eval()
    out = block(torch.randn(1, 2, 67, 45, generator=torch.Generator().manual_seed(0)))
    expected = [conv_output_size(n, 3, stride, dilation, dilation) for n in (67, 45)]
    assert out.shape == (1, 5, *expected)
    assert out.min() >= 0  # ends in ReLU


def test_conv_bn_relu_without_batch_norm_has_a_bias():
    with_bn, without = ConvBNReLU(2, 3), ConvBNReLU(2, 3, batch_norm=False)
    assert with_bn[0].bias is None and isinstance(with_bn[1], nn.BatchNorm2d)
    assert without[0].bias is not None and len(without) == 2


def test_double_conv_valid_trims_four_pixels():
    x = torch.zeros(1, 1, 67, 45)
    assert DoubleConv(1, 4, padding="valid")(x).shape == (1, 4, 63, 41)
    assert DoubleConv(1, 4, padding="same")(x).shape == (1, 4, 67, 45)
    assert conv_output_size(conv_output_size(572, 3), 3) == 568  # U-Net's first block


def test_double_conv_refuses_unknown_padding():
    with pytest.raises(
        ValueError,
        match=r"DoubleConv padding must be one of \['same', 'valid'\], got 'Same'; did you mean 'same'\?",
    ):
        DoubleConv(1, 4, padding="Same")


def test_pad_to_multiple_refuses_a_zero_divisor():
    with pytest.raises(ValueError, match="size divisor must be an integer >= 1, got 0"):
        pad_to_multiple(torch.zeros(1, 1, 5, 5), 0)


@pytest.mark.parametrize(
    ("h", "w", "divisor"), [(67, 45, 32), (64, 45, 16), (5, 3, 8), (32, 32, 32)]
)
def test_pad_to_multiple_and_crop_round_trip(h, w, divisor):
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(h))
    padded, pads = pad_to_multiple(x, divisor)
    left, right, top, bottom = pads
    assert padded.shape[-2] % divisor == 0 and padded.shape[-1] % divisor == 0
    assert padded.shape[-2] - h < divisor and padded.shape[-1] - w < divisor
    assert abs(left - right) <= 1 and abs(top - bottom) <= 1
    assert torch.equal(crop_padding(padded, pads), x)
    # reflection where it fits, replication otherwise, as numpy pads
    mode = "reflect" if max(left, right) < w and max(top, bottom) < h else "edge"
    expected = np.pad(x.numpy(), ((0, 0), (0, 0), (top, bottom), (left, right)), mode=mode)
    np.testing.assert_array_equal(padded.numpy(), expected)
