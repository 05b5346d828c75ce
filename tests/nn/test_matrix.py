"""Convolution as a matrix: M·x is the convolution and Mᵀ·y the transposed convolution."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from pixelwise.nn import (
    DeconvUpsample,
    conv1d_matrix,
    conv2d_matrix,
    conv_output_size,
    conv_transpose1d_matrix,
    conv_transpose2d_matrix,
)

A, B, X, Y, Z = 2.0, 3.0, 5.0, 7.0, 11.0
NOTES_RESULT = torch.tensor([A * X, A * Y, A * Z + B * X, B * Y, B * Z])  # [10, 14, 37, 21, 33]


def test_notes_example_from_the_transposed_matrix():
    kernel = torch.tensor([X, Y, Z])
    m = conv1d_matrix(kernel, 5, stride=2)  # the convolution 5 -> 2
    assert torch.equal(m, torch.tensor([[X, Y, Z, 0, 0], [0, 0, X, Y, Z]]))
    assert torch.equal(m.T @ torch.tensor([A, B]), NOTES_RESULT)
    assert torch.equal(conv_transpose1d_matrix(kernel, 2, stride=2), m.T)


def test_notes_example_from_torch_conv_transpose1d():
    out = F.conv_transpose1d(torch.tensor([[[A, B]]]), torch.tensor([[[X, Y, Z]]]), stride=2)
    assert torch.equal(out[0, 0], NOTES_RESULT)


def test_notes_example_from_the_upsampling_module():
    # A 1-D signal is a one-row image; a kernel whose only nonzero row is [x, y, z].
    up = DeconvUpsample(1, 2, kernel_size=3, padding=0, bilinear=False)
    with torch.no_grad():
        up.weight.zero_()
        up.weight[0, 0, 1] = torch.tensor([X, Y, Z])
    out = up(torch.tensor([[[[A, B]]]]))
    expected = torch.zeros(1, 1, 3, 5)
    expected[0, 0, 1] = NOTES_RESULT
    assert torch.equal(out, expected)


def _brute_conv1d_matrix(kernel, n, stride, padding, dilation):
    taps = kernel.tolist()
    out = conv_output_size(n, len(taps), stride, padding, dilation)
    rows = [[0.0] * n for _ in range(out)]
    for o, t in itertools.product(range(out), range(len(taps))):
        i = o * stride - padding + t * dilation
        if 0 <= i < n:
            rows[o][i] += taps[t]
    return torch.tensor(rows, dtype=kernel.dtype)


def test_conv1d_matrix_matches_loop_and_torch():
    gen = torch.Generator().manual_seed(0)
    for n, k, s, p, d in itertools.product((7, 10), (1, 3, 4), (1, 2, 3), (0, 1, 2), (1, 2)):
        if n + 2 * p < d * (k - 1) + 1:
            continue
        kernel = torch.randn(k, generator=gen, dtype=torch.float64)
        x = torch.randn(n, generator=gen, dtype=torch.float64)
        m = conv1d_matrix(kernel, n, stride=s, padding=p, dilation=d)
        assert torch.equal(m, _brute_conv1d_matrix(kernel, n, s, p, d))
        torch.testing.assert_close(
            m @ x, F.conv1d(x[None, None], kernel[None, None], None, s, p, d)[0, 0]
        )


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "dilation"),
    [
        ((13, 9), (3, 3), 1, 1, 1),
        ((13, 9), (3, 3), 2, 1, 1),
        ((11, 14), (4, 3), (2, 3), (1, 0), 1),
        ((12, 11), (3, 3), 1, 2, 2),
        ((9, 10), (2, 5), (3, 1), (1, 2), (2, 1)),
    ],
)
def test_conv2d_matrix_matches_conv2d_and_transpose(size, kernel, stride, padding, dilation):
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(kernel, generator=gen, dtype=torch.float64)
    x = torch.randn(size, generator=gen, dtype=torch.float64)
    m = conv2d_matrix(w, size, stride=stride, padding=padding, dilation=dilation)
    y = F.conv2d(x[None, None], w[None, None], None, stride, padding, dilation)[0, 0]
    torch.testing.assert_close(m @ x.flatten(), y.flatten())

    # Mᵀ restores exactly `size`; torch needs the output padding that picks it.
    g = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    sh, sw = stride if isinstance(stride, tuple) else (stride, stride)
    ph, pw = padding if isinstance(padding, tuple) else (padding, padding)
    dh, dw = dilation if isinstance(dilation, tuple) else (dilation, dilation)
    op = (
        (size[0] - ((y.shape[0] - 1) * sh - 2 * ph + dh * (kernel[0] - 1) + 1)),
        (size[1] - ((y.shape[1] - 1) * sw - 2 * pw + dw * (kernel[1] - 1) + 1)),
    )
    t = F.conv_transpose2d(g[None, None], w[None, None], None, stride, padding, op, 1, dilation)
    torch.testing.assert_close(m.T @ g.flatten(), t[0, 0].flatten())
    mt = conv_transpose2d_matrix(
        w, tuple(y.shape), stride=stride, padding=padding, output_padding=op, dilation=dilation
    )
    assert torch.equal(mt, m.T)


def test_2x2_input_3x3_kernel_stride_2_padding_1_gives_3x3_or_4x4_with_output_padding():
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(2, 2, generator=gen, dtype=torch.float64)
    plain = conv_transpose2d_matrix(w, (2, 2), stride=2, padding=1)
    padded = conv_transpose2d_matrix(w, (2, 2), stride=2, padding=1, output_padding=1)
    assert plain.shape == (9, 4) and padded.shape == (16, 4)
    for matrix, op, side in ((plain, 0, 3), (padded, 1, 4)):
        t = F.conv_transpose2d(y[None, None], w[None, None], stride=2, padding=1, output_padding=op)
        assert t.shape[-2:] == (side, side)
        torch.testing.assert_close(matrix @ y.flatten(), t.flatten())
    # Both 3×3 and 4×4 convolve back to 2×2: that ambiguity is what output_padding resolves.
    assert conv2d_matrix(w, (3, 3), stride=2, padding=1).shape[0] == 4
    assert conv2d_matrix(w, (4, 4), stride=2, padding=1).shape[0] == 4


def test_matrix_rejects_a_kernel_of_the_wrong_rank():
    with pytest.raises(ValueError, match=r"^kernel must be a 2-D tensor, got \(3,\)"):
        conv2d_matrix(torch.ones(3), (5, 5))
