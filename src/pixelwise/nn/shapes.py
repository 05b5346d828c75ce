"""Output-size and receptive-field arithmetic; convolution as a matrix; stage tracing.

The size formulas are torch's own (per spatial axis):

* convolution and pooling: ``O = floor((N + 2p − d·(k−1) − 1) / s) + 1``, which is the
  familiar ``O = floor((N − K) / s) + 1`` for ``p = 0, d = 1``;
* transposed convolution: ``O = (I − 1)·s − 2p + d·(k−1) + output_padding + 1``, the familiar
  ``O = (I − 1)·s − 2p + k`` for ``d = 1`` and no output padding.

A convolution is a linear map, so it is a matrix ``M`` with ``conv(x) = M·x`` on flattened
signals; the transposed convolution is ``Mᵀ`` (:func:`conv1d_matrix`, :func:`conv2d_matrix`).
"""

from __future__ import annotations

import copy
import types
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
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


def _pair(what: str, value: IntPair) -> tuple[int, int]:
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
    sh, sw = _pair("stride", stride)
    ph, pw = _pair("padding", padding)
    dh, dw = _pair("dilation", dilation)
    h, w = _pair("size", size)
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
    sh, sw = _pair("stride", stride)
    ph, pw = _pair("padding", padding)
    oph, opw = _pair("output_padding", output_padding)
    dh, dw = _pair("dilation", dilation)
    ih, iw = _pair("size", size)
    oh = conv_transpose_output_size(ih, kernel.shape[0], sh, ph, oph, dh)
    ow = conv_transpose_output_size(iw, kernel.shape[1], sw, pw, opw, dw)
    m = conv2d_matrix(kernel, (oh, ow), stride=stride, padding=padding, dilation=dilation)
    return m.T  # (Ho·Wo, I_h·I_w)


# --------------------------------------------------------------------------- stage tracing


@dataclass(frozen=True)
class StageInfo:
    """One stage of a network: its name, output shape and receptive field.

    Attributes:
        name: dotted submodule name. shape: output shape of the stage.
        receptive_field: side in input pixels of the stage's centre-pixel receptive field (the
            larger side when it is not square), or None when unknown: not measured, or the
            field reaches the border of the traced input so that the true one may be larger.
        receptive_field_hw: the same as (rows, cols), or None.
    """

    name: str
    shape: tuple[int, ...]
    receptive_field: int | None = None
    receptive_field_hw: tuple[int, int] | None = None


_ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
    nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.LogSigmoid, nn.Threshold, nn.Hardshrink,
    nn.Softshrink, nn.Softmax, nn.Softmax2d, nn.LogSoftmax,
)  # fmt: skip
_PASS_THROUGH = (
    *_ACTIVATIONS,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.modules.dropout._DropoutNd,
)


class _SupportMaxPool2d(nn.Module):
    """A max-pooling stand-in that is linear: the mean of the same window (same output size,
    ceil mode and dilation included); with ``return_indices`` it also returns the indices a
    max-pool takes on the same input, so an unpooling decoder downstream still runs."""

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        p = self.pool
        k, s, pad, d = (
            _pair(n, getattr(p, n)) for n in ("kernel_size", "stride", "padding", "dilation")
        )
        h, w = x.shape[-2:]
        oh = pool_output_size(h, k[0], s[0], pad[0], d[0], p.ceil_mode)
        ow = pool_output_size(w, k[1], s[1], pad[1], d[1], p.ceil_mode)
        # Pad (or crop, when negative) so a plain convolution yields exactly the pool's windows.
        bottom = (oh - 1) * s[0] + d[0] * (k[0] - 1) + 1 - h - pad[0]
        right = (ow - 1) * s[1] + d[1] * (k[1] - 1) + 1 - w - pad[1]
        padded = F.pad(x, (pad[1], right, pad[0], bottom))
        weight = x.new_full((x.shape[1], 1, *k), 1.0 / (k[0] * k[1]))
        values = F.conv2d(padded, weight, stride=s, dilation=d, groups=x.shape[1])  # (N, C, oh, ow)
        if not p.return_indices:
            return values
        _, indices = F.max_pool2d(
            x.detach(), k, s, pad, d, ceil_mode=p.ceil_mode, return_indices=True
        )
        return values, indices


def _replacement(module: nn.Module) -> nn.Module | None:
    """The linear, sign-free stand-in for ``module``, or None to keep it."""
    if isinstance(module, _PASS_THROUGH):
        return nn.Identity()
    if isinstance(module, nn.MaxPool2d):
        return _SupportMaxPool2d(module)
    if isinstance(module, nn.AdaptiveMaxPool2d) and not module.return_indices:
        return nn.AdaptiveAvgPool2d(module.output_size)
    return None


