"""Output-size and receptive-field arithmetic; convolution as a matrix.

The size formulas are torch's own (per spatial axis):

* convolution and pooling: ``O = floor((N + 2p − d·(k−1) − 1) / s) + 1``, which is the
  familiar ``O = floor((N − K) / s) + 1`` for ``p = 0, d = 1``;
* transposed convolution: ``O = (I − 1)·s − 2p + d·(k−1) + output_padding + 1``, the familiar
  ``O = (I − 1)·s − 2p + k`` for ``d = 1`` and no output padding.

A convolution is a linear map, so it is a matrix ``M`` with ``conv(x) = M·x`` on flattened
signals; the transposed convolution is ``Mᵀ`` (:func:`conv1d_matrix`, :func:`conv2d_matrix`).
Tracing a network's stages (shapes and measured receptive fields) is :mod:`pixelwise.nn.trace`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from pixelwise._checks import check_positive_int, message

IntPair = int | tuple[int, int]


# --------------------------------------------------------------------------- output sizes


def _check_geometry(kernel_size: int, stride: int, padding: int, dilation: int) -> None:
    check_positive_int("kernel_size", kernel_size)
    check_positive_int("stride", stride)
    check_positive_int("padding", padding, minimum=0)
    check_positive_int("dilation", dilation)


def conv_output_size(
    size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    """Output length of a convolution along one axis, as ``torch.nn.Conv2d`` computes it.

    ``O = floor((N + 2p − d·(k−1) − 1) / s) + 1``; with ``p = 0, d = 1`` this is
    ``floor((N − K) / s) + 1``.

    Args:
        size: input length N.
        kernel_size: k. stride: s. padding: p (zeros on both sides). dilation: d.

    Raises:
        ValueError: on a non-positive size/kernel/stride/dilation, negative padding, or when the
            dilated kernel ``d·(k−1) + 1`` does not fit into the padded input (torch refuses too).

    Shape:
        N -> O
    """
    check_positive_int("size", size)
    _check_geometry(kernel_size, stride, padding, dilation)
    span = dilation * (kernel_size - 1) + 1
    if size + 2 * padding < span:
        raise ValueError(
            message(
                "the padded input size N + 2p",
                f"be at least the dilated kernel size d·(k−1)+1 = {span}",
                f"{size} + 2·{padding} = {size + 2 * padding}",
                "use a larger input, more padding, or a smaller kernel or dilation",
            )
        )
    return (size + 2 * padding - span) // stride + 1


def pool_output_size(
    size: int,
    kernel_size: int,
    stride: int | None = None,
    padding: int = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
) -> int:
    """Output length of max/average pooling along one axis, as ``torch.nn.MaxPool2d`` computes it.

    The floor formula of :func:`conv_output_size`; with ``ceil_mode`` the division rounds up,
    except that the last window must start inside the input or the left padding (torch drops
    a window that would start in the right padding).

    Args:
        size: input length N. kernel_size: k. stride: s, defaults to k (torch's default).
        padding: p, at most k // 2 (torch's rule). dilation: d. ceil_mode: round up.

    Raises:
        ValueError: on invalid geometry, padding above half the kernel, or an empty output.

    Shape:
        N -> O
    """
    check_positive_int("size", size)
    stride = kernel_size if stride is None else stride
    _check_geometry(kernel_size, stride, padding, dilation)
    if padding > kernel_size // 2:
        raise ValueError(
            message(
                "pooling padding",
                f"be at most half the kernel size ({kernel_size} // 2 = {kernel_size // 2})",
                padding,
                "reduce the padding or enlarge the kernel",
            )
        )
    span = dilation * (kernel_size - 1) + 1
    extra = stride - 1 if ceil_mode else 0
    out = (size + 2 * padding - span + extra) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    if out < 1:
        raise ValueError(
            message(
                "the pooling output size",
                "be at least 1",
                f"{out} for input {size}, kernel {kernel_size}, padding {padding}, dilation {dilation}",
                "use a larger input or a smaller kernel",
            )
        )
    return out


def conv_transpose_output_size(
    size: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    output_padding: int = 0,
    dilation: int = 1,
) -> int:
    """Output length of a transposed convolution along one axis, as torch computes it.

    ``O = (I − 1)·s − 2p + d·(k−1) + output_padding + 1``, i.e. ``(I − 1)·s − 2p + k`` for
    ``d = 1``. Several input lengths of a strided convolution map to the same output length;
    ``output_padding`` picks which one the transposed convolution restores, which is why torch
    requires it to be smaller than the stride or the dilation.

    Raises:
        ValueError: on invalid geometry, ``output_padding`` not below stride or dilation, or a
            result below 1.

    Shape:
        I -> O
    """
    check_positive_int("size", size)
    _check_geometry(kernel_size, stride, padding, dilation)
    check_positive_int("output_padding", output_padding, minimum=0)
    if output_padding >= stride and output_padding >= dilation:
        raise ValueError(
            message(
                "output_padding",
                f"be smaller than the stride ({stride}) or the dilation ({dilation})",
                output_padding,
                "lower output_padding; it only picks among sizes one stride apart",
            )
        )
    out = (size - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1
    if out < 1:
        raise ValueError(
            message(
                "the transposed-convolution output size",
                "be at least 1",
                f"{out} for input {size}, kernel {kernel_size}, stride {stride}, padding {padding}",
                "reduce the padding",
            )
        )
    return out


# --------------------------------------------------------------------------- receptive field


@dataclass(frozen=True)
class Layer:
    """The geometry of one convolution or pooling layer along one axis.

    Attributes:
        kernel_size: k. stride: s. padding: p (per side). dilation: d.
    """

    kernel_size: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1

    def __post_init__(self) -> None:
        _check_geometry(self.kernel_size, self.stride, self.padding, self.dilation)

    @classmethod
    def from_module(cls, module: nn.Module, axis: int = 0) -> Layer:
        """Read the geometry of a ``Conv2d``, ``MaxPool2d`` or ``AvgPool2d`` along ``axis``
        (0 = height, 1 = width)."""
        if not isinstance(module, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
            raise TypeError(
                message(
                    "module",
                    "be an nn.Conv2d, nn.MaxPool2d or nn.AvgPool2d",
                    type(module).__name__,
                    "describe other layers with Layer(kernel_size, stride, padding, dilation)",
                )
            )

        def pick(value: object) -> int:
            return value[axis] if isinstance(value, tuple) else value

        dilation = pick(getattr(module, "dilation", 1))
        return cls(pick(module.kernel_size), pick(module.stride), pick(module.padding), dilation)


class ReceptiveField(NamedTuple):
    """Receptive field of a stack of layers along one axis.

    Attributes:
        size: how many input pixels one output pixel sees (its receptive field).
        jump: the effective stride, input pixels between neighbouring output pixels.
        start: input index of the first pixel in output pixel 0's window (negative when the
            window reaches into the padding); output ``i`` sees ``start + i·jump`` onwards.
    """

    size: int
    jump: int
    start: int

    @property
    def center(self) -> float:
        """Input coordinate (pixel index, possibly half-integer) of output pixel 0's centre."""
        return self.start + (self.size - 1) / 2


