"""Upsampling operators: transposed convolution with bilinear initialisation (FCN),
interpolation, max-unpooling from saved indices (SegNet) and average-unpooling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise._checks import check_choice, check_images, check_positive_int, message

INTERPOLATION_MODES = ("nearest", "bilinear", "bicubic")


def bilinear_kernel(kernel_size: int) -> torch.Tensor:
    """The 2-D bilinear interpolation kernel FCN uses to initialise its deconvolutions.

    For upsampling by a factor f, use ``kernel_size = 2f`` with stride f and padding f/2
    (``2f − 1`` and padding ``(f − 1)/2`` for odd f; see :func:`deconv_geometry`).

    Shape:
        -> (kernel_size, kernel_size)
    """
    check_positive_int("kernel_size", kernel_size)
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float64)
    filt = 1 - (og - center).abs() / factor
    return (filt[:, None] * filt[None, :]).float()


@torch.no_grad()
def init_bilinear_(conv: nn.ConvTranspose2d) -> nn.ConvTranspose2d:
    """Initialise a channel-preserving transposed convolution to bilinear upsampling.

    Each output channel copies its own input channel through :func:`bilinear_kernel`;
    cross-channel weights are zero and the bias (if any) is zero.

    Shape:
        weight: (D, D, k, k) with groups=1, or (D, 1, k, k) with groups=D
    """
    in_ch, out_per_group, kh, kw = conv.weight.shape
    depthwise = conv.groups == in_ch and out_per_group == 1
    if kh != kw or not (depthwise or (conv.groups == 1 and in_ch == out_per_group)):
        raise ValueError(
            message(
                "a bilinear-initialised transposed convolution",
                "have a square kernel and as many output as input channels",
                f"weight {tuple(conv.weight.shape)} with groups={conv.groups}",
                "use in_channels == out_channels and groups of 1 or in_channels",
            )
        )
    conv.weight.zero_()
    kernel = bilinear_kernel(kh).to(conv.weight)
    if depthwise:
        conv.weight[:, 0] = kernel
    else:
        for c in range(in_ch):
            conv.weight[c, c] = kernel
    if conv.bias is not None:
        conv.bias.zero_()
    return conv


# --------------------------------------------------------------------------- transposed conv


def deconv_geometry(factor: int) -> tuple[int, int, int]:
    """Kernel size, stride and padding of a transposed convolution that upsamples by ``factor``.

    Even f: kernel 2f, stride f, padding f/2 (FCN). Odd f: kernel 2f − 1, stride f, padding
    (f − 1)/2, whose bilinear kernel puts the middle output pixel of each block on its input
    pixel. Both give exactly ``I·f`` outputs from ``I`` inputs.

    Shape:
        f -> (k, s, p)
    """
    check_positive_int("factor", factor)
    if factor % 2 == 0:
        return 2 * factor, factor, factor // 2
    return 2 * factor - 1, factor, (factor - 1) // 2


class DeconvUpsample(nn.ConvTranspose2d):
    """Learnable upsampling by an integer factor: a channel-preserving transposed convolution,
    as FCN's "deconvolution" layers (https://arxiv.org/abs/1411.4038).

    With ``bilinear=True`` it starts as bilinear interpolation: in the interior it then equals
    ``F.interpolate(mode="bilinear", align_corners=False)``; the outer ``factor // 2`` rows and
    columns differ because the transposed convolution sees zeros beyond the border where
    interpolation repeats the edge. Unlike FCN, which crops a larger output, the default
    geometry (:func:`deconv_geometry`) gives exactly ``H·f × W·f``.

    Args:
        channels: input and output channels D.
        factor: upsampling factor f.
        kernel_size, padding: override the geometry of :func:`deconv_geometry` (the stride
            stays f); the output size then follows :func:`~pixelwise.nn.conv_transpose_output_size`.
        output_padding: extra rows/columns at the bottom/right, below f.
        bilinear: initialise to bilinear interpolation (else torch's default random init).
        depthwise: one kernel per channel (groups = D) instead of a dense D × D mixing.
        trainable: False keeps the weights fixed (stored as buffers, so no optimiser sees them).
        bias: add a learnable bias (zero-initialised with ``bilinear``).

    Shape:
        (N, D, H, W) -> (N, D, H·f, W·f) with the default geometry.
    """

    def __init__(
        self,
        channels: int,
        factor: int = 2,
        *,
        kernel_size: int | None = None,
        padding: int | None = None,
        output_padding: int = 0,
        bilinear: bool = True,
        depthwise: bool = False,
        trainable: bool = True,
        bias: bool = False,
    ) -> None:
        check_positive_int("channels", channels)
        k, s, p = deconv_geometry(factor)
        k = k if kernel_size is None else check_positive_int("kernel_size", kernel_size)
        p = p if padding is None else check_positive_int("padding", padding, minimum=0)
        if not trainable and not bilinear:
            raise ValueError(
                message(
                    "a fixed (trainable=False) upsampling",
                    "be bilinear-initialised",
                    "bilinear=False",
                    "set bilinear=True or trainable=True; fixed random weights are meaningless",
                )
            )
        groups = channels if depthwise else 1
        super().__init__(channels, channels, k, s, p, output_padding, groups=groups, bias=bias)
        self.factor = factor
        if bilinear:
            init_bilinear_(self)
        if not trainable:
            for name in ("weight", "bias"):
                value = getattr(self, name)
                if value is not None:
                    delattr(self, name)
                    self.register_buffer(name, value.detach())

    def forward(self, x: torch.Tensor, output_size: Sequence[int] | None = None) -> torch.Tensor:
        """Upsample; ``output_size`` picks among the sizes the stride allows (torch's rule).

        Shape:
            (N, D, H, W) -> (N, D, H·f, W·f)
        """
        check_images(x, self.in_channels, what="x")
        return super().forward(x, output_size)  # (N, D, H·f, W·f)


# --------------------------------------------------------------------------- interpolation


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def _check_size(size: object) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else size
    ok = isinstance(pair, Sequence) and len(pair) == 2
    if not ok or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
        raise ValueError(message("size", "be a positive int or a pair (H, W) of them", repr(size)))
    return int(pair[0]), int(pair[1])


def _check_resize(
    size: object, scale_factor: object, mode: str, align_corners: bool
) -> tuple[int, int] | None:
    """Validate the arguments of :func:`interpolate`; return ``size`` as a pair (or None)."""
    check_choice("mode", mode, INTERPOLATION_MODES)
    if (size is None) == (scale_factor is None):
        raise ValueError(
            message(
                "exactly one of size and scale_factor",
                "be given",
                f"size={size!r}, scale_factor={scale_factor!r}",
                "pass one of them",
            )
        )
    if scale_factor is not None and not (
        isinstance(scale_factor, int | float)
        and not isinstance(scale_factor, bool)
        and scale_factor > 0
    ):
        raise ValueError(message("scale_factor", "be a positive number", repr(scale_factor)))
    if align_corners and mode == "nearest":
        raise ValueError(
            message("align_corners", "be False for mode 'nearest'", True, "use a linear mode")
        )
    return None if size is None else _check_size(size)


def interpolate(
    x: torch.Tensor,
    *,
    size: int | tuple[int, int] | None = None,
    scale_factor: float | None = None,
    mode: str = "bilinear",
    align_corners: bool = False,
) -> torch.Tensor:
    """Resize images by ``scale_factor`` or to ``size`` with a validated ``mode``.

    ``nearest`` is torch's (source index ``floor(o · in/out)``): for integer upscaling it
    copies each pixel into its f × f block; it also accepts integer tensors (label maps), which
    it resizes exactly. ``bilinear`` and ``bicubic`` need floats; ``bicubic`` may overshoot the
    input range. ``align_corners`` (linear modes only) maps corner pixel centres onto each other.

    Raises:
        ValueError: on an unknown mode (with a suggestion), not exactly one of ``size`` and
            ``scale_factor``, or ``align_corners`` with ``nearest``.

    Shape:
        (N, C, H, W) -> (N, C, H', W') with H' = size or floor(H · scale_factor).
    """
    size = _check_resize(size, scale_factor, mode, align_corners)
    corners = None if mode == "nearest" else align_corners
    if (
        mode == "nearest"
        and isinstance(x, torch.Tensor)
        and x.dim() == 4
        and not x.is_floating_point()
    ):
        # float64 holds every label value (below 2**53) exactly; nearest only copies values.
        resized = F.interpolate(x.double(), size, scale_factor, mode="nearest")
        return resized.to(x.dtype)  # (N, C, H', W')
    check_images(x, what="x")
    return F.interpolate(x, size, scale_factor, mode=mode, align_corners=corners)  # (N, C, H', W')


class Interpolate(nn.Module):
    """Module form of :func:`interpolate` (no parameters).

    Shape:
        (N, C, H, W) -> (N, C, H', W')
    """

    def __init__(
        self,
        *,
        size: int | tuple[int, int] | None = None,
        scale_factor: float | None = None,
        mode: str = "bilinear",
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        _check_resize(size, scale_factor, mode, align_corners)  # fail at build time, not in forward
        self.size, self.scale_factor = size, scale_factor
        self.mode, self.align_corners = mode, align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return interpolate(
            x,
            size=self.size,
            scale_factor=self.scale_factor,
            mode=self.mode,
            align_corners=self.align_corners,
        )

    def extra_repr(self) -> str:
        how = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        return f"{how}, mode={self.mode!r}"


# --------------------------------------------------------------------------- unpooling


class MaxPoolWithIndices(nn.MaxPool2d):
    """Max-pooling that also returns the argmax of each window, for :class:`MaxUnpool`
    (SegNet, https://arxiv.org/abs/1511.00561).

    Indices are flat positions ``row · W + col`` in each input plane. Record the input size
    before pooling and pass it as ``output_size`` to unpool odd sizes back exactly.

    Shape:
        (N, C, H, W) -> values (N, C, H', W'), indices (N, C, H', W') int64
    """

    def __init__(
        self,
        kernel_size: int = 2,
        stride: int | None = None,
        padding: int = 0,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__(kernel_size, stride, padding, return_indices=True, ceil_mode=ceil_mode)


def _unpool_size(
    x: torch.Tensor, factor: tuple[int, int], default: tuple[int, int], output_size: object
) -> tuple[int, int]:
    """Validate ``output_size`` against torch's rule: within one stride of the default."""
    if output_size is None:
        return default
    size = tuple(output_size)[-2:] if isinstance(output_size, Sequence) else output_size
    size = _check_size(size)
    for axis in (0, 1):
        low, high = default[axis] - factor[axis], default[axis] + factor[axis]
        if not low < size[axis] < high:
            raise ValueError(
                message(
                    "output_size",
                    f"be strictly between {low} and {high} along {'HW'[axis]} "
                    f"for input {tuple(x.shape[-2:])}",
                    size,
                    "pass the size of the tensor that was pooled",
                )
            )
    return size


def max_unpool(
    x: torch.Tensor,
    indices: torch.Tensor,
    *,
    kernel_size: int | tuple[int, int] = 2,
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    output_size: Sequence[int] | None = None,
) -> torch.Tensor:
    """Put each value back at its saved argmax position; every other position is zero.

    The default output size is ``(H' − 1)·s − 2p + k``; pass ``output_size`` (the pooled
    tensor's size) to restore odd sizes, e.g. 67 → 33 → 67.

    Raises:
        ValueError: when ``indices`` does not match ``x`` or point inside the output, or
            ``output_size`` is not within one stride of the default.

    Shape:
        x, indices: (N, C, H', W') -> (N, C, H, W)
    """
    check_images(x, what="x")
    if not isinstance(indices, torch.Tensor) or indices.shape != x.shape:
        got = tuple(indices.shape) if isinstance(indices, torch.Tensor) else type(indices).__name__
        raise ValueError(
            message(
                "indices",
                f"be a tensor of the same shape as x {tuple(x.shape)}",
                got,
                "pass the indices MaxPoolWithIndices returned",
            )
        )
    k = _pair(kernel_size)
    s = k if stride is None else _pair(stride)
    p = _pair(padding)
    default = tuple((x.shape[a - 2] - 1) * s[a] - 2 * p[a] + k[a] for a in (0, 1))
    size = _unpool_size(x, s, default, output_size)
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= size[0] * size[1]):
        raise ValueError(
            message(
                "indices",
                f"lie in [0, {size[0] * size[1]}) for output size {size}",
                f"[{int(indices.min())}, {int(indices.max())}]",
                "pass the output_size of the tensor that was pooled",
            )
        )
    return F.max_unpool2d(x, indices, k, s, p, size)  # (N, C, H, W)


class MaxUnpool(nn.MaxUnpool2d):
    """Module form of :func:`max_unpool`, SegNet's decoder upsampling.

    Shape:
        x, indices: (N, C, H', W') -> (N, C, H, W)
    """

    def __init__(self, kernel_size: int = 2, stride: int | None = None, padding: int = 0) -> None:
        super().__init__(kernel_size, stride, padding)

    def forward(
        self,
        x: torch.Tensor,
        indices: torch.Tensor,
        output_size: Sequence[int] | None = None,
    ) -> torch.Tensor:
        return max_unpool(
            x,
            indices,
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            output_size=output_size,
        )


def avg_unpool(
    x: torch.Tensor, factor: int = 2, *, output_size: Sequence[int] | None = None
) -> torch.Tensor:
    """Copy each value into its ``factor × factor`` block: the inverse of average pooling on
    block-constant images, and ``avg_pool(avg_unpool(x)) == x``.

    ``output_size`` (within one factor of ``H·f``) crops the bottom/right or pads it with zeros,
    as max-unpooling leaves positions no window covered at zero.

    Shape:
        (N, C, H', W') -> (N, C, H'·f, W'·f), or (N, C, H, W) with ``output_size``
    """
    check_images(x, what="x")
    check_positive_int("factor", factor)
    default = (x.shape[-2] * factor, x.shape[-1] * factor)
    size = _unpool_size(x, (factor, factor), default, output_size)
    y = x.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)  # (N, C, H'f, W'f)
    return F.pad(y, (0, size[1] - default[1], 0, size[0] - default[0]))  # (N, C, H, W)


class AvgUnpool(nn.Module):
    """Module form of :func:`avg_unpool`.

    Shape:
        (N, C, H', W') -> (N, C, H'·f, W'·f)
    """

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        self.factor = check_positive_int("factor", factor)

    def forward(self, x: torch.Tensor, output_size: Sequence[int] | None = None) -> torch.Tensor:
        return avg_unpool(x, self.factor, output_size=output_size)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"