def _fan_in(conv: nn.modules.conv._ConvNd, in_channels: int) -> int:
    """Inputs summed into one output value: channels per group times kernel taps (for a
    transposed convolution, the taps landing on one output, about ceil(k/s) per axis)."""
    taps = 1
    for k, s in zip(conv.kernel_size, conv.stride, strict=True):
        taps *= -(-k // s) if conv.transposed else k
    return in_channels // conv.groups * taps


def _summed_conv_forward(
    self: nn.Conv2d | nn.ConvTranspose2d, x: torch.Tensor, output_size: list[int] | None = None
) -> torch.Tensor:
    """Forward of a 2-D (transposed) convolution whose weights all equal 1/fan-in, with no
    bias. Every output channel of a group is then the same single-channel convolution of the
    group's channel sum, so one is computed and broadcast: the cost no longer grows with the
    channel counts, which dominate the full-width pass.

    Shape:
        (N, C_in, H, W) -> (N, C_out, H', W')
    """
    n, c, h, w = x.shape
    g = self.groups
    summed = x.reshape(n, g, c // g, h, w).sum(2)  # (N, G, H, W)
    weight = x.new_full((g, 1, *self.kernel_size), 1.0 / _fan_in(self, c))
    if self.transposed:
        out_pad = self._output_padding(
            x, output_size, self.stride, self.padding, self.kernel_size, 2, self.dilation
        )
        y = F.conv_transpose2d(
            summed, weight, None, self.stride, self.padding, out_pad, g, self.dilation
        )  # (N, G, H', W')
    else:
        padding = self.padding
        if self.padding_mode != "zeros":
            summed = F.pad(summed, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        y = F.conv2d(summed, weight, None, self.stride, padding, self.dilation, g)  # (N, G, H', W')
    per_group = self.out_channels // g
    y = y[:, :, None].expand(n, g, per_group, *y.shape[-2:])  # (N, G, C_out/G, H', W')
    # contiguous: a broadcast view would break in-place ops downstream (residual `out += x`)
    return y.reshape(n, self.out_channels, *y.shape[-2:]).contiguous()  # (N, C_out, H', W')


_SUMMED = (nn.Conv2d, nn.ConvTranspose2d)


@torch.no_grad()
def _make_positive_(module: nn.Module) -> None:
    """Constant positive weights normalised by fan-in (so values neither explode nor vanish
    with depth) and zero biases, for the layers :func:`_summed_conv_forward` does not cover."""
    if isinstance(module, nn.modules.conv._ConvNd) and not isinstance(module, _SUMMED):
        module.weight.fill_(1.0 / _fan_in(module, module.in_channels))
    elif isinstance(module, nn.Linear):
        module.weight.fill_(1.0 / module.in_features)
    bias = getattr(module, "bias", None)
    if isinstance(bias, torch.Tensor) and not isinstance(module, _SUMMED):
        bias.zero_()


def _weightless_copy(model: nn.Module) -> nn.Module:
    """Deep copy of ``model`` in which 2-D convolution weights are shape-only (meta) tensors:
    their forward is replaced, and copying them would double a VGG's memory for nothing."""
    memo: dict[int, object] = {}
    for module in model.modules():
        if isinstance(module, _SUMMED):
            for tensor in (module.weight, module.bias):
                if isinstance(tensor, torch.Tensor):
                    stub = torch.empty(tensor.shape, dtype=tensor.dtype, device="meta")
                    is_param = isinstance(tensor, nn.Parameter)
                    memo[id(tensor)] = nn.Parameter(stub, requires_grad=False) if is_param else stub
    return copy.deepcopy(model, memo)


def _linearised(model: nn.Module) -> nn.Module:
    """A copy of ``model`` that is linear with positive weights, in float64 and eval mode,
    so that the support of an input gradient is exactly the structural receptive field."""
    twin = _weightless_copy(model).double().eval()
    for name, module in list(twin.named_modules()):
        new = _replacement(module)
        if new is not None and name:
            parent, _, child = name.rpartition(".")
            setattr(twin.get_submodule(parent), child, new)
    for module in twin.modules():
        if isinstance(module, _SUMMED):
            module.forward = types.MethodType(_summed_conv_forward, module)
        _make_positive_(module)
    twin.requires_grad_(False)
    return twin


def _support_extent(grad: torch.Tensor) -> tuple[int, int] | None:
    """Rows and columns spanned by the nonzero input gradient; None when it is empty or
    reaches the input border (the field may then be clipped).

    Shape:
        grad: (C, H, W)
    """
    support = grad.abs().sum(0) != 0  # (H, W)
    rows = torch.nonzero(support.any(1)).flatten()
    cols = torch.nonzero(support.any(0)).flatten()
    if rows.numel() == 0:
        return None
    h, w = support.shape
    if rows[0] == 0 or cols[0] == 0 or rows[-1] == h - 1 or cols[-1] == w - 1:
        return None
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def _centre_target(out: torch.Tensor) -> torch.Tensor:
    """Sum over channels of the centre output pixel (of everything when not spatial)."""
    out = out[0]
    if out.dim() >= 3:
        out = out[..., out.shape[-2] // 2, out.shape[-1] // 2]
    return out.sum()


def _stage_receptive_fields(
    model: nn.Module, names: list[str], input_shape: tuple[int, ...], device: torch.device
) -> dict[str, tuple[int, int] | None]:
    """Measure each stage's centre-pixel receptive field on the linearised model."""
    twin = _linearised(model)
    outputs: dict[str, torch.Tensor] = {}
    hooks = []
    for name in names:

        def hook(_module, _inputs, output, name=name):
            out = output[0] if isinstance(output, tuple) else output
            if isinstance(out, torch.Tensor) and name not in outputs:
                outputs[name] = out.clone()  # immune to later in-place ops

        hooks.append(twin.get_submodule(name).register_forward_hook(hook))
    x = torch.ones((1, *input_shape[1:]), dtype=torch.float64, device=device, requires_grad=True)
    try:
        with torch.enable_grad():
            twin(x)
            fields = {}
            for name, out in outputs.items():
                (grad,) = torch.autograd.grad(
                    _centre_target(out), x, retain_graph=True, allow_unused=True
                )
                fields[name] = None if grad is None else _support_extent(grad[0])
    finally:
        for h in hooks:
            h.remove()
    return fields


def trace_stages(
    model: nn.Module,
    input_shape: tuple[int, int, int, int],
    *,
    receptive_fields: bool = True,
) -> list[StageInfo]:
    """Run ``model`` once on zeros of ``input_shape`` and record each stage's output shape and
    (optionally) receptive field.

    Stages are the submodules named in ``model.stage_names`` (dotted names), in forward order.
    A stage module that returns a tuple (max-pooling with indices) reports its first element.

    The receptive field is measured, not derived, so it covers any wiring (skips, branches,
    dilation, ceil mode): on a deep copy made linear and cancellation-free (activations,
    normalisation and dropout become identities, max-pooling becomes the mean of the same
    window, weights a positive constant, biases zero; float64), it is the rows × columns
    spanned by the nonzero gradient of the stage's centre output pixel (summed over channels)
    with respect to the input. It is the structural field, the same as
    :func:`receptive_field` gives for a plain stack. It is None when that support touches the
    input border: the field may be clipped there, so trace a larger ``input_shape``. Global
    pooling therefore gives None. Convolution weights become a constant rather than ``|w|`` so
    that zero-initialised layers (FCN's score layers) still count. Bicubic interpolation keeps
    its negative taps; an exact cancellation there is possible in principle, not in practice.

    Behind max-unpooling (SegNet's decoder) the field depends on the data through the argmax
    indices. The number reported is for the indices the linearised copy produces on a constant
    input (ties go to the first element of each window): one possible routing. Any routing's
    field lies within the one of the same network with each unpooling replaced by a
    transposed convolution over the whole pooling window, since unpooling uses one of its taps.

    Args:
        model: a module with a ``stage_names`` attribute.
        input_shape: shape of the traced input; only its C, H, W matter for the fields.
        receptive_fields: measure them (one backward pass per stage; turn off for speed).

    Raises:
        ValueError: when a stage name is not a submodule of ``model``.

    Shape:
        input_shape: (N, C, H, W)
    """
    names = list(getattr(model, "stage_names", ()))
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules:
            raise ValueError(
                message(
                    "each stage name",
                    f"be a submodule of {type(model).__name__}",
                    repr(name),
                    "list dotted names from model.named_modules() in stage_names",
                )
            )
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    shapes = _stage_shapes(model, names, torch.zeros(input_shape, dtype=dtype, device=device))
    fields = (
        _stage_receptive_fields(model, list(shapes), input_shape, device)
        if receptive_fields
        else {}
    )
    infos = []
    for name in names:
        if name in shapes:
            hw = fields.get(name)
            infos.append(StageInfo(name, shapes[name], None if hw is None else max(hw), hw))
    return infos


def _stage_shapes(
    model: nn.Module, names: list[str], x: torch.Tensor
) -> dict[str, tuple[int, ...]]:
    """Output shape of each stage that runs, on one forward pass in eval mode."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name in names:

        def hook(_module, _inputs, output, name=name):
            out = output[0] if isinstance(output, tuple) else output
            if isinstance(out, torch.Tensor):
                shapes.setdefault(name, tuple(out.shape))

        hooks.append(model.get_submodule(name).register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return shapes