def receptive_field(layers: Iterable[Layer]) -> ReceptiveField:
    """Receptive field, effective stride and window start of a stack of layers.

    With ``r₀ = 1, j₀ = 1, s₀ = 0`` and per layer the dilated kernel ``k' = d·(k−1) + 1``:
    ``r ← r + (k' − 1)·j``, ``s ← s − p·j``, ``j ← j·stride``. Pooling counts like a
    convolution of the same window; ``ceil_mode`` only changes the output length.

    Shape:
        a list of L layers -> scalars
    """
    size, jump, start = 1, 1, 0
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(
                message(f"layers[{i}]", "be a Layer", type(layer).__name__, "wrap it in Layer(...)")
            )
        span = layer.dilation * (layer.kernel_size - 1) + 1
        size += (span - 1) * jump
        start -= layer.padding * jump
        jump *= layer.stride
    return ReceptiveField(size, jump, start)


# --------------------------------------------------------------------------- matrices


def as_pair(what: str, value: IntPair) -> tuple[int, int]:
    """``value`` as ``(rows, cols)``: an int is used for both; anything but a pair raises."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, tuple) and len(value) == 2:
        return value
    raise TypeError(message(what, "be an int or a pair of ints", repr(value)))


def _taps(
    kernel_size: int, size: int, stride: int, padding: int, dilation: int, dtype: torch.dtype
) -> torch.Tensor:
    """One 0/1 selection matrix per kernel tap: ``S[t, o, i] = 1`` iff tap ``t`` of output
    ``o`` reads input ``i`` (taps in the zero padding select nothing).

    Shape:
        -> (k, O, N)
    """
    out = conv_output_size(size, kernel_size, stride, padding, dilation)
    pos = (
        torch.arange(out)[None, :] * stride
        - padding
        + torch.arange(kernel_size)[:, None] * dilation
    )
    inside = (pos >= 0) & (pos < size)  # (k, O)
    sel = torch.zeros(kernel_size, out, size + 1, dtype=dtype)
    sel.scatter_(2, torch.where(inside, pos, size)[..., None], 1.0)  # column N catches padding
    return sel[..., :size]  # (k, O, N)


def _check_kernel(kernel: object, dims: int) -> torch.Tensor:
    if not isinstance(kernel, torch.Tensor) or kernel.dim() != dims:
        got = tuple(kernel.shape) if isinstance(kernel, torch.Tensor) else type(kernel).__name__
        raise ValueError(
            message("kernel", f"be a {dims}-D tensor", got, "pass a single-channel kernel")
        )
    return kernel


def conv1d_matrix(
    kernel: torch.Tensor, size: int, *, stride: int = 1, padding: int = 0, dilation: int = 1
) -> torch.Tensor:
    """The matrix ``M`` of a single-channel 1-D convolution: ``F.conv1d(x, kernel) == M @ x``.

    Torch's convention (cross-correlation, no kernel flip), zero padding on both sides.
    ``M.T`` is the transposed convolution onto length ``size``: ``M.T @ y`` equals
    ``F.conv_transpose1d(y, kernel, stride, padding, output_padding, dilation)`` where
    ``output_padding = size − conv_transpose_output_size(O, …)`` (see
    :func:`conv_transpose1d_matrix`).

    Shape:
        kernel: (k,), size N -> (O, N)
    """
    kernel = _check_kernel(kernel, 1)
    taps = _taps(kernel.shape[0], size, stride, padding, dilation, kernel.dtype)  # (k, O, N)
    return torch.einsum("k,kon->on", kernel, taps)  # (O, N)


def conv2d_matrix(
    kernel: torch.Tensor,
    size: tuple[int, int],
    *,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
) -> torch.Tensor:
    """The matrix ``M`` of a single-channel 2-D convolution on row-major flattened images.

    ``F.conv2d(x, kernel).flatten() == M @ x.flatten()`` in torch's cross-correlation
    convention; ``M.T @ y.flatten()`` is ``F.conv_transpose2d`` onto an ``H × W`` image.

    A strided convolution maps several input sizes to one output size, so its transpose needs
    to be told which to restore. A 2×2 input with a 3×3 kernel, stride 2 and padding 1
    transposes to 3×3 (``(2−1)·2 − 2 + 3``); the commonly drawn 4×4 needs
    ``output_padding=1``. Here that is ``M`` built with ``size=(4, 4)`` (4×4 also convolves to
    2×2), or :func:`conv_transpose2d_matrix` with ``output_padding=1``.

    Shape:
        kernel: (kh, kw), size (H, W) -> (Ho·Wo, H·W)
    """
    kernel = _check_kernel(kernel, 2)
    sh, sw = as_pair("stride", stride)
    ph, pw = as_pair("padding", padding)
    dh, dw = as_pair("dilation", dilation)
    h, w = as_pair("size", size)
    rows = _taps(kernel.shape[0], h, sh, ph, dh, kernel.dtype)  # (kh, Ho, H)
    cols = _taps(kernel.shape[1], w, sw, pw, dw, kernel.dtype)  # (kw, Wo, W)
    m = torch.einsum("ab,aoh,bpw->ophw", kernel, rows, cols)  # (Ho, Wo, H, W)
    return m.reshape(m.shape[0] * m.shape[1], h * w)  # (Ho·Wo, H·W)


def conv_transpose1d_matrix(
    kernel: torch.Tensor,
    size: int,
    *,
    stride: int = 1,
    padding: int = 0,
    output_padding: int = 0,
    dilation: int = 1,
) -> torch.Tensor:
    """The matrix of ``F.conv_transpose1d`` on a length-``size`` input: the transpose ``Mᵀ``
    of the convolution that maps the transposed convolution's output length back to ``size``.

    For input ``[a, b]``, kernel ``[x, y, z]`` and stride 2 it gives
    ``[ax, ay, az + bx, by, bz]``: each input pixel stamps a scaled copy of the kernel,
    ``stride`` apart, and the overlaps add.

    Shape:
        kernel: (k,), size I -> (O, I), O from :func:`conv_transpose_output_size`
    """
    kernel = _check_kernel(kernel, 1)
    out = conv_transpose_output_size(
        size, kernel.shape[0], stride, padding, output_padding, dilation
    )
    return conv1d_matrix(kernel, out, stride=stride, padding=padding, dilation=dilation).T


def conv_transpose2d_matrix(
    kernel: torch.Tensor,
    size: tuple[int, int],
    *,
    stride: IntPair = 1,
    padding: IntPair = 0,
    output_padding: IntPair = 0,
    dilation: IntPair = 1,
) -> torch.Tensor:
    """The matrix of single-channel ``F.conv_transpose2d`` on an ``I_h × I_w`` input.

    A 2×2 input, 3×3 kernel, stride 2, padding 1 gives 3×3; the commonly drawn 4×4 output
    needs ``output_padding=1``.

    Shape:
        kernel: (kh, kw), size (I_h, I_w) -> (Ho·Wo, I_h·I_w)
    """
    kernel = _check_kernel(kernel, 2)
    sh, sw = as_pair("stride", stride)
    ph, pw = as_pair("padding", padding)
    oph, opw = as_pair("output_padding", output_padding)
    dh, dw = as_pair("dilation", dilation)
    ih, iw = as_pair("size", size)
    oh = conv_transpose_output_size(ih, kernel.shape[0], sh, ph, oph, dh)
    ow = conv_transpose_output_size(iw, kernel.shape[1], sw, pw, opw, dw)
    m = conv2d_matrix(kernel, (oh, ow), stride=stride, padding=padding, dilation=dilation)
    return m.T  # (Ho·Wo, I_h·I_w)
